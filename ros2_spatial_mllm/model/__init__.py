"""Spatial-MLLM model: Qwen2.5-VL (transformers) + VGGT spatial encoder + mlp_add connector.

Public names are imported lazily so that `ros2_spatial_mllm.model.vggt` stays light:

    SpatialMLLMConfig, SpatialEncoderConfig            (config.py)
    SpatialMLLMForConditionalGeneration                (spatial_mllm.py)
    SpatialEncoder                                     (spatial_encoder.py)
    SpatialConnector, pack_spatial_tokens              (connector.py)
    official_config, tiny_config, build_model, TINY_ASSETS_DIR   (presets.py)
    save_checkpoint, load_checkpoint, CheckpointLoadReport, ModelDirError   (checkpoint.py)
"""

from importlib import import_module

_EXPORTS = {
    "SpatialMLLMConfig": "config",
    "SpatialEncoderConfig": "config",
    "SpatialMLLMForConditionalGeneration": "spatial_mllm",
    "SpatialEncoder": "spatial_encoder",
    "SpatialConnector": "connector",
    "pack_spatial_tokens": "connector",
    "official_config": "presets",
    "tiny_config": "presets",
    "build_model": "presets",
    "TINY_ASSETS_DIR": "presets",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "CheckpointLoadReport": "checkpoint",
    "ModelDirError": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
