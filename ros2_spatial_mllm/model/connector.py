"""Connector of the Spatial-MLLM ("mlp_add"): VGGT tokens -> LLM width, added to video tokens.

Token layout (must match Qwen2.5-VL's video tokens one to one):
    Qwen patchifies a video of S frames (S even) and grid (gh, gw) patches of 14 px into merged
    tokens ordered (t, h_block, w_block) with t = S / 2 temporal patches and blocks of 2x2
    patches. VGGT with patch 14 on the same frames gives per frame the same gh x gw patch grid
    (after its 5 camera/register tokens). `pack_spatial_tokens` groups, for every merged token,
    its 2 frames x 2x2 patches of 2C channels into one vector of 2C*2*4 (16384 for VGGT-1B),
    laid out [merge_row, merge_col, channel, frame] (frame fastest), the reference layout.
Connector: RMSNorm(merged, eps 1e-6) -> Linear(merged, merged) -> GELU -> Linear(merged, hidden)
with keys `ln_q.weight`, `mlp.0.{weight,bias}`, `mlp.2.{weight,bias}`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRMSNorm

__all__ = ["SpatialConnector", "pack_spatial_tokens", "pad_frames_to_multiple"]


def pad_frames_to_multiple(frames: torch.Tensor, multiple: int, dim: int = 1) -> torch.Tensor:
    """Repeat the last frame along `dim` until its size is a multiple of `multiple`.

    frames: [B, S, ...] (dim=1) or [S, ...] (dim=0) -> same with S rounded up.
    """
    count = frames.shape[dim]
    missing = (-count) % multiple
    if missing == 0:
        return frames
    last = frames.narrow(dim, count - 1, 1)
    repeat = [1] * frames.dim()
    repeat[dim] = missing
    return torch.cat([frames, last.repeat(*repeat)], dim=dim)


def pack_spatial_tokens(
    patch_features: torch.Tensor, grid_h: int, grid_w: int, temporal_patch_size: int = 2, merge_size: int = 2
) -> torch.Tensor:
    """Reorder VGGT patch features into Qwen's merged video-token order.

    patch_features: [B, S, gh*gw, D] (special tokens already dropped; S padded to a multiple
        of temporal_patch_size, see `pad_frames_to_multiple`).
    returns: [B * (S/tp) * (gh/m) * (gw/m), m*m*D*tp], row order (b, t, h_block, w_block),
        column order (merge_row, merge_col, channel, frame_in_temporal_patch).
    """
    batch, frames, patches, dim = patch_features.shape
    if patches != grid_h * grid_w:
        raise ValueError(f"spatial features have {patches} patches, expected {grid_h}x{grid_w}")
    if frames % temporal_patch_size:
        raise ValueError(f"{frames} frames is not a multiple of temporal patch {temporal_patch_size}")
    if grid_h % merge_size or grid_w % merge_size:
        raise ValueError(f"patch grid {grid_h}x{grid_w} is not a multiple of merge size {merge_size}")
    t, m = frames // temporal_patch_size, merge_size
    x = patch_features.reshape(batch, t, temporal_patch_size, grid_h // m, m, grid_w // m, m, dim)
    # [B, t, tp, hb, mh, wb, mw, D] -> [B, t, hb, wb, mh, mw, D, tp]
    x = x.permute(0, 1, 3, 5, 4, 6, 7, 2)
    return x.reshape(-1, m * m * dim * temporal_patch_size)


class SpatialConnector(nn.Module):
    """MLP connector "mlp_add": fused = video_embeds + mlp(ln_q(pack(spatial)))."""

    def __init__(
        self,
        spatial_dim: int,
        llm_hidden_size: int,
        temporal_patch_size: int = 2,
        spatial_merge_size: int = 2,
        eps: float = 1e-6,
    ) -> None:
        """spatial_dim: channels of a VGGT layer output (2C, 2048 for VGGT-1B)."""
        super().__init__()
        self.temporal_patch_size = temporal_patch_size
        self.spatial_merge_size = spatial_merge_size
        self.merged_dim = spatial_dim * temporal_patch_size * spatial_merge_size**2
        self.ln_q = Qwen2_5_VLRMSNorm(self.merged_dim, eps=eps)
        self.mlp = nn.Sequential(
            nn.Linear(self.merged_dim, self.merged_dim),
            nn.GELU(),
            nn.Linear(self.merged_dim, llm_hidden_size),
        )

    def spatial_embeds(
        self, spatial_features: torch.Tensor, patch_start_idx: int, grid_thw: torch.Tensor
    ) -> torch.Tensor:
        """Project spatial features to the LLM width, in video-token order.

        spatial_features: [B, S, P, 2C] one aggregator layer (P = patch_start_idx + gh*gw), one
            video per batch row; grid_thw: [B, 3] Qwen's (t, gh, gw) per video (all equal).
        returns: [B * t * gh/2 * gw/2, hidden].
        """
        patches = spatial_features[:, :, patch_start_idx:]
        patches = pad_frames_to_multiple(patches, self.temporal_patch_size, dim=1)
        grid = grid_thw.reshape(-1, 3)
        if grid.shape[0] != patches.shape[0] or bool((grid != grid[:1]).any()):
            raise ValueError("one video per batch row with a common grid_thw is required")
        t, gh, gw = (int(v) for v in grid[0].tolist())
        if t * self.temporal_patch_size != patches.shape[1]:
            raise ValueError(f"grid_thw t={t} does not match {patches.shape[1]} spatial frames")
        packed = pack_spatial_tokens(patches, gh, gw, self.temporal_patch_size, self.spatial_merge_size)
        packed = packed.to(self.mlp[0].weight.dtype)
        return self.mlp(self.ln_q(packed))

    def forward(
        self,
        video_embeds: torch.Tensor,
        spatial_features: torch.Tensor,
        patch_start_idx: int,
        grid_thw: torch.Tensor,
    ) -> torch.Tensor:
        """video_embeds: [N, hidden] Qwen's merged video tokens -> fused [N, hidden]."""
        spatial = self.spatial_embeds(spatial_features, patch_start_idx, grid_thw)
        if spatial.shape != video_embeds.shape:
            raise ValueError(f"spatial tokens {tuple(spatial.shape)} != video tokens {tuple(video_embeds.shape)}")
        return video_embeds + spatial.to(video_embeds.dtype)
