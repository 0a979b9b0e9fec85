"""Losses of the spatial-encoder (VGGT) geometry pre-training, and the ground truth they need.

Camera: the VGGT pose encoding absT_quaR_FoV [B, S, 9] (translation, quaternion XYZW, field of
view) predicted by `camera_head` is compared, with a Huber (or L1) loss, to the encoding of the
ground-truth cameras re-expressed with world = first camera (the convention of
ros2_spatial_mllm/geometry.py). Every refinement iteration is supervised when the head returns
them (`pose_enc_list`), later iterations weighted more (gamma ** (n - 1 - i)).

Depth: VGGT's aleatoric form, per valid pixel
    conf * |d - d_gt| + conf * |grad d - grad d_gt| - alpha * log(conf)
so the network may lower its confidence where it is wrong, at a log cost.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ground_truth_pose_encoding(cam_from_world: torch.Tensor, intrinsics: torch.Tensor,
                               image_hw: tuple[int, int]) -> torch.Tensor:
    """GT cameras [B, S, 3|4, 4] camera-from-world (any world), intrinsics [B, S, 3, 3] ->
    pose encoding [B, S, 9], re-expressed with world = camera 0 by A's geometry.py."""
    from ros2_spatial_mllm.geometry import extrinsics_intrinsics_to_pose_encoding, relative_to_first_camera

    rel = torch.stack([relative_to_first_camera(e.double())[..., :3, :4] for e in cam_from_world]).float()
    return extrinsics_intrinsics_to_pose_encoding(rel, intrinsics.float(), image_hw)


def camera_loss(pred: torch.Tensor | list[torch.Tensor], gt: torch.Tensor, kind: str = "huber",
                gamma: float = 0.6, delta: float = 1.0) -> dict[str, torch.Tensor]:
    """pred [B, S, 9] (or a list of refinement iterations), gt [B, S, 9] ->
    {'loss', 'loss_T', 'loss_R', 'loss_fov'}. Frame 0 is included (its target is identity)."""
    preds = pred if isinstance(pred, (list, tuple)) else [pred]
    n = len(preds)
    out = {"loss_T": 0.0, "loss_R": 0.0, "loss_fov": 0.0}
    for i, p in enumerate(preds):
        w = gamma ** (n - 1 - i)
        for name, sl in (("loss_T", slice(0, 3)), ("loss_R", slice(3, 7)), ("loss_fov", slice(7, 9))):
            if kind == "huber":
                term = F.huber_loss(p[..., sl].float(), gt[..., sl].float(), delta=delta)
            else:
                term = (p[..., sl].float() - gt[..., sl].float()).abs().mean()
            out[name] = out[name] + w * term
    out = {k: v / sum(gamma ** (n - 1 - i) for i in range(n)) for k, v in out.items()}
    out["loss"] = out["loss_T"] + out["loss_R"] + out["loss_fov"]
    return out


def depth_loss(pred_depth: torch.Tensor, conf: torch.Tensor, gt_depth: torch.Tensor,
               valid: torch.Tensor | None = None, alpha: float = 0.2, grad_weight: float = 1.0,
               relative: bool = False) -> dict[str, torch.Tensor]:
    """Confidence-weighted (aleatoric) depth loss.

    pred_depth [B, S, H, W] or [B, S, H, W, 1]; conf [B, S, H, W] (> 0); gt_depth [B, S, H, W];
    valid [B, S, H, W] bool (default gt > 0). relative: residuals divided by the true depth, so the
    confidence ranks pixels by relative error (far walls are not ranked below near objects for
    the larger absolute error every depth estimate has at range; the space-aware sampler keeps
    only the upper half of the confidences). Returns {'loss', 'depth_l1', 'depth_grad', 'conf_mean'}."""
    if pred_depth.dim() == 5:
        pred_depth = pred_depth[..., 0]
    pred_depth, conf, gt_depth = pred_depth.float(), conf.float(), gt_depth.float()
    if valid is None:
        valid = gt_depth > 0
    valid = valid.float()
    n_valid = valid.sum().clamp_min(1.0)
    err = (pred_depth - gt_depth).abs()
    scale = gt_depth.clamp_min(0.1) if relative else None
    reg = (conf * (err if scale is None else err / scale) * valid).sum() / n_valid
    # gradients of the residual along W and H, only where both neighbours are valid
    res = pred_depth - gt_depth
    if scale is not None:
        res = res / scale
    gx_valid = valid[..., :, 1:] * valid[..., :, :-1]
    gy_valid = valid[..., 1:, :] * valid[..., :-1, :]
    gx = (res[..., :, 1:] - res[..., :, :-1]).abs()
    gy = (res[..., 1:, :] - res[..., :-1, :]).abs()
    cx = 0.5 * (conf[..., :, 1:] + conf[..., :, :-1])
    cy = 0.5 * (conf[..., 1:, :] + conf[..., :-1, :])
    grad = ((cx * gx * gx_valid).sum() + (cy * gy * gy_valid).sum()) / (gx_valid.sum() + gy_valid.sum()).clamp_min(1.0)
    log_conf = (torch.log(conf.clamp_min(1e-6)) * valid).sum() / n_valid
    loss = reg + grad_weight * grad - alpha * log_conf
    return {"loss": loss, "depth_l1": (err * valid).sum().detach() / n_valid, "depth_grad": grad.detach(),
            "conf_mean": ((conf * valid).sum() / n_valid).detach()}
