"""2D rotary position embedding (RoPE) over a patch grid, export-friendly.

Convention (as VGGT): the head dim is split in two halves; the first half is rotated by the
token's row (y) position, the second by its column (x) position. Inside each half, the
rotation pairs channel i with channel i + half/2 ("rotate half"), with inverse frequencies
`base ** (-2k / half)`. Patch positions are (row + 1, col + 1); special tokens (camera,
registers) sit at (0, 0) so their rotation is the identity.

Everything is computed from tensor shapes with arange/broadcasting and from the position
tensor itself (cos/sin evaluated directly, no lookup table sized by `positions.max()`), so
torch.onnx.export traces it without Python ints taken from data.

cos/sin depend only on the positions, so the aggregator evaluates them once per forward
(`RotaryPositionEmbedding2D.cos_sin`, or `grid_cos_sin` for the patch grid) and every attention
block only applies them (`apply_rope`); `rope(tokens, positions)` does both in one call.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def patch_grid_positions(batch: int, grid_h: int, grid_w: int, device: torch.device | None = None) -> torch.Tensor:
    """Row-major (y, x) positions of a grid_h x grid_w patch grid -> [batch, grid_h*grid_w, 2] int64.

    Equivalent to cartesian_prod(arange(h), arange(w)) without using it (ONNX-friendly).
    """
    rows = torch.arange(grid_h, device=device).unsqueeze(1) * torch.ones(1, grid_w, dtype=torch.long, device=device)
    cols = torch.arange(grid_w, device=device).unsqueeze(0) * torch.ones(grid_h, 1, dtype=torch.long, device=device)
    grid = torch.stack([rows, cols], dim=-1).reshape(1, grid_h * grid_w, 2)  # [1, h*w, 2]
    return grid.expand(batch, grid_h * grid_w, 2)


def token_positions(
    batch: int, grid_h: int, grid_w: int, num_special_tokens: int, device: torch.device | None = None
) -> torch.Tensor:
    """Positions for [special tokens, patches] -> [batch, num_special + h*w, 2] int64.

    Special tokens get (0, 0); patches get (row + 1, col + 1).
    """
    patches = patch_grid_positions(batch, grid_h, grid_w, device) + 1  # [batch, h*w, 2]
    if num_special_tokens <= 0:
        return patches
    special = torch.zeros(batch, num_special_tokens, 2, dtype=patches.dtype, device=device)
    return torch.cat([special, patches], dim=1)


def apply_rope(features: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """features [B, heads, N, head_dim] rotated by precomputed (cos, signed_sin) [B or 1, 1, N, head_dim].

    Per half of the head dim this is `x * cos + rotate_half(x) * sin` with rotate_half(x1, x2) =
    (-x2, x1); the minus sign lives in `signed_sin`, so the rotation is one swap of quarters.
    The tables are float32 and cast to the features' dtype here (a no-op in float32).
    """
    quarter0, quarter1, quarter2, quarter3 = features.chunk(4, dim=-1)
    swapped = torch.cat((quarter1, quarter0, quarter3, quarter2), dim=-1)  # [B, heads, N, head_dim]
    return features * cos.to(features.dtype) + swapped * signed_sin.to(features.dtype)


class RotaryPositionEmbedding2D(nn.Module):
    """Applies 2D RoPE to per-head features. No parameters (nothing in the state dict)."""

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = float(frequency)

    def _cos_sin_1d(self, coords: torch.Tensor, dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """coords [B, N] (integer or float) -> (cos, signed_sin) [B, 1, N, dim] float32 for one half."""
        exponents = torch.arange(0, dim, 2, device=coords.device, dtype=torch.float32) / dim
        inv_freq = 1.0 / (self.frequency**exponents)  # [dim/2]
        angles = coords.to(torch.float32).unsqueeze(-1) * inv_freq  # [B, N, dim/2]
        cos, sin = angles.cos(), angles.sin()
        cos = torch.cat([cos, cos], dim=-1).unsqueeze(1)  # [B, 1, N, dim]
        signed_sin = torch.cat([-sin, sin], dim=-1).unsqueeze(1)  # [B, 1, N, dim]
        return cos, signed_sin

    def cos_sin(self, positions: torch.Tensor, head_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """positions [B, N, 2] (y, x) -> (cos, signed_sin), each [B, 1, N, head_dim] float32.

        Channels [0, head_dim/2) follow y, [head_dim/2, head_dim) follow x (head_dim % 4 == 0).
        """
        cos_y, sin_y = self._cos_sin_1d(positions[..., 0], head_dim // 2)
        cos_x, sin_x = self._cos_sin_1d(positions[..., 1], head_dim // 2)
        return torch.cat([cos_y, cos_x], dim=-1), torch.cat([sin_y, sin_x], dim=-1)

    def grid_cos_sin(
        self, grid_h: int, grid_w: int, num_special_tokens: int, head_dim: int, device: torch.device | None = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tables for one frame's [special tokens, grid_h x grid_w patches] -> 2 x [1, 1, P, head_dim]
        float32; they broadcast over every frame / batch element (all share the same positions)."""
        return self.cos_sin(token_positions(1, grid_h, grid_w, num_special_tokens, device), head_dim)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [B, heads, N, head_dim] (head_dim % 4 == 0), positions [B, N, 2] (y, x) -> same shape as tokens."""
        cos, signed_sin = self.cos_sin(positions, tokens.shape[-1])
        return apply_rope(tokens, cos, signed_sin)
