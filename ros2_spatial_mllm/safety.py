"""Safe model loading: local-directory checks, offline enforcement, model identity (no torch, no rclpy).

    from ros2_spatial_mllm.safety import check_model_dir, enforce_offline, model_identity
    enforce_offline()                       # before anything touches transformers / huggingface_hub
    report = check_model_dir("/models/Spatial-MLLM-v1.1-Instruct-135K")   # raises UnsafeModelError
    report.config_hash, report.revision     # for /diagnostics and answers

``check_model_dir(path)`` reads only file metadata and the safetensors *headers* (first 8 bytes
+ a JSON header per shard), never the tensor data and never a pickle, so it costs milliseconds
even for a multi-GB checkpoint. It refuses, with a message naming the file and the numbers:
  * a path that does not exist, is not a directory, or has no / an unreadable ``config.json``;
  * weights that are not safetensors: an index that names ``*.bin``/``*.pt``/``*.pkl`` shards, or a
    directory whose only weights are pickles (``*.bin *.pt *.pth *.pkl *.ckpt``). Pickles next to
    safetensors (e.g. ``training_args.bin``) are never loaded and only listed in ``ignored_pickles``;
  * half-written downloads: ``*.incomplete`` / ``*.part`` / ``*.tmp`` files, a shard named by
    ``model.safetensors.index.json`` that is missing, a shard whose 8-byte header length or JSON
    header is cut off, a shard whose tensor data is shorter (or longer) than its header declares,
    tensors whose byte range disagrees with dtype x shape, index keys absent from their shard;
  * shard names that escape the directory (absolute, ``..``, ``/``).

``enforce_offline()`` sets ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` /
``HF_DATASETS_OFFLINE=1`` (and telemetry off) and flips the already-imported
``huggingface_hub.constants.HF_HUB_OFFLINE`` flag, so any Hub call raises
``OfflineModeIsEnabled`` at once instead of touching the network.

``SpatialMLLM.load`` calls enforce_offline() and check_model_dir() before it reads any weight, so
every caller (CLI, node, training, eval) gets these checks; the model's ``info`` carries
``config_hash``/``revision``/``model_check``.

``config_hash(model_dir)``: sha256 (16 hex) of config.json's canonical JSON (sorted keys), so
whitespace does not matter and any config change does. ``model_revision(model_dir)``: the Hub
commit when the directory is a Hub cache snapshot (``.../snapshots/<40 hex>``), a ``revision``
/ ``REVISION`` file's first line when present, else ``"weights-" + sha256(shard headers)[:16]``
(changes whenever a tensor's name, dtype, shape or offset changes).

Engine files (backend onnxruntime / tensorrt), checked at load time, never silently used:
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
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["UnsafeModelError", "ModelDirReport", "check_model_dir", "read_safetensors_header",
           "enforce_offline", "config_hash", "model_revision", "model_identity",
           "PICKLE_SUFFIXES", "EngineFileError", "check_onnx_export", "probe_backend",
           "load_with_verified_backend", "BACKEND_PROBE_RTOL"]

INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
PARTIAL_SUFFIXES = (".incomplete", ".part", ".partial", ".tmp", ".download")
MAX_HEADER_BYTES = 100 * 1024 * 1024          # the safetensors format's own limit
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
                "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
                "I64": 8, "U64": 8, "F64": 8, "C64": 8}
_SNAPSHOT = re.compile(r"^[0-9a-f]{40}$")


class UnsafeModelError(ValueError):
    """The model directory is missing, incomplete or unsafe to load; the message says why."""


@dataclass
class ModelDirReport:
    """Outcome of ``check_model_dir``: what would be loaded and the model's identity."""

    path: Path
    weight_files: list[Path]
    num_tensors: int
    tensor_bytes: int
    config_hash: str
    revision: str
    ignored_pickles: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain types, for /diagnostics key/values and logs."""
        return {"model_dir": str(self.path), "config_hash": self.config_hash, "revision": self.revision,
                "weight_files": len(self.weight_files), "num_tensors": self.num_tensors,
                "tensor_bytes": self.tensor_bytes}


def read_safetensors_header(path: str | Path) -> tuple[dict, int]:
    """(header dict without ``__metadata__``, data bytes declared) of one safetensors file.

    Raises UnsafeModelError for a truncated or malformed header, or when the file's data section
    is not exactly the size the tensor offsets declare (half-written or padded file).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise UnsafeModelError(f"{path.name}: truncated safetensors file ({size} bytes, no 8-byte header length)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES or header_len > size - 8:
            raise UnsafeModelError(f"{path.name}: safetensors header length {header_len} does not fit the "
                                   f"file ({size} bytes): truncated or not a safetensors file")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeModelError(f"{path.name}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise UnsafeModelError(f"{path.name}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data_bytes, end_max = size - 8 - header_len, 0
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = 1
            for dim in shape:
                count *= int(dim)
            expected = count * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise UnsafeModelError(f"{path.name}: malformed entry for tensor {name!r}: {entry!r}"[:300]) from None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise UnsafeModelError(f"{path.name}: tensor {name!r} has bad data_offsets {[begin, end]}")
        if end - begin != expected:
            raise UnsafeModelError(f"{path.name}: tensor {name!r} ({dtype} {shape}) needs {expected} bytes, "
                                   f"its offsets give {end - begin}")
        end_max = max(end_max, end)
    if end_max != data_bytes:
        kind = "truncated (half-written?)" if end_max > data_bytes else "has trailing bytes"
        raise UnsafeModelError(f"{path.name}: {kind}: header declares {end_max} bytes of tensor data, "
                               f"the file holds {data_bytes}")
    return header, end_max


def _load_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeModelError(f"{what} '{path}' is unreadable or not JSON (half-written?): {exc}") from None


def _safe_shard_name(path: Path, name) -> Path:
    if not isinstance(name, str) or not name or name.startswith(("/", "\\")) or ".." in name \
            or "/" in name or "\\" in name:
        raise UnsafeModelError(f"'{path / INDEX_FILE}': shard name {name!r} is not a plain file name")
    if not name.endswith(".safetensors"):
        raise UnsafeModelError(f"'{path / INDEX_FILE}' names {name!r}: only safetensors shards are loaded, "
                               "never pickles (.bin/.pt/.pkl); convert the checkpoint to safetensors")
    return path / name


def check_model_dir(path: str | Path) -> ModelDirReport:
    """Check a local checkpoint directory without loading it (see module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UnsafeModelError(f"model directory '{path}' does not exist (loading is offline only: "
                               "download the checkpoint yourself and pass its local directory)")
    if not path.is_dir():
        raise UnsafeModelError(f"model path '{path}' is not a directory")
    files = sorted(p for p in path.iterdir() if p.is_file())
    partial = [p.name for p in files if p.name.endswith(PARTIAL_SUFFIXES)]
    if partial:
        raise UnsafeModelError(f"'{path}' holds unfinished downloads: {partial[:5]}")
    if not (path / "config.json").is_file():
        raise UnsafeModelError(f"'{path}' has no config.json: not a model checkpoint directory")
    config = _load_json(path / "config.json", "config")
    if not isinstance(config, dict):
        raise UnsafeModelError(f"'{path / 'config.json'}' is not a JSON object")
    pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    index_path, warnings = path / INDEX_FILE, []
    if index_path.is_file():
        index = _load_json(index_path, "index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise UnsafeModelError(f"'{index_path}' has no weight_map")
        shard_keys: dict[str, list[str]] = {}
        for key, name in weight_map.items():
            shard_keys.setdefault(name, []).append(key)
        shards = [_safe_shard_name(path, name) for name in sorted(shard_keys)]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise UnsafeModelError(f"'{path}': shards listed in {INDEX_FILE} are missing "
                                   f"(incomplete download?): {missing[:5]}")
    else:
        shard_keys, shards = {}, sorted(p for p in files if p.suffix == ".safetensors")
        if not shards:
            hint = f" (found pickle weights {pickles[:3]}: convert them to safetensors)" if pickles else ""
            raise UnsafeModelError(f"'{path}' has no safetensors weights{hint}")
    num_tensors = tensor_bytes = 0
    for shard in shards:
        header, data_bytes = read_safetensors_header(shard)
        absent = [k for k in shard_keys.get(shard.name, []) if k not in header]
        if absent:
            raise UnsafeModelError(f"{shard.name}: {len(absent)} tensor(s) named by the index are not in the "
                                   f"shard, e.g. {absent[0]!r}")
        num_tensors += len(header)
        tensor_bytes += data_bytes
    if index_path.is_file():
        total = (index.get("metadata") or {}).get("total_size")
        if isinstance(total, int) and total != tensor_bytes:
            warnings.append(f"index metadata total_size {total} != {tensor_bytes} bytes in the shards")
    return ModelDirReport(path=path, weight_files=shards, num_tensors=num_tensors, tensor_bytes=tensor_bytes,
                          config_hash=config_hash(path), revision=model_revision(path, shards),
                          ignored_pickles=pickles, warnings=warnings)


def enforce_offline() -> dict[str, str]:
    """Make every Hugging Face Hub call fail at once (see module docstring). Returns the
    environment variables set. Safe to call more than once, before or after imports."""
    values = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
              "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
    os.environ.update(values)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:   # imported already: its flag was read from the environment at import
        constants.HF_HUB_OFFLINE = True
    return values


def config_hash(model_dir: str | Path) -> str:
    """sha256[:16] of config.json as canonical JSON (sorted keys, no whitespace)."""
    config = _load_json(Path(model_dir) / "config.json", "config")
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


def model_revision(model_dir: str | Path, shards: list[Path] | None = None) -> str:
    """Hub snapshot commit, a revision file's content, or a hash of the shard headers."""
    path = Path(model_dir).expanduser()
    resolved = path.resolve()
    if resolved.parent.name == "snapshots" and _SNAPSHOT.match(resolved.name):
        return resolved.name
    for name in ("revision", "REVISION", "revision.txt"):
        if (path / name).is_file():
            line = (path / name).read_text(errors="replace").strip().splitlines()
            if line and line[0].strip():
                return line[0].strip()[:64]
    digest = hashlib.sha256()
    for shard in shards if shards is not None else sorted(path.glob("*.safetensors")):
        with open(shard, "rb") as handle:
            prefix = handle.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            digest.update(shard.name.encode() + prefix + handle.read(min(length, MAX_HEADER_BYTES)))
    return "weights-" + digest.hexdigest()[:16]


def model_identity(model_dir: str | Path | None) -> dict[str, str]:
    """{"config_hash", "revision"} for /diagnostics and answers; never raises (errors -> "unknown")."""
    if model_dir is None:
        return {"config_hash": "unknown", "revision": "unknown"}
    out = {}
    for key, fn in (("config_hash", config_hash), ("revision", model_revision)):
        try:
            out[key] = fn(model_dir)
        except (OSError, ValueError, struct.error):
            out[key] = "unknown"
    return out


# ---------------------------------------------------------------------------- engine files
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

    engine = SpatialMLLM.load(model, preset=preset, device=device, dtype=dtype)
    engine.backend_check = None
    if (backend or "torch").lower() in ("torch", "pytorch"):
        return engine
    from ros2_spatial_mllm.backends import attach_backend, get_backend, release_torch_encoders

    options = {"device": device, **(backend_options or {})}
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
