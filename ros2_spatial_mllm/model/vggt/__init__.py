"""VGGT (facebook/VGGT-1B architecture) implemented for this project: aggregator, camera
head and depth head, key-compatible with the published checkpoint."""

from .aggregator import Aggregator
from .config import VGGTConfig, scaled_dpt_layers
from .heads import CameraHead, DPTHead
from .loading import LoadReport, load_vggt_state_dict, read_state_dict
from .patch_embed import ConvPatchEmbed, DinoV2PatchEmbed
from .vggt import VGGT

__all__ = [
    "Aggregator",
    "CameraHead",
    "ConvPatchEmbed",
    "DPTHead",
    "DinoV2PatchEmbed",
    "LoadReport",
    "VGGT",
    "VGGTConfig",
    "load_vggt_state_dict",
    "read_state_dict",
    "scaled_dpt_layers",
]
