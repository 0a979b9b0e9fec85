"""Spatial encoder of the Spatial-MLLM: a whole VGGT of which only the aggregator runs for tokens.

Keys: `spatial_encoder.vggt_model.*` (the VGGT-1B state dict under that prefix). The camera and
depth heads are kept (checkpoint layout, `predict_geometry`) but never run for answering.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .vggt.config import VGGTConfig

__all__ = ["SpatialEncoder"]


def _build_vggt(config: VGGTConfig) -> nn.Module:
    from .vggt import VGGT  # engineer A's module; imported late so config code works without it

    return VGGT(config)


class SpatialEncoder(nn.Module):
    """Holds `vggt_model` and returns one aggregator layer.

    forward(frames [B, S, 3, H, W] in [0, 1], H and W multiples of patch_size)
        -> (features [B, S, P, 2C] of layer `layer_idx`, patch_start_idx (5 for VGGT-1B)).
    """

    def __init__(self, vggt_config: VGGTConfig, layer_idx: int = -1) -> None:
        super().__init__()
        self.vggt_config = vggt_config
        self.layer_idx = layer_idx
        self.vggt_model = _build_vggt(vggt_config)

    @property
    def output_dim(self) -> int:
        """Channels of an aggregator layer output (2C)."""
        return 2 * self.vggt_config.embed_dim

    def forward(self, frames: torch.Tensor) -> Tuple[torch.Tensor, int]:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, S, 3, H, W], got {tuple(frames.shape)}")
        layers, patch_start_idx = self.vggt_model.aggregator(frames)
        return layers[self.layer_idx], int(patch_start_idx)

    @torch.inference_mode()
    def predict_geometry(self, frames: torch.Tensor) -> dict:
        """Full VGGT (aggregator + camera + depth heads): frames [B, S, 3, H, W] in [0, 1] ->
        dict(pose_enc [B, S, 9], depth [B, S, H, W, 1], depth_conf [B, S, H, W]), plus
        pair_pose [B, S-1, 6] when the VGGT has a pair-pose head."""
        return self.vggt_model(frames)
