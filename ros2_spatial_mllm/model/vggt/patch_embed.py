"""Patch embeddings of the aggregator.

`DinoV2PatchEmbed`: a DINOv2 ViT with register tokens (ViT-L/14 + 4 registers in VGGT-1B),
state-dict names as DINOv2: cls_token [1,1,C], pos_embed [1,1+M*M,C], register_tokens [1,R,C],
mask_token [1,C], patch_embed.proj (Conv2d 3->C, kernel=stride=patch), blocks.N.*, norm.
Its output is the final-norm'ed patch tokens only. The learned pos_embed (M x M grid for the
nominal img_size) is resized bicubically (antialiased) to other grids, as DINOv2 does.

`ConvPatchEmbed`: the "conv" variant (keys proj.*), no transformer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers.block import Block


class ConvPatchEmbed(nn.Module):
    """images [N, 3, H, W] -> patch tokens [N, (H/p)*(W/p), C] with one strided conv."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # [N, h*w, C]


class DinoV2PatchEmbed(nn.Module):
    """DINOv2 ViT with registers: images [N, 3, H, W] (normalised) -> patch tokens [N, h*w, C]."""

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: float = 1.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.grid_size = img_size // patch_size  # M: pos_embed covers an M x M grid
        self.patch_embed = ConvPatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)  # unused at inference
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, init_values=init_values, norm_eps=1e-6)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._cached_grid: tuple[int, int] | None = None
        self.register_buffer("_cached_pos_embed", None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init (DINOv2 style); real weights come from a checkpoint."""
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @torch.no_grad()
    def cache_pos_embed(self, grid_h: int | None, grid_w: int | None = None) -> None:
        """Precompute the resized pos_embed for one grid (None clears the cache).

        Forward then skips the bicubic-antialias resize for that grid: faster, and exportable by
        the TorchScript ONNX exporter (which lacks antialiased bicubic). Call again after loading
        new weights.
        """
        if grid_h is None:
            self._cached_grid, self._cached_pos_embed = None, None
            return
        self._cached_pos_embed = None
        self._cached_pos_embed = self.interpolated_pos_embed(grid_h, grid_w, self.pos_embed.dtype).detach().clone()
        self._cached_grid = (int(grid_h), int(grid_w))

    def interpolated_pos_embed(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> torch.Tensor:
        """pos_embed resized to a grid_h x grid_w patch grid -> [1, 1 + grid_h*grid_w, C].

        Unchanged for the nominal square grid; otherwise bicubic, antialiased, by output size
        (or the cached copy from `cache_pos_embed`).
        """
        if grid_h == self.grid_size and grid_w == self.grid_size:
            return self.pos_embed.to(dtype)
        if self._cached_pos_embed is not None and self._cached_grid == (grid_h, grid_w):
            return self._cached_pos_embed.to(dtype)
        pos_embed = self.pos_embed.float()
        dim = pos_embed.shape[-1]
        side = int(math.isqrt(pos_embed.shape[1] - 1))
        cls_pos = pos_embed[:, :1]  # [1, 1, C]
        grid = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1, C, M, M]
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([cls_pos, grid], dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] with H, W multiples of patch_size -> normed patch tokens [N, h*w, C]."""
        num_images, _, height, width = images.shape
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        patches = self.patch_embed(images)  # [N, h*w, C]
        cls = self.cls_token.expand(num_images, -1, -1).to(patches.dtype)
        x = torch.cat([cls, patches], dim=1) + self.interpolated_pos_embed(grid_h, grid_w, patches.dtype)
        if self.register_tokens is not None:
            registers = self.register_tokens.expand(num_images, -1, -1).to(x.dtype)
            x = torch.cat([x[:, :1], registers, x[:, 1:]], dim=1)  # [N, 1 + R + h*w, C]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 1 + self.num_register_tokens :]
