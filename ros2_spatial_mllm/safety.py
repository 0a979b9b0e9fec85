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

Engine files (ONNX exports, TensorRT engines) are checked by ``engine_checks``.
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
           "PICKLE_SUFFIXES"]

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
