"""Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).

Keys: norm1, attn.{qkv,q_norm,k_norm,proj}, ls1.gamma, norm2, mlp.{fc1,fc2}, ls2.gamma.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .attention import Attention
from .layer_scale import LayerScale
from .mlp import Mlp
from .rope import RotaryPositionEmbedding2D


class Block(nn.Module):
    """x [B, N, C] (+ pos [B, N, 2] or precomputed rope_cos_sin tables for RoPE) -> [B, N, C].

    norm_eps: 1e-5 for the aggregator / camera trunk blocks (nn.LayerNorm default),
    1e-6 inside the DINOv2 patch embed. init_values None/0 -> no LayerScale.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        qk_norm: bool = False,
        init_values: Optional[float] = None,
        norm_eps: float = 1e-5,
        rope: Optional[RotaryPositionEmbedding2D] = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        pos: Optional[torch.Tensor] = None,
        rope_cos_sin: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, rope_cos_sin=rope_cos_sin))
        return x + self.ls2(self.mlp(self.norm2(x)))
