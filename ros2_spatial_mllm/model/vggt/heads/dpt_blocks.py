"""Building blocks of the DPT head: residual conv units, fusion blocks, UV sin/cos embedding.

Key names follow the VGGT DPT head: ResidualConvUnit.{conv1,conv2}, FeatureFusionBlock.
{resConfUnit1 (absent when has_residual=False), resConfUnit2, out_conv}.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    """x [N, F, h, w] -> relu(x) + conv2(relu(conv1(relu(x)))).

    The reference applies an in-place ReLU to its input before the skip connection, so the
    skip adds relu(x); this reproduces that without mutating the caller's tensor.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FeatureFusionBlock(nn.Module):
    """(coarse [N, F, h, w], skip [N, F, h, w] optional) -> upsampled [N, F, h', w'].

    out = out_conv(resize(rcu2(coarse + rcu1(skip)))), resize bilinear align_corners=True
    to `size` or x2.
    """

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.has_residual = has_residual
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, coarse: torch.Tensor, skip: Optional[torch.Tensor] = None, size: Optional[Tuple[int, int]] = None
    ) -> torch.Tensor:
        out = coarse
        if self.has_residual and skip is not None:
            out = out + self.resConfUnit1(skip)
        out = self.resConfUnit2(out)
        if size is None:
            size = (out.shape[-2] * 2, out.shape[-1] * 2)
        out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(out)


def uv_grid(width: int, height: int, aspect_ratio: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised image-plane UV grid -> [height, width, 2] (u right, v down).

    The image diagonal spans unit length: u in +-(aspect/sqrt(1+aspect^2))*(W-1)/W,
    v in +-(1/sqrt(1+aspect^2))*(H-1)/H, sampled at cell positions.
    """
    diagonal = (aspect_ratio**2 + 1.0) ** 0.5
    span_u = aspect_ratio / diagonal * (width - 1) / width
    span_v = 1.0 / diagonal * (height - 1) / height
    u = torch.linspace(-span_u, span_u, steps=width, dtype=torch.float32, device=device)
    v = torch.linspace(-span_v, span_v, steps=height, dtype=torch.float32, device=device)
    grid = torch.stack([u.unsqueeze(0).expand(height, width), v.unsqueeze(1).expand(height, width)], dim=-1)
    return grid.to(dtype)


def sincos_embedding_1d(positions: torch.Tensor, dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """positions [M] -> [M, dim] = [sin(p * w_k), cos(p * w_k)], w_k = omega_0 ** (-k / (dim/2))."""
    half = dim // 2
    omega = 1.0 / omega_0 ** (torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    angles = positions.to(torch.float32).reshape(-1, 1) * omega  # [M, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def uv_position_embedding(height: int, width: int, channels: int, aspect_ratio: float, device: torch.device) -> torch.Tensor:
    """Sin/cos embedding of the UV grid -> [channels, height, width] float32 (u: first half, v: second)."""
    grid = uv_grid(width, height, aspect_ratio, torch.float32, device).reshape(-1, 2)
    emb = torch.cat(
        [sincos_embedding_1d(grid[:, 0], channels // 2), sincos_embedding_1d(grid[:, 1], channels // 2)], dim=-1
    )  # [h*w, channels]
    return emb.reshape(height, width, channels).permute(2, 0, 1)
