"""Engine files (backend onnxruntime / tensorrt) are checked at load time and never silently used
(no rclpy; torch only inside the probe and the loader).

``check_onnx_export(onnx_dir, model_dir)`` (no torch) refuses an export folder whose
``export_manifest.json`` is missing or unreadable, a component file that is missing, or whose
sha256 differs from the manifest (truncated, corrupted, or replaced after export; the message
names the file, its size and both hashes), and, when the manifest records the model it was
exported from (``model_config_hash`` / ``model_revision``), a different model.
``probe_backend(model, backend)`` runs each exported stage and the PyTorch original on one
small fixed input (the export's smallest declared size, by default 2 frames of 112x112 and the
16 connector rows they make) and refuses relative differences
above ``BACKEND_PROBE_RTOL`` or different output shapes: an ONNX exported from another
checkpoint or config. Checkpoints of one base model share the frozen encoders and differ in the
connector, which the probe always covers. ``load_with_verified_backend`` (the node's loader) =
``SpatialMLLM.load`` (torch) + both checks + attach the backend + free the torch encoders.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ros2_spatial_mllm.safety import model_identity

__all__ = ["EngineFileError", "check_onnx_export", "probe_backend", "load_with_verified_backend",
           "BACKEND_PROBE_RTOL"]


BACKEND_PROBE_RTOL = 0.3   # fp16/int8 engines drift ~1e-2..1e-1; other weights give ~1 (independent outputs)
_PROBE_FRAMES, _PROBE_SIDE = 2, 112   # the default export ranges' minimum (TensorRT profiles)


class EngineFileError(ValueError):
    """An exported ONNX folder / engine is corrupt, incomplete or made for another model."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _onnx_sha256(path: Path) -> str | None:
    """The manifest's definition (engines.engine_cache.onnx_model_sha256): sha256 over the hex
    sha256 of the .onnx file, then name + hex sha256 of each external-data file. None (not
    checkable) without the engines package when the folder holds external-data files."""
    try:
        from engines.engine_cache import onnx_model_sha256
    except ImportError:   # no engines package (robot image): single-file exports only
        if any(p != path for p in path.parent.iterdir()):
            return None
        return hashlib.sha256(_file_sha256(path).encode()).hexdigest()
    return onnx_model_sha256(path)


def check_onnx_export(onnx_dir: str | Path, model_dir: str | Path | None = None,
                      required: tuple[str, ...] = ("vision_encoder", "spatial_encoder", "connector")) -> dict:
    """Check a `spatial-mllm-engines export` folder before any runtime opens it; returns the
    manifest. Raises EngineFileError naming the file (see module docstring). Reads every
    component file once (sha256): seconds for a multi-GB export."""
    onnx_dir = Path(onnx_dir).expanduser()
    manifest_path = onnx_dir / "export_manifest.json"
    if not manifest_path.is_file():
        raise EngineFileError(f"no export manifest '{manifest_path}' (run `spatial-mllm-engines export "
                              f"--model <model dir> --out {onnx_dir}`)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        components = manifest["components"]
        entries = {name: (str(entry["onnx"]), entry.get("onnx_sha256")) for name, entry in components.items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise EngineFileError(f"export manifest '{manifest_path}' is unreadable or incomplete: "
                              f"{type(exc).__name__}: {exc}") from None
    missing = [c for c in required if c not in entries]
    if missing:
        raise EngineFileError(f"export manifest '{manifest_path}' lacks components {missing}")
    for name, (relative, expected) in sorted(entries.items()):
        path = (onnx_dir / relative).resolve()
        if onnx_dir.resolve() not in path.parents:
            raise EngineFileError(f"export manifest '{manifest_path}': {name} path {relative!r} leaves {onnx_dir}")
        if not path.is_file():
            raise EngineFileError(f"engine file '{path}' ({name}) is missing")
        if expected:
            try:
                actual = _onnx_sha256(path)
            except Exception as exc:  # noqa: BLE001 - onnx's protobuf parser on a cut file
                raise EngineFileError(f"engine file '{path}' ({name}, {path.stat().st_size} bytes) is not a "
                                      f"readable ONNX model (truncated or corrupted): {type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
            if actual is not None and actual != expected:
                raise EngineFileError(
                    f"engine file '{path}' ({name}, {path.stat().st_size} bytes) does not match "
                    f"'{manifest_path}': sha256 {actual[:16]} != {str(expected)[:16]} (truncated, corrupted "
                    "or replaced after export; re-export it)")
    if model_dir is not None:
        identity = model_identity(model_dir)
        for key, field_name in (("config_hash", "model_config_hash"), ("revision", "model_revision")):
            recorded = manifest.get(field_name)
            if recorded and identity[key] != "unknown" and recorded != identity[key]:
                raise EngineFileError(
                    f"export '{onnx_dir}' was made for another model: {field_name} {recorded} in "
                    f"'{manifest_path}', the loaded model '{model_dir}' has {identity[key]}; re-export it")
    return manifest


def probe_backend(model, backend, rtol: float = BACKEND_PROBE_RTOL, ranges: dict | None = None) -> dict[str, float]:
    """Compare `backend` (before attach_backend) with the PyTorch modules of `model` (a
    SpatialMLLMForConditionalGeneration whose encoders are still loaded) on one fixed small
    input; returns {stage: relative L2 difference}; raises EngineFileError past `rtol`.
    `ranges`: the export manifest's {"frames"|"height"|"width": [min, opt, max]}; the probe uses
    the minimum (inside every TensorRT optimisation profile)."""
    import torch

    from ros2_spatial_mllm.backends.torch_backend import TorchBackend

    reference, where = TorchBackend(model), getattr(backend, "onnx_dir", None) or backend.name
    try:
        count, height, width = (int(ranges[k][0]) for k in ("frames", "height", "width"))
    except (TypeError, KeyError, IndexError, ValueError):
        count, height, width = _PROBE_FRAMES, _PROBE_SIDE, _PROBE_SIDE
    side = backend.patch * backend.merge
    rows = count // backend.temporal_patch * (height // side) * (width // side)
    generator = torch.Generator().manual_seed(1234)
    frames = torch.rand(1, count, 3, height, width, generator=generator)
    packed = torch.randn(rows, int(model.connector.merged_dim), generator=generator)
    errors = {}
    for stage, arg in (("connector", packed), ("spatial_encoder", frames), ("vision_encoder", frames)):
        try:
            got = getattr(backend, stage)(arg.to(reference.device))
        except Exception as exc:  # noqa: BLE001 - a wrong input shape is a config mismatch
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise EngineFileError(f"{stage} of '{where}' cannot run this model's input {tuple(arg.shape)} "
                                  f"(exported for another model config?): {type(exc).__name__}: {first}") from None
        want = getattr(reference, stage)(arg.to(reference.device))
        if tuple(got.shape) != tuple(want.shape):
            raise EngineFileError(f"{stage} of '{where}' gives shape {tuple(got.shape)}, this model "
                                  f"{tuple(want.shape)}: exported for another model config; re-export it")
        want = want.detach().float().cpu()
        diff = float(torch.linalg.vector_norm(got.detach().float().cpu() - want))
        errors[stage] = diff / max(float(torch.linalg.vector_norm(want)), 1e-12)
        if not errors[stage] <= rtol:
            raise EngineFileError(f"{stage} of '{where}' disagrees with the loaded model's weights "
                                  f"(relative difference {errors[stage]:.3g} > {rtol}): exported from "
                                  "another checkpoint; re-export it from this model")
    return errors


def load_with_verified_backend(model=None, preset: str = "tiny", device: str = "cpu", dtype=None,
                               backend: str = "torch", backend_options: dict | None = None):
    """`SpatialMLLM.load` for the node: with backend onnxruntime/tensorrt, check the export
    folder (check_onnx_export) and probe the backend against the PyTorch weights (probe_backend)
    before the backend replaces them; any mismatch raises EngineFileError, the model is freed.
    The returned SpatialMLLM has `backend_check` = {"backend", "onnx_dir", "probe": {...}} or None."""
    from ros2_spatial_mllm.inference import SpatialMLLM

    options = dict(backend_options or {})
    engine = SpatialMLLM.load(model, preset=preset, device=device, dtype=dtype,
                              decode_mode=options.pop("decode_mode", None),
                              numeric_answers=options.pop("numeric_answers", None))
    engine.backend_check = None
    if (backend or "torch").lower() in ("torch", "pytorch"):
        return engine
    from ros2_spatial_mllm.backends import attach_backend, get_backend, release_torch_encoders

    options = {"device": device, **options}
    try:
        manifest = (check_onnx_export(options["onnx_dir"], engine.info.get("model_dir"))
                    if options.get("onnx_dir") else {})
        runtime = get_backend(backend, engine.model, **options)
        try:
            probe = probe_backend(engine.model, runtime, ranges=manifest.get("ranges"))
        except Exception:
            runtime.close()
            raise
        attach_backend(engine.model, runtime)
        release_torch_encoders(engine.model, runtime)
    except Exception:
        engine.close()
        raise
    engine.backend_check = {"backend": runtime.name, "onnx_dir": str(options.get("onnx_dir", "")),
                            "probe": {k: round(v, 6) for k, v in probe.items()}}
    return engine
