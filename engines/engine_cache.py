"""On-disk cache of TensorRT engines, keyed by everything that makes an engine valid.

An engine (a serialized TensorRT plan) is only valid for the exact ONNX graph, TensorRT version,
GPU model + compute capability, precision and optimisation profiles it was built for. The cache
key is the sha256 of a canonical JSON of those six fields (`EngineKey.digest`).

Layout (one folder per component, e.g. spatial_encoder / vision_encoder / connector):

    <root>/<component>/<digest[:16]>.engine          serialized plan
    <root>/<component>/<digest[:16]>.manifest.json   key fields, digest, engine sha256 + size,
                                                     created_utc, builder notes

Policy (`resolve_engine`): an engine that is present and verified is returned; a missing,
mismatched or corrupt engine raises a clear error unless `allow_build=True` (the node parameter
`allow_engine_build`, the CLI `build` command), in which case it is built and stored. Nothing is
ever rebuilt silently at start-up.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

MANIFEST_VERSION = 1
KEY_FIELDS = ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability",
              "precision", "profiles")


class EngineCacheError(RuntimeError):
    """Base class of engine cache errors (messages are one line, user facing)."""


class EngineMissingError(EngineCacheError):
    """No engine for this key and building was not allowed."""


class EngineMismatchError(EngineCacheError):
    """An engine exists but was built for another key (other ONNX, TensorRT, GPU, precision...)."""


class CorruptEngineError(EngineCacheError):
    """Engine file truncated / hash or size differs from its manifest / manifest unreadable."""


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            h.update(block)
    return h.hexdigest()


def onnx_model_sha256(onnx_path: str | os.PathLike) -> str:
    """sha256 of an ONNX model file plus its external-data files (weights > 2 GB live there).

    External files are found from the graph's initializers (needs the `onnx` package); without
    it, only the .onnx file is hashed.
    """
    onnx_path = Path(onnx_path)
    h = hashlib.sha256(sha256_file(onnx_path).encode())
    for name in _external_data_files(onnx_path):
        h.update(name.encode())
        h.update(sha256_file(onnx_path.parent / name).encode())
    return h.hexdigest()


def _external_data_files(onnx_path: Path) -> list[str]:
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is pinned in requirements.txt
        return []
    model = onnx.load(str(onnx_path), load_external_data=False)
    names = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in init.external_data if e.key == "location")
    return sorted(names)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. `profiles` is canonical JSON (engines.profiles)."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100/H200)
    precision: str           # fp32 | fp16 | bf16 | int8 | fp8
    profiles: str

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def short(self) -> str:
        return self.digest()[:16]

    def differences(self, other: "EngineKey") -> list[str]:
        """Human-readable list of the fields that differ (`field: ours != theirs`)."""
        out = []
        for name in KEY_FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                if name == "onnx_sha256":
                    a, b = a[:12], b[:12]
                elif name == "profiles":
                    a, b = "<requested ranges>", "<engine ranges>"
                out.append(f"{name}: {a} != {b}")
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "EngineKey":
        missing = [k for k in KEY_FIELDS if k not in d]
        if missing:
            raise KeyError(f"engine key misses fields {missing}")
        return cls(**{k: str(d[k]) for k in KEY_FIELDS})


@dataclass
class CachedEngine:
    """A verified engine on disk."""

    component: str
    key: EngineKey
    engine_path: Path
    manifest_path: Path
    manifest: dict = field(default_factory=dict)

    def read_bytes(self) -> bytes:
        return self.engine_path.read_bytes()


class EngineCache:
    """Engines under `root/<component>/` with a JSON manifest next to each."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def paths(self, component: str, key: EngineKey) -> tuple[Path, Path]:
        _check_component(component)
        folder = self.root / component
        return folder / f"{key.short}.engine", folder / f"{key.short}.manifest.json"

    def store(self, component: str, key: EngineKey, engine_bytes: bytes,
              notes: Optional[dict] = None) -> CachedEngine:
        """Write engine + manifest atomically (temp file + rename; engine first, manifest last)."""
        if not engine_bytes:
            raise CorruptEngineError(f"refusing to store an empty engine for '{component}'")
        engine_path, manifest_path = self.paths(component, key)
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "component": component,
            "key": asdict(key),
            "key_digest": key.digest(),
            "engine_file": engine_path.name,
            "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
            "engine_size": len(engine_bytes),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "notes": notes or {},
        }
        _atomic_write(engine_path, engine_bytes)
        _atomic_write(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())
        return CachedEngine(component, key, engine_path, manifest_path, manifest)

    def verify_file(self, engine_path: str | os.PathLike,
                    expected_key: Optional[EngineKey] = None) -> CachedEngine:
        """Check an engine against its manifest (and, if given, against the expected key).

        Raises CorruptEngineError (missing/unreadable manifest, size or sha256 differs, i.e.
        truncated or overwritten) or EngineMismatchError (key differs, with the fields listed).
        """
        engine_path = Path(engine_path)
        manifest_path = engine_path.with_name(engine_path.name[: -len(".engine")]
                                              + ".manifest.json") \
            if engine_path.name.endswith(".engine") else engine_path.with_suffix(".manifest.json")
        if not engine_path.is_file():
            raise EngineMissingError(f"engine file not found: {engine_path}")
        manifest = _read_manifest(manifest_path)
        try:
            key = EngineKey.from_dict(manifest["key"])
            size, digest = int(manifest["engine_size"]), str(manifest["engine_sha256"])
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptEngineError(f"manifest {manifest_path} is incomplete: {e}") from None
        if manifest.get("key_digest") != key.digest():
            raise CorruptEngineError(f"manifest {manifest_path}: key_digest does not match its key")
        actual_size = engine_path.stat().st_size
        if actual_size != size:
            kind = "truncated" if actual_size < size else "larger than recorded"
            raise CorruptEngineError(
                f"engine {engine_path} is {kind}: {actual_size} bytes, manifest says {size}; "
                f"rebuild it (spatial-mllm-engines build) or delete it")
        if sha256_file(engine_path) != digest:
            raise CorruptEngineError(
                f"engine {engine_path} sha256 differs from its manifest (file modified or "
                f"corrupt); rebuild it (spatial-mllm-engines build) or delete it")
        if expected_key is not None and key != expected_key:
            diffs = "; ".join(expected_key.differences(key))
            raise EngineMismatchError(
                f"engine {engine_path} was built for another configuration ({diffs}); "
                f"rebuild with spatial-mllm-engines build or set allow_engine_build:=true")
        component = str(manifest.get("component", engine_path.parent.name))
        return CachedEngine(component, key, engine_path, manifest_path, manifest)

    def lookup(self, component: str, key: EngineKey) -> Optional[CachedEngine]:
        """The verified engine for `key`, or None when no file exists. Corrupt -> raises."""
        engine_path, _ = self.paths(component, key)
        if not engine_path.exists():
            return None
        return self.verify_file(engine_path, expected_key=key)

    def entries(self, component: str) -> list[dict]:
        """Manifests of every engine of a component (unreadable ones reported as errors)."""
        folder = self.root / component
        out = []
        for manifest_path in sorted(folder.glob("*.manifest.json")) if folder.is_dir() else []:
            try:
                out.append(_read_manifest(manifest_path))
            except CorruptEngineError as e:
                out.append({"error": str(e), "manifest_path": str(manifest_path)})
        return out

    def remove(self, component: str, key: EngineKey) -> bool:
        removed = False
        for p in self.paths(component, key):
            if p.exists():
                p.unlink()
                removed = True
        return removed


def resolve_engine(cache: EngineCache, component: str, key: EngineKey,
                   build: Callable[[], bytes], allow_build: bool = False,
                   notes: Optional[dict] = None) -> CachedEngine:
    """Return the engine for `key`; build it only when `allow_build` is True.

    Without allow_build: a corrupt engine raises CorruptEngineError; no engine for this key but
    engines for other keys raises EngineMismatchError naming the differing fields; nothing at all
    raises EngineMissingError with the command that builds it.
    """
    try:
        hit = cache.lookup(component, key)
    except EngineCacheError:
        if not allow_build:
            raise
        hit = None
    if hit is not None:
        return hit
    if not allow_build:
        others = [m for m in cache.entries(component) if "key" in m]
        if others:
            try:
                nearest = min((EngineKey.from_dict(m["key"]) for m in others),
                              key=lambda k: len(key.differences(k)))
                diffs = "; ".join(key.differences(nearest))
            except KeyError:
                diffs = "unreadable key"
            raise EngineMismatchError(
                f"no '{component}' engine for this configuration in {cache.root} "
                f"(closest cached engine differs: {diffs}); build it with "
                f"`spatial-mllm-engines build` or set allow_engine_build:=true")
        raise EngineMissingError(
            f"no '{component}' engine in {cache.root}; build it with `spatial-mllm-engines "
            f"build --component {component}` or set allow_engine_build:=true")
    engine_bytes = build()
    return cache.store(component, key, bytes(engine_bytes), notes=notes)


def _check_component(component: str) -> None:
    if not component or "/" in component or component.startswith("."):
        raise ValueError(f"bad component name '{component}'")


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise CorruptEngineError(f"manifest missing next to engine: {path}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptEngineError(f"manifest {path} is unreadable: {e}") from None
    if not isinstance(manifest, dict):
        raise CorruptEngineError(f"manifest {path} is not a JSON object")
    return manifest


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
