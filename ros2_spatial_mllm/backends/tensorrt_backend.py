"""TensorRT backend: cached engines (engines.engine_cache) run on torch CUDA tensors.

    backend = TensorRTBackend(model, onnx_dir="engines_out/official_fp16",
                              cache_dir="~/.cache/ros2_spatial_mllm/engines",
                              precision="fp16", allow_build=False)

At construction every component's engine is looked up under its key (ONNX sha256 + TensorRT
version + GPU name + compute capability + precision + profiles). Missing, mismatched or corrupt
engines raise EngineCacheError with the command that builds them, unless allow_build=True (node
parameter `allow_engine_build`), in which case they are built once and cached. Needs TensorRT +
a CUDA GPU; not verified in this repository's CI (CPU only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from .base import EncoderBackend
from .torch_backend import TorchBackend

DEFAULT_CACHE_DIR = "~/.cache/ros2_spatial_mllm/engines"
REQUIRED = ("vision_encoder", "spatial_encoder", "connector")


def engine_plan(onnx_dir: str | Path, require: tuple = REQUIRED) -> list[tuple[str, Path, list]]:
    """(component, onnx path, optimisation profiles) for every exported component (pure);
    raises FileNotFoundError when a component of `require` was not exported."""
    from engines.profiles import OptimizationProfile

    onnx_dir = Path(onnx_dir).expanduser()
    manifest_path = onnx_dir / "export_manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no export_manifest.json in {onnx_dir}; run "
                                f"`spatial-mllm-engines export --out {onnx_dir}` first")
    manifest = json.loads(manifest_path.read_text())
    plan = []
    for component, entry in manifest["components"].items():
        profiles = [OptimizationProfile.from_dict(p) for p in entry.get("profiles", [])]
        plan.append((component, onnx_dir / entry["onnx"], profiles))
    missing = [c for c in require if c not in {p[0] for p in plan}]
    if missing:
        raise FileNotFoundError(f"{onnx_dir} lacks exported components {missing}")
    return plan


class TensorRTBackend(EncoderBackend):
    """Encoders as TensorRT engines; the LLM stays in PyTorch."""

    name = "tensorrt"

    def __init__(self, model: Any, onnx_dir: str | Path, cache_dir: str = DEFAULT_CACHE_DIR,
                 precision: str = "fp16", allow_build: bool = False,
                 timing_cache_path: Optional[str] = None, workspace_gb: float = 4.0):
        super().__init__(model)
        from engines.engine_cache import EngineCache, resolve_engine
        from engines.trt_builder import BuildOptions, build_engine, make_engine_key, require_tensorrt
        from engines.trt_runtime import TensorRTEngine

        require_tensorrt()
        self.cache = EngineCache(cache_dir)
        if timing_cache_path is None:  # same default as `spatial-mllm-engines build`
            timing_cache_path = str(self.cache.root / "timing.cache")
        self.engines: dict[str, Any] = {}
        for component, onnx_path, profiles in engine_plan(onnx_dir):
            key = make_engine_key(onnx_path, precision, profiles)
            options = BuildOptions(precision=precision, profiles=profiles,
                                   timing_cache_path=timing_cache_path,
                                   workspace_bytes=int(workspace_gb * (1 << 30)))
            entry = resolve_engine(self.cache, component, key,
                                   build=lambda p=onnx_path, o=options: build_engine(p, o),
                                   allow_build=allow_build,
                                   notes={"onnx": str(onnx_path)})
            self.engines[component] = TensorRTEngine(entry.read_bytes())
        self._torch = TorchBackend(model) if "spatial_geometry" not in self.engines else None

    def _run(self, component: str, x: torch.Tensor) -> dict:
        engine = self.engines[component]
        name = engine.input_names[0]
        return engine(**{name: x.to(device=engine.device, dtype=engine.dtypes[name]).contiguous()})

    def vision_encoder(self, frames: torch.Tensor) -> torch.Tensor:
        return self._run("vision_encoder", frames)["video_embeds"]

    def spatial_encoder(self, frames: torch.Tensor) -> torch.Tensor:
        return self._run("spatial_encoder", frames)["spatial_features"]

    def spatial_geometry(self, frames: torch.Tensor) -> dict:
        if self._torch is not None:
            return self._torch.spatial_geometry(frames)
        return self._run("spatial_geometry", frames)

    def connector(self, packed_spatial: torch.Tensor) -> torch.Tensor:
        return self._run("connector", packed_spatial)["spatial_embeds"]

    def close(self) -> None:
        self.engines.clear()
