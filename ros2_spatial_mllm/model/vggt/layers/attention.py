"""Multi-head self-attention with optional qk-norm and 2D RoPE (keys qkv, q_norm, k_norm, proj)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .rope import RotaryPositionEmbedding2D, apply_rope


class Attention(nn.Module):
    """x [B, N, C] -> [B, N, C] using F.scaled_dot_product_attention.

    qk_norm: LayerNorm(head_dim) (eps 1e-5) on queries and keys, before RoPE.
    rope: shared RotaryPositionEmbedding2D, applied when `rope_cos_sin` (precomputed tables, see
    RotaryPositionEmbedding2D.cos_sin, each [B or 1, 1, N, head_dim]) or `pos` [B, N, 2] is given;
    the tables take precedence (they are evaluated once per aggregator forward).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        rope: Optional[RotaryPositionEmbedding2D] = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError("dim must be divisible by num_heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def forward(
        self,
        x: torch.Tensor,
        pos: Optional[torch.Tensor] = None,
        rope_cos_sin: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        batch, num_tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, num_tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, head_dim]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and (rope_cos_sin is not None or pos is not None):
            if rope_cos_sin is None:
                rope_cos_sin = self.rope.cos_sin(pos, self.head_dim)  # [B, 1, N, head_dim] x 2
            q = apply_rope(q, *rope_cos_sin)
            k = apply_rope(k, *rope_cos_sin)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, head_dim]
        out = out.transpose(1, 2).reshape(batch, num_tokens, channels)
        return self.proj(out)
