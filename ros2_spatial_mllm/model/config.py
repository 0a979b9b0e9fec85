"""Configuration of the Spatial-MLLM: Qwen2.5-VL config + VGGT spatial encoder + connector.

`SpatialMLLMConfig` extends transformers' `Qwen2_5_VLConfig` (model_type "spatial-mllm") with

* `spatial_config` (`SpatialEncoderConfig`, model_type "vggt_spatial_encoder"): the VGGT sizes.
  The official v1.1 checkpoints store only `img_size=518, patch_size=14, embed_dim=1024`; every
  other VGGT field falls back to the VGGT-1B default of `VGGTConfig`, so an official
  `config.json` builds a VGGT-1B. Our own checkpoints store every `VGGTConfig` field.
* `connector_config` (plain dict): `connector_type` ("mlp_add") and `spatial_embeds_layer_idx`
  (which aggregator layer feeds the connector, -1 = last).
* `frame_time_positions` (bool, default False as in the reference): when True, the sampled
  frames' places in their window set the video tokens' mRoPE temporal ids (`processing.grid_times`),
  so unevenly spaced picks keep their gaps; False gives every K frames the ids of evenly spaced ones.

Both round-trip through `config.json` (`save_pretrained` / `from_pretrained` / `from_dict`).
"""

from __future__ import annotations

from typing import Any, Dict

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig, Qwen2_5_VLConfig

from .vggt.config import VGGTConfig

__all__ = [
    "DEFAULT_CONNECTOR_CONFIG",
    "SpatialEncoderConfig",
    "SpatialMLLMConfig",
    "vggt_config_from_spatial_config",
    "spatial_config_from_vggt_config",
]

DEFAULT_CONNECTOR_CONFIG: Dict[str, Any] = {"connector_type": "mlp_add", "spatial_embeds_layer_idx": -1}


@strict
class SpatialEncoderConfig(PreTrainedConfig):
    """Sub-config `spatial_config` of the Spatial-MLLM (VGGT sizes).

    Declared fields are the three the official checkpoint stores; further VGGT fields
    (depth, num_heads, ...) are accepted as extra attributes and saved as well.
    """

    model_type = "vggt_spatial_encoder"
    base_config_key = "spatial_config"

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024


@strict
class SpatialMLLMConfig(Qwen2_5_VLConfig):
    """Qwen2.5-VL config plus `spatial_config` and `connector_config` (see module docstring)."""

    model_type = "spatial-mllm"
    sub_configs_defaults = {**Qwen2_5_VLConfig.sub_configs_defaults, "spatial_config": SpatialEncoderConfig}

    spatial_config: dict | PreTrainedConfig | None = None
    connector_config: dict | None = None
    frame_time_positions: bool = False

    def __post_init__(self, **kwargs):
        connector = dict(DEFAULT_CONNECTOR_CONFIG)
        connector.update(self.connector_config or {})
        self.connector_config = connector
        super().__post_init__(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        if not out.get("frame_time_positions", False):
            # off is the reference's rule: left out, so config.json (and config_hash) stay as the
            # official layout and the checkpoints written before the flag existed
            out.pop("frame_time_positions", None)
        return out

    @property
    def spatial_embeds_layer_idx(self) -> int:
        """Aggregator layer that feeds the connector (-1 = last)."""
        return int(self.connector_config.get("spatial_embeds_layer_idx", -1))


def vggt_config_from_spatial_config(spatial_config: PreTrainedConfig | Dict[str, Any]) -> VGGTConfig:
    """Build the `VGGTConfig` described by a `spatial_config` (missing fields: VGGT-1B defaults)."""
    if isinstance(spatial_config, PreTrainedConfig):
        values = {k: v for k, v in vars(spatial_config).items() if not k.startswith("_")}
    else:
        values = dict(spatial_config)
    names = set(VGGTConfig.__dataclass_fields__)
    known = {k: v for k, v in values.items() if k in names and k != "extra"}
    return VGGTConfig(**known)


def spatial_config_from_vggt_config(vggt_config: VGGTConfig) -> Dict[str, Any]:
    """`spatial_config` dict storing every field of `vggt_config` (JSON friendly)."""
    values = vggt_config.to_dict()
    values.pop("extra", None)
    return values


try:  # make AutoConfig.from_pretrained(dir) resolve "spatial-mllm" dirs
    AutoConfig.register(SpatialEncoderConfig.model_type, SpatialEncoderConfig)
    AutoConfig.register(SpatialMLLMConfig.model_type, SpatialMLLMConfig)
except ValueError:  # already registered (module re-imported)
    pass
