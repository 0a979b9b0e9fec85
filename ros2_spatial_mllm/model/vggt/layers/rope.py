"""2D rotary position embedding (RoPE) over a patch grid, export-friendly.

Convention (as VGGT): the head dim is split in two halves; the first half is rotated by the
token's row (y) position, the second by its column (x) position. Inside each half, the
rotation pairs channel i with channel i + half/2 ("rotate half"), with inverse frequencies
`base ** (-2k / half)`. Patch positions are (row + 1, col + 1); special tokens (camera,
registers) sit at (0, 0) so their rotation is the identity.

Everything is computed from tensor shapes with arange/broadcasting and from the position
tensor itself (cos/sin evaluated directly, no lookup table sized by `positions.max()`), so
torch.onnx.export traces it without Python ints taken from data.
"""

from __future__ import annotations

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


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [..., d] with (x1, x2) -> (-x2, x1) on the two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryPositionEmbedding2D(nn.Module):
    """Applies 2D RoPE to per-head features. No parameters (nothing in the state dict)."""

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = float(frequency)

    def _rotate_1d(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """features [B, H, N, d] rotated by coords [B, N] (integer or float positions)."""
        dim = features.shape[-1]
        exponents = torch.arange(0, dim, 2, device=features.device, dtype=torch.float32) / dim
        inv_freq = 1.0 / (self.frequency**exponents)  # [d/2]
        angles = coords.to(torch.float32).unsqueeze(-1) * inv_freq  # [B, N, d/2]
        angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)  # [B, 1, N, d]
        cos = angles.cos().to(features.dtype)
        sin = angles.sin().to(features.dtype)
        return features * cos + _rotate_half(features) * sin

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [B, heads, N, head_dim] (head_dim % 4 == 0), positions [B, N, 2] (y, x) -> same shape as tokens."""
        vertical, horizontal = tokens.chunk(2, dim=-1)
        vertical = self._rotate_1d(vertical, positions[..., 0])
        horizontal = self._rotate_1d(horizontal, positions[..., 1])
        return torch.cat([vertical, horizontal], dim=-1)
