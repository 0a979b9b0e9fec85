"""VGGT aggregator: DINOv2 patch embed + alternating frame / global attention.

Per frame the token sequence is [camera, R registers, patches] (patch_start_idx = 1 + R = 5).
Frame blocks attend within each frame ([B*S, P, C]); global blocks attend across all frames
([B, S*P, C]). Layer i's output is concat(frame_i, global_i) -> [B, S, P, 2C].

Keys (identical to facebook/VGGT-1B): patch_embed.*, frame_blocks.N.*, global_blocks.N.*,
camera_token [1, 2, 1, C], register_token [1, 2, R, C] (index 0: first frame, 1: the others).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .config import VGGTConfig
from .layers.block import Block
from .layers.rope import RotaryPositionEmbedding2D
from .patch_embed import ConvPatchEmbed, DinoV2PatchEmbed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def first_and_other_frames(token: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """token [1, 2, X, C] -> [batch*frames, X, C]: index 0 for frame 0, index 1 for frames 1..S-1."""
    first = token[:, 0:1].expand(batch, 1, *token.shape[2:])
    others = token[:, 1:2].expand(batch, frames - 1, *token.shape[2:])
    return torch.cat([first, others], dim=1).reshape(batch * frames, *token.shape[2:])


def resolve_layer_indices(output_layers: Optional[Sequence[int]], depth: int) -> List[int]:
    """Normalise requested layer ids (negative ids count from the end) -> list in request order."""
    if output_layers is None:
        return list(range(depth))
    resolved = []
    for idx in output_layers:
        real = idx + depth if idx < 0 else idx
        if not 0 <= real < depth:
            raise ValueError(f"layer index {idx} outside [-{depth}, {depth - 1}]")
        resolved.append(int(real))
    return resolved


class Aggregator(nn.Module):
    """images [B, S, 3, H, W] in [0, 1] -> (list of [B, S, P, 2C], patch_start_idx)."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.depth = config.depth
        self.patch_start_idx = config.patch_start_idx
        if config.patch_embed == "dinov2":
            self.patch_embed: nn.Module = DinoV2PatchEmbed(
                img_size=config.img_size,
                patch_size=config.patch_size,
                embed_dim=config.embed_dim,
                depth=config.patch_embed_depth,
                num_heads=config.patch_embed_num_heads,
                mlp_ratio=config.mlp_ratio,
                num_register_tokens=config.num_register_tokens,
                init_values=config.patch_embed_init_values,
            )
        else:
            self.patch_embed = ConvPatchEmbed(config.patch_size, config.embed_dim)
        self.rope = RotaryPositionEmbedding2D(config.rope_freq) if config.rope_freq > 0 else None

        def make_block() -> Block:
            return Block(
                config.embed_dim,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qk_norm=config.qk_norm,
                init_values=config.init_values,
                rope=self.rope,
            )

        self.frame_blocks = nn.ModuleList([make_block() for _ in range(config.depth)])
        self.global_blocks = nn.ModuleList([make_block() for _ in range(config.depth)])
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, config.embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config.num_register_tokens, config.embed_dim))
        if not self.camera_token.is_meta:
            nn.init.normal_(self.camera_token, std=1e-6)
            nn.init.normal_(self.register_token, std=1e-6)
        self.register_buffer("_image_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_image_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def cache_pos_embed(self, height: int | None, width: int | None = None) -> None:
        """Precompute the patch embed's resized pos_embed for height x width pixel inputs
        (None clears). Use before ONNX export at a non-nominal resolution."""
        if isinstance(self.patch_embed, DinoV2PatchEmbed):
            if height is None:
                self.patch_embed.cache_pos_embed(None)
            else:
                self.patch_embed.cache_pos_embed(height // self.patch_size, width // self.patch_size)

    def forward(
        self, images: torch.Tensor, output_layers: Optional[Sequence[int]] = None
    ) -> Tuple[List[torch.Tensor], int]:
        """images [B, S, 3, H, W] in [0, 1], H and W multiples of patch_size.

        output_layers: layer ids to keep (negative from the end, e.g. [-1]); None keeps all.
        Returns (outputs, patch_start_idx): outputs[i] is layer output_layers[i] (or layer i),
        each [B, S, P, 2C] with P = patch_start_idx + (H/p)*(W/p). Blocks after the last
        requested layer are skipped.
        """
        if not torch.jit.is_tracing():  # shape checks (skipped while exporting)
            if images.dim() != 5 or images.shape[2] != 3:
                raise ValueError(f"images must be [B, S, 3, H, W], got {tuple(images.shape)}")
        batch, frames, _, height, width = images.shape
        if not torch.jit.is_tracing():
            if height % self.patch_size or width % self.patch_size:
                raise ValueError(f"H and W must be multiples of {self.patch_size}, got {height}x{width}")
        wanted = resolve_layer_indices(output_layers, self.depth)
        last_layer = max(wanted)

        images = (images - self._image_mean.to(images.dtype)) / self._image_std.to(images.dtype)
        patches = self.patch_embed(images.reshape(batch * frames, 3, height, width))  # [B*S, h*w, C]
        camera = first_and_other_frames(self.camera_token, batch, frames).to(patches.dtype)
        registers = first_and_other_frames(self.register_token, batch, frames).to(patches.dtype)
        tokens = torch.cat([camera, registers, patches], dim=1)  # [B*S, P, C]
        num_tokens, channels = tokens.shape[1], tokens.shape[2]

        # RoPE cos/sin evaluated once per forward, shared by every block (same positions in every frame)
        frame_rope, global_rope = None, None
        if self.rope is not None:
            grid_h, grid_w = height // self.patch_size, width // self.patch_size
            head_dim = self.config.embed_dim // self.config.num_heads
            frame_rope = self.rope.grid_cos_sin(grid_h, grid_w, self.patch_start_idx, head_dim, images.device)
            # [1, 1, P, hd] x 2 for frame blocks; repeated per frame -> [1, 1, S*P, hd] x 2 for global blocks
            global_rope = tuple(table.repeat(1, 1, frames, 1) for table in frame_rope)

        kept = {}
        for layer in range(last_layer + 1):
            tokens = self.frame_blocks[layer](
                tokens.reshape(batch * frames, num_tokens, channels), rope_cos_sin=frame_rope
            )
            frame_out = tokens.reshape(batch, frames, num_tokens, channels)
            tokens = self.global_blocks[layer](
                tokens.reshape(batch, frames * num_tokens, channels), rope_cos_sin=global_rope
            )
            global_out = tokens.reshape(batch, frames, num_tokens, channels)
            if layer in wanted:
                kept[layer] = torch.cat([frame_out, global_out], dim=-1)  # [B, S, P, 2C]
        return [kept[idx] for idx in wanted], self.patch_start_idx
