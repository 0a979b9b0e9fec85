"""Stage 0: geometry pre-training of the tiny preset's spatial encoder (VGGT: aggregator +
camera head + depth head) on the data engine's synthetic clips (RGB, depth, camera poses).

    spatial-mllm-train geometry --config training/configs/geometry_tiny.yaml
    # tiny CPU smoke run (a few steps):
    spatial-mllm-train geometry --config training/configs/geometry_tiny.yaml \
        --set geometry.max_steps=3 --set output_dir=runs/geom_smoke

Supervision (training/geometry_losses.py): pose encoding (absT_quaR_FoV) Huber loss against the
ground-truth cameras converted with ros2_spatial_mllm/geometry.py (world = first camera), and
VGGT's confidence-weighted depth loss. Only `spatial_encoder.vggt_model.*` is trained; the whole
Spatial-MLLM checkpoint (HF layout) is saved so the next stage (SFT) starts from it.
For the official preset the stage is skipped: VGGT-1B is loaded from its published weights and
stays frozen.

Own loop, not transformers.Trainer: the inputs are clips with per-pixel depth and poses and the
loss is not a language-model loss; Trainer would only add indirection here.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training.geometry_losses import camera_loss, depth_loss, ground_truth_pose_encoding
from training.loop import LoopConfig, train_loop
from training.trainer_utils import (DistEnv, build_param_groups, cosine_with_warmup, start_stage, unwrap,
                                    wrap_for_strategy)


def prepare_clip(clip: dict, image_hw: tuple[int, int]) -> dict:
    """Resize one clip to the encoder's input size and convert it to tensors.

    clip: images [S, H, W, 3] uint8, depth [S, H, W] float (metres, 0 = invalid),
          cam_from_world [S, 3|4, 4] (OpenCV), intrinsics [S, 3, 3] (pixels of H x W).
    returns: images [S, 3, h, w] uint8, depth [S, h, w], cam_from_world [S, 3, 4],
             intrinsics [S, 3, 3] rescaled to (h, w)."""
    import cv2

    h, w = image_hw
    images = np.asarray(clip["images"])
    src_h, src_w = images.shape[1:3]
    rgb = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    depth = np.stack([cv2.resize(np.asarray(d, np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
                      for d in clip["depth"]])
    k = np.array(clip["intrinsics"], np.float64).copy()
    k[:, 0, :] *= w / src_w
    k[:, 1, :] *= h / src_h
    return {"images": torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous(),   # uint8: 4x less memory per clip
            "depth": torch.from_numpy(depth).float(),
            "cam_from_world": torch.from_numpy(np.asarray(clip["cam_from_world"], np.float64)[:, :3, :4].copy()).float(),
            "intrinsics": torch.from_numpy(k).float()}


def geometry_batch(clips: list[dict], seed: int, step: int, micro: int, rank: int, world: int,
                   batch_size: int) -> dict:
    """Deterministic batch for (seed, step, micro, rank): clips [B] stacked -> [B, S, ...]."""
    order = np.random.default_rng([seed, step // max(1, len(clips) // max(1, batch_size * world))]).permutation(len(clips))
    base = (step * world + rank) * batch_size + micro * batch_size * world
    idx = [int(order[(base + j) % len(clips)]) for j in range(batch_size)]
    return {k: torch.stack([clips[i][k] for i in idx]) for k in clips[0]}


def patch_point_targets(batch: dict, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean 3-D point of each patch, in the first camera's frame (metres), from GT depth + poses.

    batch: depth [B, S, H, W], cam_from_world [B, S, 3, 4], intrinsics [B, S, 3, 3] ->
    (points [B, S, H/p * W/p, 3], valid [B, S, H/p * W/p] bool: the patch has depth)."""
    from ros2_spatial_mllm.geometry import depth_to_world_points, relative_to_first_camera

    depth = batch["depth"].float()
    b, s, h, w = depth.shape
    pts = torch.stack([depth_to_world_points(depth[i], relative_to_first_camera(batch["cam_from_world"][i].double()).float(),
                                             batch["intrinsics"][i].float()) for i in range(b)])     # [B, S, H, W, 3]
    valid = (depth > 0).float()
    cells = lambda x: x.reshape(b, s, h // patch, patch, w // patch, patch, -1).sum((3, 5))  # noqa: E731
    n = cells(valid[..., None])                                                             # [B, S, gh, gw, 1]
    mean = cells(pts * valid[..., None]) / n.clamp(min=1)
    return mean.reshape(b, s, -1, 3), (n[..., 0] > 0).reshape(b, s, -1)


class PatchPointProbe(torch.nn.Module):
    """Training-only linear read-out of the aggregator's last layer (the features the connector
    fuses): each patch token -> its mean 3-D point in the first camera's frame. Supervising it
    puts metric, first-camera positions linearly into those features, which the spatial
    questions need and which the camera and depth heads alone leave implicit (the reference
    VGGT's point head plays this part on its DPT branch)."""

    def __init__(self, vggt: torch.nn.Module):
        super().__init__()
        self.linear = torch.nn.Linear(2 * vggt.config.embed_dim, 3)
        self.captured: torch.Tensor | None = None
        vggt.aggregator.register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        outputs, start = output
        self.captured = outputs[-1][:, :, start:]                                 # [B, S, h*w, 2C]

    def loss(self, batch: dict, patch: int) -> torch.Tensor:
        target, valid = patch_point_targets(batch, patch)
        pred = self.linear(self.captured.float())
        err = F.smooth_l1_loss(pred, target, reduction="none", beta=0.1).sum(-1)
        return (err * valid).sum() / valid.sum().clamp(min=1)


def geometry_step_loss(vggt: torch.nn.Module, batch: dict, image_hw: tuple[int, int], cfg: dict,
                       probe: PatchPointProbe | None = None) -> tuple[torch.Tensor, dict]:
    """Forward VGGT on batch['images'] [B, S, 3, H, W] (float in [0, 1] or uint8); returns (loss, metrics).
    With a PatchPointProbe hooked on this VGGT, its loss is added (weight `point_weight`)."""
    if batch["images"].dtype == torch.uint8:
        batch = {**batch, "images": batch["images"].float() / 255.0}
    out = vggt(batch["images"])
    gt_enc = ground_truth_pose_encoding(batch["cam_from_world"], batch["intrinsics"], image_hw)
    pred_enc = out.get("pose_enc_list") or out["pose_enc"]
    cam = camera_loss(pred_enc, gt_enc, kind=cfg.get("camera_loss", "huber"), gamma=cfg.get("camera_gamma", 0.6))
    dep = depth_loss(out["depth"], out["depth_conf"], batch["depth"], alpha=cfg.get("depth_alpha", 0.2),
                     grad_weight=cfg.get("depth_grad_weight", 1.0), relative=bool(cfg.get("depth_relative", False)))
    loss = cfg.get("camera_weight", 1.0) * cam["loss"] + cfg.get("depth_weight", 1.0) * dep["loss"]
    extra = {}
    if probe is not None:
        point = probe.loss(batch, unwrap(vggt).config.patch_size)
        loss = loss + float(cfg.get("point_weight", 1.0)) * point
        extra["loss_point"] = float(point.detach())
    cam = {k: v if k == "loss" else v.detach() for k, v in cam.items()}
    metrics = {**extra, "loss_camera": float(cam["loss"].detach()), "loss_T": float(cam["loss_T"]), "loss_R": float(cam["loss_R"]),
               "loss_fov": float(cam["loss_fov"]), "loss_depth": float(dep["loss"].detach()), "depth_l1": float(dep["depth_l1"]),
               "conf_mean": float(dep["conf_mean"])}
    return loss, metrics


CAMERA_PARAMS = r"^(aggregator\.(camera_token|register_token)|camera_head\.)"


def geometry_param_groups(vggt: torch.nn.Module, gcfg: dict) -> list[dict]:
    """AdamW groups of the VGGT: `lr` for all, or with `camera_lr` set, that rate for the camera
    and register tokens and the camera head (the camera token barely takes the frames in at the
    shared rate; docs/frame_signal.md, sixth sprint). 1-D parameters get no weight decay."""
    patterns, lrs = {"vggt": r".*"}, {}
    if gcfg.get("camera_lr") is not None:
        patterns, lrs = {"camera": CAMERA_PARAMS, "vggt": r".*"}, {"camera": float(gcfg["camera_lr"])}
    return build_param_groups(vggt, lrs, float(gcfg.get("lr", 3e-4)), float(gcfg.get("weight_decay", 0.01)),
                              patterns=patterns)


def run_geometry(cfg: dict, env: DistEnv | None = None) -> dict:
    """Run the stage from a config dict (see training/configs/geometry_tiny.yaml)."""
    from training.model_io import build_model, load_geometry_clips

    env, gcfg, seed, out_dir = start_stage(cfg, "geometry", env)
    if cfg.get("model", {}).get("preset", "tiny") == "official" and not gcfg.get("force", False):
        print("geometry: skipped for the official preset (VGGT-1B is loaded from its weights and frozen)")
        return {"skipped": True}
    model, processor = build_model(cfg.get("model", {}))
    model.to(env.device)
    vggt = model.spatial_encoder.vggt_model
    for p in model.parameters():
        p.requires_grad_(False)
    for p in vggt.parameters():
        p.requires_grad_(True)
    image_hw = tuple(gcfg.get("image_hw", [112, 112]))
    clips = [prepare_clip(c, image_hw) for c in load_geometry_clips(cfg.get("data", {}), split="train",
                                                                      frames=int(gcfg.get("frames", 4)), seed=seed)]
    if not clips:
        raise RuntimeError("geometry: no training clips found (check data.* in the config)")
    groups = geometry_param_groups(vggt, gcfg)
    probe = None
    if float(gcfg.get("point_weight", 0.0)) > 0:
        probe = PatchPointProbe(vggt).to(env.device)
        groups.append({"params": list(probe.parameters()), "lr": float(gcfg.get("lr", 3e-4)), "weight_decay": 0.0,
                       "name": "point_probe"})
    optimizer = torch.optim.AdamW(groups, lr=float(gcfg.get("lr", 3e-4)), betas=(0.9, 0.95))
    max_steps = int(gcfg.get("max_steps", 100))
    scheduler = cosine_with_warmup(optimizer, int(gcfg.get("warmup_steps", max(1, max_steps // 20))), max_steps)
    wrapped = wrap_for_strategy(vggt, env, cfg.get("strategy", "ddp"))
    bs = int(gcfg.get("batch_size", 1))

    def compute_loss(step: int, micro: int):
        batch = geometry_batch(clips, seed, step, micro, env.rank, env.world_size, bs)
        batch = {k: v.to(env.device) for k, v in batch.items()}
        return geometry_step_loss(wrapped, batch, image_hw, gcfg, probe)

    loop_cfg = LoopConfig.from_dict("geometry", gcfg, out_dir)
    loop_cfg.resume = cfg.get("resume", loop_cfg.resume)
    loop_cfg.plot_keys = ("loss", "loss_camera", "loss_depth", "depth_l1", "loss_T", "loss_point", "lr")
    result = train_loop(loop_cfg, env, model, optimizer, scheduler, compute_loss, processor=processor,
                        ddp_module=wrapped if wrapped is not vggt else None,
                        training_modules={"point_probe": probe} if probe is not None else None)
    return {**result, "skipped": False}
