"""ONNX export of the Spatial-MLLM encoders with a dynamic frame count and image size.

    spatial-mllm-engines export --preset tiny --out engines_out/tiny      # tiny CPU run, ~20 s

Components (engines.export_modules): spatial_encoder, spatial_geometry, vision_encoder,
connector. Frame count and image height/width are dynamic ONNX axes; the ranges they are meant
for are declared in `ExportRanges` and written to `<out>/export_manifest.json` (the TensorRT
builder turns them into optimisation profiles). The LLM is not exported: it runs in PyTorch
(static KV cache + torch.compile on GPU, see ros2_spatial_mllm/backends/llm.py).

Uses torch's TorchScript-based exporter (`dynamo=False`, opset 18: antialiased Resize for the
DINOv2 position-embedding interpolation); it needs no extra package.
"""
from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from engines.engine_cache import onnx_model_sha256
from engines.export_modules import (ConnectorExport, SpatialEncoderExport, SpatialGeometryExport,
                                    VisionEncoderExport)
from engines.profiles import OptimizationProfile, TensorShapeRange, frame_count_profiles

COMPONENTS = ("spatial_encoder", "spatial_geometry", "vision_encoder", "connector")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OPSET = 18


@dataclass
class ExportRanges:
    """Declared (min, opt, max) ranges. Frames even (Qwen temporal patch 2); sides multiples of
    28 (patch 14 x merge 2). Tokens = merged video tokens of one query (connector input N).
    spatial_geometry (sampling heads, no temporal patch) accepts 1..max frames, odd included."""

    frames: tuple[int, int, int] = (2, 16, 32)
    height: tuple[int, int, int] = (56, 476, 644)
    width: tuple[int, int, int] = (56, 644, 644)

    def tokens(self) -> tuple[int, int, int]:
        return tuple(f // 2 * (h // 28) * (w // 28)
                     for f, h, w in zip(self.frames, self.height, self.width))

    def validate(self) -> None:
        for name, rng in (("frames", self.frames), ("height", self.height), ("width", self.width)):
            if not (1 <= rng[0] <= rng[1] <= rng[2]):
                raise ValueError(f"{name} range {rng} must be MIN <= OPT <= MAX")
        if any(f % 2 for f in self.frames):
            raise ValueError(f"frame counts must be even (Qwen temporal patch 2): {self.frames}")
        if any(v % 28 for v in self.height + self.width):
            raise ValueError(f"image sides must be multiples of 28: {self.height} {self.width}")


def component_profiles(component: str, ranges: ExportRanges,
                       merged_dim: int) -> list[OptimizationProfile]:
    """Optimisation profile(s) of a component for the declared ranges."""
    if component in ("spatial_encoder", "vision_encoder"):
        name = "frames" if component == "vision_encoder" else "images"
        return frame_count_profiles(name, [ranges.frames], ranges.height, ranges.width)
    if component == "spatial_geometry":
        # the geometry worker's chunks may hold a single frame (the first keyframe) or an odd
        # count: VGGT itself has no temporal patch, so this profile starts at 1 frame
        frames = (1, ranges.frames[1], ranges.frames[2])
        return frame_count_profiles("images", [frames], ranges.height, ranges.width)
    if component == "connector":
        lo, mid, hi = ranges.tokens()
        return [OptimizationProfile((TensorShapeRange("packed_spatial", (lo, merged_dim),
                                                      (mid, merged_dim), (hi, merged_dim)),))]
    raise ValueError(f"unknown component '{component}' ({', '.join(COMPONENTS)})")


def export_wrapper(model: Any, component: str) -> tuple[torch.nn.Module, list[str], list[str],
                                                          dict]:
    """(wrapper module, input names, output names, dynamic axes) of a component."""
    video_axes = {1: "frames", 3: "height", 4: "width"}
    if component == "spatial_encoder":
        return (SpatialEncoderExport(model.spatial_encoder), ["images"], ["spatial_features"],
                {"images": video_axes, "spatial_features": {1: "frames", 2: "tokens"}})
    if component == "spatial_geometry":
        outputs = ["pose_enc", "depth", "depth_conf"]
        axes = {"images": video_axes, "pose_enc": {1: "frames"},
                "depth": {1: "frames", 2: "height", 3: "width"},
                "depth_conf": {1: "frames", 2: "height", 3: "width"}}
        if getattr(model.spatial_encoder.vggt_model, "pair_pose_head", None) is not None:
            outputs.append("pair_pose")
            axes["pair_pose"] = {1: "pairs"}
        return SpatialGeometryExport(model.spatial_encoder), ["images"], outputs, axes
    if component == "vision_encoder":
        return (VisionEncoderExport(model.model.visual), ["frames"], ["video_embeds"],
                {"frames": video_axes, "video_embeds": {0: "video_tokens"}})
    if component == "connector":
        return (ConnectorExport(model.connector), ["packed_spatial"], ["spatial_embeds"],
                {"packed_spatial": {0: "video_tokens"}, "spatial_embeds": {0: "video_tokens"}})
    raise ValueError(f"unknown component '{component}' ({', '.join(COMPONENTS)})")


def example_inputs(model: Any, component: str, frames: int, height: int, width: int,
                   dtype: torch.dtype, device: str | torch.device = "cpu") -> tuple:
    """Random example inputs for tracing. Sizes should differ from the tiny nominal 112 so the
    traced graph takes the general (interpolating) code paths."""
    g = torch.Generator().manual_seed(0)
    if component == "connector":
        n = frames // 2 * (height // 28) * (width // 28)
        x = torch.randn(n, model.connector.merged_dim, generator=g)
    else:
        x = torch.rand(1, frames, 3, height, width, generator=g)
    return (x.to(device=device, dtype=dtype),)


def export_component(model: Any, component: str, out_dir: str | Path, dtype: str = "fp32",
                     example_size: tuple[int, int, int] = (4, 168, 224)) -> Path:
    """Export one component to <out_dir>/<component>/<component>.onnx.

    One folder per component: above 2 GB of weights torch writes every initializer as its own
    external file next to the graph (checked with a 2.4 GB model), and those names
    (onnx__MatMul_28, ...) would collide between components sharing a folder."""
    folder = Path(out_dir) / component
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # stale external-data files of a previous export
        old.unlink()
    path = folder / f"{component}.onnx"
    wrapper, inputs, outputs, axes = export_wrapper(model, component)
    if next(wrapper.parameters()).dtype != DTYPES[dtype]:  # cast a copy, never the caller's model
        wrapper = copy.deepcopy(wrapper).to(DTYPES[dtype])
    wrapper = wrapper.eval()
    args = example_inputs(model, component, *example_size, dtype=DTYPES[dtype],
                          device=next(model.parameters()).device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          do_constant_folding=True)
    return path


def export_all(model: Any, out_dir: str | Path, components: Sequence[str] = COMPONENTS,
               dtype: str = "fp32", ranges: Optional[ExportRanges] = None,
               preset: str = "custom", model_dir: Optional[str | Path] = None) -> dict:
    """Export components and write <out_dir>/export_manifest.json (paths relative to out_dir,
    sha256 over graph + external data, declared ranges and the matching profiles). With
    `model_dir` (the checkpoint `model` was loaded from) the manifest also records that model's
    identity (model_config_hash, model_revision: ros2_spatial_mllm.safety.model_identity), which
    the node's loader compares with the model it loads (engine_checks.check_onnx_export)."""
    ranges = ranges or ExportRanges()
    ranges.validate()
    out_dir = Path(out_dir)
    manifest = {"preset": preset, "dtype": dtype, "opset": OPSET,
                "ranges": asdict(ranges), "components": {}}
    if model_dir is not None:
        from ros2_spatial_mllm.safety import model_identity

        identity = model_identity(model_dir)
        manifest.update(model_dir=str(model_dir), model_config_hash=identity["config_hash"],
                        model_revision=identity["revision"])
    merged_dim = int(model.connector.merged_dim)
    for component in components:
        t0 = time.perf_counter()
        path = export_component(model, component, out_dir, dtype=dtype)
        profiles = component_profiles(component, ranges, merged_dim)
        manifest["components"][component] = {
            "onnx": str(path.relative_to(out_dir)), "onnx_sha256": onnx_model_sha256(path),
            "export_s": round(time.perf_counter() - t0, 2),
            "profiles": [p.to_dict() for p in profiles]}
    (out_dir / "export_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
