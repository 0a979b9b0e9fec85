"""Configuration of the VGGT spatial encoder (facebook/VGGT-1B architecture).

`VGGTConfig.official()` reproduces the published VGGT-1B sizes (so the state dict loads key for
key); `VGGTConfig.tiny()` is a ~1M-parameter model with the same code path for CPU tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

# Layers the official DPT heads read, for the official aggregator depth of 24.
OFFICIAL_DPT_LAYERS: Tuple[int, int, int, int] = (4, 11, 17, 23)
OFFICIAL_DEPTH = 24


def scaled_dpt_layers(depth: int) -> Tuple[int, ...]:
    """DPT layer indices for an aggregator of `depth` layers, scaled from (4, 11, 17, 23) @ 24.

    depth=24 -> (4, 11, 17, 23); depth=4 -> (0, 1, 2, 3); depth=2 -> (0, 0, 1, 1).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return tuple(
        min(depth - 1, max(0, round((idx + 1) * depth / OFFICIAL_DEPTH) - 1)) for idx in OFFICIAL_DPT_LAYERS
    )


@dataclass
class VGGTConfig:
    """All sizes of a VGGT model. Defaults equal facebook/VGGT-1B.

    Aggregator (alternating frame/global attention):
        img_size: nominal square image side the patch embed's pos_embed was trained for (518).
        patch_size: ViT patch side in pixels (14).
        embed_dim: token width C; layer outputs are [B, S, P, 2C].
        depth: number of frame blocks (= number of global blocks = number of layer outputs).
        num_heads, mlp_ratio, qk_norm, init_values (LayerScale init), rope_freq (<= 0 disables RoPE).
        num_register_tokens: register tokens of the aggregator and of the DINOv2 patch embed.
    Patch embed:
        patch_embed: "dinov2" (DINOv2 ViT with registers, keys aggregator.patch_embed.*) or
            "conv" (a single strided conv, keys aggregator.patch_embed.proj.*).
        patch_embed_depth / patch_embed_num_heads / patch_embed_init_values: the DINOv2 ViT
            (ViT-L/14: 24 blocks, 16 heads, LayerScale 1.0).
    Heads:
        enable_camera / enable_depth: build camera_head / depth_head.
        camera_trunk_depth, camera_num_heads, camera_num_iterations (iterative refinement steps).
        dpt_features, dpt_out_channels, dpt_layer_indices (None -> scaled from (4, 11, 17, 23)),
        dpt_head_features_2 (32 in the reference), dpt_frames_chunk_size (frames per DPT chunk).
        pair_pose_head / pair_pose_dim: build `pair_pose_head` (not in VGGT-1B; the tiny preset's
            relative-pose read-out of consecutive frames, heads/pair_pose_head.py) and its
            descriptor width. Off by default, so the official layout is unchanged.
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qk_norm: bool = True
    init_values: float = 0.01
    rope_freq: float = 100.0
    patch_embed: str = "dinov2"
    patch_embed_depth: int = 24
    patch_embed_num_heads: int = 16
    patch_embed_init_values: float = 1.0
    enable_camera: bool = True
    enable_depth: bool = True
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_num_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: Tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layer_indices: Optional[Tuple[int, int, int, int]] = None
    dpt_head_features_2: int = 32
    dpt_frames_chunk_size: Optional[int] = 8
    pair_pose_head: bool = False
    pair_pose_dim: int = 64
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dpt_out_channels = tuple(int(c) for c in self.dpt_out_channels)
        if self.dpt_layer_indices is not None:
            self.dpt_layer_indices = tuple(int(i) for i in self.dpt_layer_indices)
        if self.embed_dim % self.num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        if self.rope_freq > 0 and (self.embed_dim // self.num_heads) % 4:
            raise ValueError("2D RoPE needs a head dim divisible by 4")
        if self.patch_embed not in ("dinov2", "conv"):
            raise ValueError(f"patch_embed must be 'dinov2' or 'conv', got {self.patch_embed!r}")
        if len(self.dpt_out_channels) != 4:
            raise ValueError("dpt_out_channels needs 4 entries")
        for idx in self.depth_head_layers:
            if not 0 <= idx < self.depth:
                raise ValueError(f"DPT layer {idx} outside [0, {self.depth - 1}]")

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token in each frame: 1 camera + registers (5 for VGGT-1B)."""
        return 1 + self.num_register_tokens

    @property
    def depth_head_layers(self) -> Tuple[int, ...]:
        """Aggregator layers the depth head reads (explicit or scaled with depth)."""
        if self.dpt_layer_indices is not None:
            return tuple(self.dpt_layer_indices)
        return scaled_dpt_layers(self.depth)

    @classmethod
    def official(cls, **overrides: Any) -> "VGGTConfig":
        """facebook/VGGT-1B (camera + depth heads; point/track heads are not implemented)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "VGGTConfig":
        """~1M parameters, same code path: 112x112 images (8x8 patches), 4 layer pairs."""
        values: Dict[str, Any] = dict(
            img_size=112,
            patch_size=14,
            embed_dim=64,
            depth=4,
            num_heads=4,
            mlp_ratio=4.0,
            patch_embed_depth=2,
            patch_embed_num_heads=4,
            camera_trunk_depth=1,
            camera_num_heads=4,
            camera_num_iterations=4,
            dpt_features=16,
            dpt_out_channels=(16, 16, 32, 32),
            dpt_head_features_2=8,
            dpt_frames_chunk_size=None,
        )
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "VGGTConfig":
        """Inverse of `to_dict`; unknown keys go to `extra` (e.g. keys of the Spatial-MLLM
        `spatial_config` such as model_type)."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in values.items() if k in names}
        extra = dict(known.pop("extra", {}) or {})
        extra.update({k: v for k, v in values.items() if k not in names})
        return cls(**known, extra=extra)
