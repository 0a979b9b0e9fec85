"""VGGT depth head: DPT (dense prediction transformer) over four aggregator layers.

For each of the 4 chosen layers (4/11/17/23 in VGGT-1B): drop the special tokens, LayerNorm,
reshape to the patch grid, 1x1 conv to out_channels[i], add a UV sin/cos embedding (x0.1),
resample (x4 transposed conv, x2 transposed conv, identity, /2 strided conv). Then 3x3 convs
to `features`, fuse coarse-to-fine with FeatureFusionBlocks, output_conv1, bilinear resize to
the input size, UV embedding again, output_conv2 -> 2 channels: depth = exp(c0),
confidence = 1 + exp(c1) ("exp" / "expp1").

Keys: norm, projects.{0..3}, resize_layers.{0,1,3}, scratch.layer{1..4}_rn,
scratch.refinenet{1..4}.*, scratch.output_conv1, scratch.output_conv2.{0,2}.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .dpt_blocks import FeatureFusionBlock, uv_position_embedding


def activate_depth(raw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """raw [N, 2, H, W] -> (depth [N, H, W, 1] = exp, confidence [N, H, W] = 1 + exp)."""
    channels_last = raw.permute(0, 2, 3, 1)
    return torch.exp(channels_last[..., :-1]), 1 + torch.exp(channels_last[..., -1])


class DPTHead(nn.Module):
    """(aggregated tokens, images [B, S, 3, H, W], patch_start_idx) -> (depth [B,S,H,W,1], conf [B,S,H,W])."""

    def __init__(
        self,
        dim_in: int = 2048,
        patch_size: int = 14,
        output_dim: int = 2,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        layer_indices: Sequence[int] = (4, 11, 17, 23),
        head_features_2: int = 32,
        frames_chunk_size: Optional[int] = 8,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.layer_indices = tuple(layer_indices)
        self.frames_chunk_size = frames_chunk_size
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, oc, kernel_size=1) for oc in out_channels])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, kernel_size=3, padding=1, bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, head_features_2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(head_features_2, output_dim, kernel_size=1),
        )

    @staticmethod
    def _add_uv_embedding(x: torch.Tensor, image_w: int, image_h: int) -> torch.Tensor:
        """x [N, F, h, w] + 0.1 * UV sin/cos embedding (aspect of the input image)."""
        emb = uv_position_embedding(x.shape[-2], x.shape[-1], x.shape[1], image_w / image_h, x.device)
        return x + 0.1 * emb.to(x.dtype).unsqueeze(0)

    def _fuse(self, features: List[torch.Tensor]) -> torch.Tensor:
        """4 resampled maps (fine to coarse) -> fused map [N, F/2, 4h... ] after output_conv1."""
        rn = [getattr(self.scratch, f"layer{i}_rn")(f) for i, f in enumerate(features, start=1)]
        out = self.scratch.refinenet4(rn[3], size=rn[2].shape[2:])
        out = self.scratch.refinenet3(out, rn[2], size=rn[1].shape[2:])
        out = self.scratch.refinenet2(out, rn[1], size=rn[0].shape[2:])
        out = self.scratch.refinenet1(out, rn[0])
        return self.scratch.output_conv1(out)

    def _forward_frames(
        self, layers: List[torch.Tensor], image_h: int, image_w: int, patch_start_idx: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """layers: 4 tensors [B, s, P, D] for a chunk of s frames -> (depth [B,s,H,W,1], conf [B,s,H,W])."""
        batch, frames = layers[0].shape[:2]
        grid_h, grid_w = image_h // self.patch_size, image_w // self.patch_size
        resampled = []
        for i, tokens in enumerate(layers):
            x = self.norm(tokens[:, :, patch_start_idx:].reshape(batch * frames, grid_h * grid_w, -1))
            x = x.permute(0, 2, 1).reshape(batch * frames, -1, grid_h, grid_w)  # [N, D, h, w]
            x = self._add_uv_embedding(self.projects[i](x), image_w, image_h)
            resampled.append(self.resize_layers[i](x))
        out = self._fuse(resampled)
        out = F.interpolate(out, size=(grid_h * self.patch_size, grid_w * self.patch_size), mode="bilinear", align_corners=True)
        out = self.scratch.output_conv2(self._add_uv_embedding(out, image_w, image_h))
        depth, conf = activate_depth(out)
        return depth.reshape(batch, frames, *depth.shape[1:]), conf.reshape(batch, frames, *conf.shape[1:])

    def forward(
        self, layers: List[torch.Tensor], images: torch.Tensor, patch_start_idx: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """layers: the 4 aggregator outputs of `layer_indices`, each [B, S, P, D];
        images [B, S, 3, H, W] (only its shape is used) -> depth [B, S, H, W, 1], conf [B, S, H, W].
        Frames are processed in chunks of `frames_chunk_size` (None: all at once)."""
        if len(layers) != 4:
            raise ValueError(f"DPTHead needs 4 layer outputs, got {len(layers)}")
        frames = images.shape[1]
        image_h, image_w = images.shape[-2], images.shape[-1]
        chunk = self.frames_chunk_size
        if chunk is None or chunk >= frames:
            return self._forward_frames(layers, image_h, image_w, patch_start_idx)
        depths, confs = [], []
        for start in range(0, frames, chunk):
            part = [t[:, start : start + chunk] for t in layers]
            depth, conf = self._forward_frames(part, image_h, image_w, patch_start_idx)
            depths.append(depth)
            confs.append(conf)
        return torch.cat(depths, dim=1), torch.cat(confs, dim=1)
