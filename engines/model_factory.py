"""Random-weight Spatial-MLLM models for exports, parity tests and benchmarks.

Thin layer over engineer B's presets (ros2_spatial_mllm.model.presets): "tiny" (a few million
parameters, CPU tests) and "official" (Qwen2.5-VL-3B + VGGT-1B sizes; meta device or GPU).
"""
from __future__ import annotations

from typing import Any, Optional

import torch


def spatial_mllm_config(preset: str = "tiny") -> Any:
    """SpatialMLLMConfig of a preset ("tiny" | "official")."""
    from ros2_spatial_mllm.model.presets import preset_config

    return preset_config(preset)


def build_model(preset: str = "tiny", device: str | torch.device = "cpu",
                dtype: Optional[torch.dtype] = None, seed: int = 0) -> Any:
    """Random-weight SpatialMLLMForConditionalGeneration in eval mode (meta device allowed)."""
    from ros2_spatial_mllm.model.presets import build_model as build_preset

    model = build_preset(preset, device=device, seed=seed)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
