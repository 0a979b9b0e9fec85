"""Stage: the tiny spatial encoder's pair-pose head (relative pose of consecutive frames from a
patch-matching cost volume), trained on the frozen aggregator's tokens.

    spatial-mllm-train pair-pose --config training/configs/pair_pose_tiny.yaml
    # tiny CPU run (a few steps on the shipped default):
    spatial-mllm-train pair-pose --config training/configs/pair_pose_tiny.yaml \
        --set model.init=assets --set pair_pose.max_steps=5 --set pair_pose.max_scenes=2 \
        --set output_dir=runs/pair_pose_smoke

Why a head of its own (ros2_spatial_mllm/model/vggt/heads/pair_pose_head.py): the tiny VGGT's
camera head, trained from random weights, predicts the walks' average turn whatever the frames
show, while its patch tokens do match across frames (docs/frame_signal.md, seventh sprint). The
aggregator stays frozen here, so the head can be added to any tiny checkpoint (the pipeline adds
it to the final model before export) without changing what the language model sees.

Supervision: smooth-L1 on (rotation vector in radians, translation in metres) of camera k+1 in
camera k for consecutive frames of the data engine's training clips, encoded as whole clips
exactly as `predict_geometry` encodes its candidates. The tokens are computed once (the
aggregator is frozen), then the head trains on them. Own loop (training/loop.py) for the same
reason as the geometry stage: no language-model loss here. One process: the head is small (6 min
on 2 CPU cores); under torchrun (the default pipeline's multi-process form) every rank trains the
same batches to the same head and only rank 0 writes checkpoints.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training.loop import LoopConfig, train_loop
from training.trainer_utils import DistEnv, cosine_with_warmup, start_stage


def pair_pose_targets(cam_from_world: torch.Tensor) -> torch.Tensor:
    """cam_from_world [..., S, 3|4, 4] -> [..., S-1, 6]: rotation vector and translation of
    camera k+1 in camera k (cam_k_from_cam_k+1 = cam_k_from_world @ world_from_cam_k+1)."""
    from ros2_spatial_mllm.geometry import invert_extrinsics, matrix_to_rotation_vector, to_homogeneous

    full = to_homogeneous(cam_from_world.double())
    step = full[..., :-1, :, :] @ invert_extrinsics(full[..., 1:, :, :])   # [..., S-1, 4, 4]
    return torch.cat([matrix_to_rotation_vector(step[..., :3, :3]), step[..., :3, 3]], dim=-1).float()


def attach_pair_pose_head(model, seed: int = 0, reinit: bool = True):
    """Give the model's VGGT a freshly initialised (seeded) pair-pose head, or keep the one it has
    when reinit is False (fine-tuning); the flag goes into the Spatial-MLLM config so the
    checkpoint reloads with it. Returns the head."""
    from ros2_spatial_mllm.model.vggt.heads import PairPoseHead

    vggt = model.spatial_encoder.vggt_model
    if reinit or vggt.pair_pose_head is None:
        vggt.config.pair_pose_head = True
        setattr(model.config.spatial_config, "pair_pose_head", True)
        setattr(model.config.spatial_config, "pair_pose_dim", vggt.config.pair_pose_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vggt.pair_pose_head = PairPoseHead(2 * vggt.config.embed_dim, vggt.config.pair_pose_dim)
    return vggt.pair_pose_head


@torch.inference_mode()
def encode_clips(vggt, clips: list[dict], chunk: int = 8) -> tuple[torch.Tensor, tuple[int, int]]:
    """Frozen aggregator's last-layer patch tokens of each clip, the clip encoded as one video:
    clips' images [S, 3, h, w] uint8 -> ([C, S, N, 2C'] float16, patch grid (h/p, w/p))."""
    out = []
    height, width = clips[0]["images"].shape[-2:]
    for i in range(0, len(clips), chunk):
        images = torch.stack([c["images"] for c in clips[i:i + chunk]]).float() / 255.0  # [b, S, 3, h, w]
        layers, start = vggt.aggregator(images, output_layers=[-1])
        out.append(layers[0][:, :, start:].half())                                        # [b, S, N, 2C']
    patch = vggt.config.patch_size
    return torch.cat(out), (height // patch, width // patch)


def run_pair_pose(cfg: dict, env: DistEnv | None = None) -> dict:
    """Run the stage from a config dict (see training/configs/pair_pose_tiny.yaml)."""
    from training.geometry_pretrain import prepare_clip
    from training.model_io import build_model, load_geometry_clips

    env, pcfg, seed, out_dir = start_stage(cfg, "pair_pose", env)
    model, processor = build_model(cfg.get("model", {}))
    for p in model.parameters():
        p.requires_grad_(False)
    head = attach_pair_pose_head(model, seed, reinit=bool(pcfg.get("reinit", True)))
    for p in head.parameters():
        p.requires_grad_(True)
    vggt = model.spatial_encoder.vggt_model.eval()
    data_cfg = dict(cfg.get("data", {}))
    if pcfg.get("max_scenes"):
        data_cfg["max_geometry_scenes"] = int(pcfg["max_scenes"])
    image_hw = tuple(pcfg.get("image_hw", [84, 112]))
    clips = [prepare_clip(c, image_hw) for c in load_geometry_clips(
        data_cfg, split="train", frames=int(pcfg.get("frames", 8)), seed=seed,
        stride=[int(s) for s in pcfg.get("strides", [1, 2])])]
    if not clips:
        raise RuntimeError("pair_pose: no training clips found (check data.* in the config)")
    tokens, grid_hw = encode_clips(vggt, clips)                             # [C, S, N, 2C']
    targets = torch.stack([pair_pose_targets(c["cam_from_world"]) for c in clips])  # [C, S-1, 6]
    lr = float(pcfg.get("lr", 1e-3))
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=float(pcfg.get("weight_decay", 1e-4)))
    max_steps = int(pcfg.get("max_steps", 3000))
    scheduler = cosine_with_warmup(optimizer, int(pcfg.get("warmup_steps", max(1, max_steps // 20))), max_steps)
    batch_size, beta = int(pcfg.get("batch_size", 8)), float(pcfg.get("huber_beta", 0.1))

    def compute_loss(step: int, micro: int):
        # the batch is a function of (seed, step, micro) only, so a resumed run sees the same batches
        rng = np.random.default_rng([seed, step, micro])
        idx = torch.from_numpy(rng.integers(0, len(clips), batch_size))
        pred = head(tokens[idx].float(), grid_hw)                          # [b, S-1, 6]
        loss = F.smooth_l1_loss(pred, targets[idx], beta=beta)
        with torch.no_grad():
            rot_deg = torch.rad2deg((pred[..., :3] - targets[idx][..., :3]).norm(dim=-1)).mean()
            trans_m = (pred[..., 3:] - targets[idx][..., 3:]).norm(dim=-1).mean()
        return loss, {"rotation_error_deg": float(rot_deg), "translation_error_m": float(trans_m)}

    loop_cfg = LoopConfig.from_dict("pair_pose", pcfg, out_dir)
    loop_cfg.resume = cfg.get("resume", loop_cfg.resume)
    loop_cfg.plot_keys = ("loss", "rotation_error_deg", "translation_error_m", "lr")
    result = train_loop(loop_cfg, env, model, optimizer, scheduler, compute_loss, processor=processor)
    return {**result, "clips": len(clips), "grid_hw": list(grid_hw)}
