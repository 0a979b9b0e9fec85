"""Transformer building blocks shared by the VGGT aggregator, patch embed and camera head."""

from .attention import Attention
from .block import Block
from .layer_scale import LayerScale
from .mlp import Mlp
from .rope import RotaryPositionEmbedding2D, apply_rope, patch_grid_positions, token_positions

__all__ = [
    "Attention",
    "Block",
    "LayerScale",
    "Mlp",
    "RotaryPositionEmbedding2D",
    "apply_rope",
    "patch_grid_positions",
    "token_positions",
]
