"""VGGT model: aggregator + camera head + depth head, submodule names as facebook/VGGT-1B.

The point and track heads of the published model are not implemented (their checkpoint
keys are reported as ignored by `load_vggt_state_dict`).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from .aggregator import Aggregator
from .config import VGGTConfig
from .heads.camera_head import CameraHead
from .heads.dpt_head import DPTHead
from .heads.pair_pose_head import PairPoseHead


class VGGT(nn.Module):
    """images [B, S, 3, H, W] (or [S, 3, H, W]) in [0, 1] -> dict of predictions.

    Submodules: `aggregator`, `camera_head` (None if disabled), `depth_head` (None if disabled),
    `pair_pose_head` (None unless config.pair_pose_head; not in VGGT-1B).
    """

    def __init__(self, config: Optional[VGGTConfig] = None) -> None:
        super().__init__()
        self.config = config or VGGTConfig.official()
        cfg = self.config
        dim = 2 * cfg.embed_dim
        self.aggregator = Aggregator(cfg)
        self.camera_head = (
            CameraHead(
                dim_in=dim,
                trunk_depth=cfg.camera_trunk_depth,
                num_heads=cfg.camera_num_heads,
                mlp_ratio=cfg.mlp_ratio,
                init_values=cfg.init_values,
                num_iterations=cfg.camera_num_iterations,
            )
            if cfg.enable_camera
            else None
        )
        self.depth_head = (
            DPTHead(
                dim_in=dim,
                patch_size=cfg.patch_size,
                output_dim=2,
                features=cfg.dpt_features,
                out_channels=cfg.dpt_out_channels,
                layer_indices=cfg.depth_head_layers,
                head_features_2=cfg.dpt_head_features_2,
                frames_chunk_size=cfg.dpt_frames_chunk_size,
            )
            if cfg.enable_depth
            else None
        )
        self.pair_pose_head = PairPoseHead(dim, cfg.pair_pose_dim) if cfg.pair_pose_head else None

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """images [B, S, 3, H, W] or [S, 3, H, W], values in [0, 1], H/W multiples of patch_size.

        Returns a dict with (heads permitting):
            pose_enc [B, S, 9]  absT_quaR_FoV of the last refinement iteration (float32)
            pose_enc_list       list of [B, S, 9], one per iteration
            depth [B, S, H, W, 1] (> 0), depth_conf [B, S, H, W] (>= 1)
            pair_pose [B, S-1, 6]  with pair_pose_head: rotation vector + translation of camera
                                k+1 in camera k (chain with geometry.pair_poses_to_extrinsics)
        Decode poses with ros2_spatial_mllm.geometry.pose_encoding_to_extrinsics_intrinsics.
        Heads run with autocast disabled, in their own parameter dtype (float32 unless the
        model was cast), as in the reference; under autocast only the aggregator is lowered.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        depth = self.config.depth
        needed = set()
        if self.camera_head is not None or self.pair_pose_head is not None:
            needed.add(depth - 1)
        if self.depth_head is not None:
            needed.update(self.depth_head.layer_indices)
        predictions: Dict[str, torch.Tensor] = {}
        if not needed:
            return predictions
        wanted = sorted(needed)
        outputs, patch_start_idx = self.aggregator(images, output_layers=wanted)
        by_layer = dict(zip(wanted, outputs))
        with torch.autocast(device_type=images.device.type, enabled=False):
            if self.camera_head is not None:
                head_dtype = self.camera_head.embed_pose.weight.dtype
                pose_list = self.camera_head([by_layer[depth - 1].to(head_dtype)])
                predictions["pose_enc"] = pose_list[-1]
                predictions["pose_enc_list"] = pose_list
            if self.depth_head is not None:
                head_dtype = self.depth_head.norm.weight.dtype
                layers = [by_layer[i].to(head_dtype) for i in self.depth_head.layer_indices]
                depth_map, depth_conf = self.depth_head(layers, images, patch_start_idx)
                predictions["depth"] = depth_map
                predictions["depth_conf"] = depth_conf
            if self.pair_pose_head is not None:
                head_dtype = self.pair_pose_head.proj.weight.dtype
                grid_hw = (images.shape[-2] // self.config.patch_size, images.shape[-1] // self.config.patch_size)
                patches = by_layer[depth - 1][:, :, patch_start_idx:].to(head_dtype)  # [B, S, N, 2C]
                predictions["pair_pose"] = self.pair_pose_head(patches, grid_hw)
        return predictions
