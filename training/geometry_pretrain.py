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

from pathlib import Path

import numpy as np
import torch

from training.geometry_losses import camera_loss, depth_loss, ground_truth_pose_encoding
from training.loop import LoopConfig, train_loop
from training.trainer_utils import (DistEnv, build_param_groups, cosine_with_warmup, init_distributed, set_seed,
                                    wrap_for_strategy)


def prepare_clip(clip: dict, image_hw: tuple[int, int]) -> dict:
    """Resize one clip to the encoder's input size and convert it to tensors.

    clip: images [S, H, W, 3] uint8, depth [S, H, W] float (metres, 0 = invalid),
          cam_from_world [S, 3|4, 4] (OpenCV), intrinsics [S, 3, 3] (pixels of H x W).
    returns: images [S, 3, h, w] in [0, 1], depth [S, h, w], cam_from_world [S, 3, 4],
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
    return {"images": torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0,
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


def geometry_step_loss(vggt: torch.nn.Module, batch: dict, image_hw: tuple[int, int], cfg: dict) -> tuple[torch.Tensor, dict]:
    """Forward VGGT on batch['images'] [B, S, 3, H, W]; returns (loss, metrics)."""
    out = vggt(batch["images"])
    gt_enc = ground_truth_pose_encoding(batch["cam_from_world"], batch["intrinsics"], image_hw)
    pred_enc = out.get("pose_enc_list") or out["pose_enc"]
    cam = camera_loss(pred_enc, gt_enc, kind=cfg.get("camera_loss", "huber"), gamma=cfg.get("camera_gamma", 0.6))
    dep = depth_loss(out["depth"], out["depth_conf"], batch["depth"], alpha=cfg.get("depth_alpha", 0.2),
                     grad_weight=cfg.get("depth_grad_weight", 1.0))
    loss = cfg.get("camera_weight", 1.0) * cam["loss"] + cfg.get("depth_weight", 1.0) * dep["loss"]
    cam = {k: v if k == "loss" else v.detach() for k, v in cam.items()}
    metrics = {"loss_camera": float(cam["loss"].detach()), "loss_T": float(cam["loss_T"]), "loss_R": float(cam["loss_R"]),
               "loss_fov": float(cam["loss_fov"]), "loss_depth": float(dep["loss"].detach()), "depth_l1": float(dep["depth_l1"]),
               "conf_mean": float(dep["conf_mean"])}
    return loss, metrics


def run_geometry(cfg: dict, env: DistEnv | None = None) -> dict:
    """Run the stage from a config dict (see training/configs/geometry_tiny.yaml)."""
    from training.model_io import build_model, load_geometry_clips

    env = env or init_distributed(cfg.get("device", "auto"))
    gcfg = cfg.get("geometry", {})
    if cfg.get("model", {}).get("preset", "tiny") == "official" and not gcfg.get("force", False):
        print("geometry: skipped for the official preset (VGGT-1B is loaded from its weights and frozen)")
        return {"skipped": True}
    seed = int(cfg.get("seed", 0))
    set_seed(seed)
    out_dir = Path(cfg.get("output_dir", "runs/geometry"))
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
    groups = build_param_groups(vggt, {}, float(gcfg.get("lr", 3e-4)), float(gcfg.get("weight_decay", 0.01)),
                                patterns={"vggt": r".*"})
    optimizer = torch.optim.AdamW(groups, lr=float(gcfg.get("lr", 3e-4)), betas=(0.9, 0.95))
    max_steps = int(gcfg.get("max_steps", 100))
    scheduler = cosine_with_warmup(optimizer, int(gcfg.get("warmup_steps", max(1, max_steps // 20))), max_steps)
    wrapped = wrap_for_strategy(vggt, env, cfg.get("strategy", "ddp"))
    bs = int(gcfg.get("batch_size", 1))

    def compute_loss(step: int, micro: int):
        batch = geometry_batch(clips, seed, step, micro, env.rank, env.world_size, bs)
        batch = {k: v.to(env.device) for k, v in batch.items()}
        return geometry_step_loss(wrapped, batch, image_hw, gcfg)

    loop_cfg = LoopConfig.from_dict("geometry", gcfg, out_dir)
    loop_cfg.resume = cfg.get("resume", loop_cfg.resume)
    loop_cfg.plot_keys = ("loss", "loss_camera", "loss_depth", "depth_l1", "loss_T", "lr")
    result = train_loop(loop_cfg, env, model, optimizer, scheduler, compute_loss, processor=processor,
                        ddp_module=wrapped if wrapped is not vggt else None)
    return {**result, "skipped": False}
