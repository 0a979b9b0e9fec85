"""Build TensorRT engines from ONNX with the `tensorrt` Python API (offline, never at start-up).

    spatial-mllm-engines build --onnx out/spatial_encoder.onnx --component spatial_encoder \
        --precision fp16 --frames 1:16:32 --height 224:518:518 --width 224:518:518

Covers TensorRT 10.x (JetPack 6 ships 10.3) and 11.x:
  * precision: TensorRT 10 uses builder flags (FP16 / BF16 / INT8 / FP8) on a weakly typed
    network; INT8 there can be calibrated with `FrameBatchCalibrator` (IInt8EntropyCalibrator2)
    fed by calibration frames. TensorRT 11 removed those flags and the calibrator: networks are
    strongly typed, so fp16/bf16 must be in the ONNX already (export.py --dtype fp16|bf16) and
    INT8/FP8 need Q/DQ nodes (`quantize_onnx` runs NVIDIA ModelOpt on the same calibration frames).
  * optimisation profiles from engines.profiles (frame-count / image-size ranges);
  * timing cache file (loaded before, saved after a build: later builds take seconds);
  * progress output through IProgressMonitor (TensorRT >= 10).

Everything importing `tensorrt` does so lazily; without it `require_tensorrt()` raises
TensorRTUnavailableError("needs TensorRT + CUDA GPU ..."). Pure-Python checks (profiles against
the ONNX inputs, precision plan) are tested on CPU.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from engines.engine_cache import EngineKey, _atomic_write, onnx_model_sha256
from engines.profiles import OptimizationProfile, profiles_to_json

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
CalibrationBatch = Mapping[str, np.ndarray]  # input name -> array shaped like the engine input


class TensorRTUnavailableError(RuntimeError):
    """TensorRT (or a CUDA GPU) is missing on this machine."""


class EngineBuildError(RuntimeError):
    """The ONNX could not be parsed or TensorRT failed to build the engine."""


def require_tensorrt() -> Any:
    """Import and return the `tensorrt` module, or raise TensorRTUnavailableError."""
    try:
        import tensorrt as trt  # noqa: WPS433 (lazy: heavy, GPU-only)
    except Exception as e:  # ImportError, or OSError when CUDA libraries are missing
        raise TensorRTUnavailableError(
            f"needs TensorRT + CUDA GPU: cannot import tensorrt ({type(e).__name__}: {e}); "
            "install the tensorrt wheel matching your CUDA (JetPack ships it)") from None
    return trt


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def has_weak_typing(trt: Any) -> bool:
    """TensorRT 10 has precision builder flags; 11 removed them (strong typing only)."""
    return hasattr(trt, "BuilderFlag") and hasattr(trt.BuilderFlag, "FP16")


@dataclass
class PrecisionPlan:
    """What the builder does for a requested precision on a TensorRT major version."""

    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag to set
    strongly_typed: bool            # create the network STRONGLY_TYPED
    use_calibrator: bool            # TensorRT 10 INT8 implicit calibration
    onnx_requirement: str           # "" or what the ONNX must already contain


def plan_precision(precision: str, weak_typing: bool, has_calibration: bool,
                   onnx_float_types: set[str], onnx_has_qdq: bool) -> PrecisionPlan:
    """Decide flags / typing for `precision` (pure; raises ValueError with the fix).

    onnx_float_types: element types of the ONNX initializers ({"float", "float16", "bfloat16"}).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    if precision in ("int8", "fp8") and onnx_has_qdq:
        flags = (precision.upper(), "FP16") if weak_typing else ()
        return PrecisionPlan(flags, not weak_typing, False, "")
    if weak_typing:
        if precision == "fp32":
            return PrecisionPlan((), False, False, "")
        if precision in ("fp16", "bf16"):
            return PrecisionPlan((precision.upper(),), False, False, "")
        if precision == "int8":
            if not has_calibration:
                raise ValueError("int8 without Q/DQ nodes needs calibration frames "
                                 "(build --calib-scenes N / --calib-dir) or a Q/DQ ONNX "
                                 "(spatial-mllm-engines quantize --mode int8)")
            return PrecisionPlan(("INT8", "FP16"), False, True, "")
        raise ValueError("fp8 needs a Q/DQ ONNX (spatial-mllm-engines quantize --mode fp8, "
                         "calibrated on data-engine scenes); TensorRT has no fp8 calibrator")
    # TensorRT 11: strongly typed, precision must be in the graph
    wanted = {"fp32": "float", "fp16": "float16", "bf16": "bfloat16"}.get(precision)
    if wanted is None:
        raise ValueError(f"TensorRT 11 builds {precision} only from a Q/DQ ONNX: run "
                         f"spatial-mllm-engines quantize --mode {precision} (NVIDIA ModelOpt)")
    if wanted not in onnx_float_types:
        raise ValueError(f"TensorRT 11 is strongly typed: a {precision} engine needs a {precision} "
                         f"ONNX (export with --dtype {precision}); this ONNX has "
                         f"{sorted(onnx_float_types) or 'no float'} weights")
    return PrecisionPlan((), True, False, f"{wanted} weights")


def onnx_inputs_and_types(onnx_path: str | os.PathLike) -> tuple[dict, set[str], bool]:
    """(input name -> dims with -1 for symbolic, initializer float types, has Q/DQ nodes)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    init_names = {i.name for i in model.graph.initializer}
    inputs = {}
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                     for d in inp.type.tensor_type.shape.dim)
        inputs[inp.name] = dims
    names = {onnx.TensorProto.FLOAT: "float", onnx.TensorProto.FLOAT16: "float16",
             onnx.TensorProto.BFLOAT16: "bfloat16"}
    float_types = {names[i.data_type] for i in model.graph.initializer if i.data_type in names}
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    return inputs, float_types, has_qdq


def check_profiles_against_inputs(inputs: Mapping[str, Sequence[int]],
                                  profiles: Sequence[OptimizationProfile]) -> None:
    """Every dynamic input (a -1 dim) must be in every profile; static dims must match."""
    if not profiles:
        if any(-1 in dims for dims in inputs.values()):
            raise ValueError("the ONNX has dynamic inputs: give at least one optimisation profile")
        return
    for i, prof in enumerate(profiles):
        for name, dims in inputs.items():
            if name not in prof.input_names:
                if -1 in dims:
                    raise ValueError(f"profile {i} has no range for dynamic input '{name}' {dims}")
                continue
            rng = prof.range_of(name)
            if len(rng.min_shape) != len(dims):
                raise ValueError(f"profile {i}: input '{name}' has rank {len(dims)}, "
                                 f"range has rank {len(rng.min_shape)}")
            for axis, d in enumerate(dims):
                if d != -1 and not (rng.min_shape[axis] == rng.max_shape[axis] == d):
                    raise ValueError(f"profile {i}: input '{name}' axis {axis} is fixed at {d} "
                                     f"in the ONNX but the range is {rng.min_shape[axis]}.."
                                     f"{rng.max_shape[axis]}")
        unknown = set(prof.input_names) - set(inputs)
        if unknown:
            raise ValueError(f"profile {i} names inputs the ONNX does not have: {sorted(unknown)}")


def current_gpu() -> tuple[str, str]:
    """(GPU name, compute capability "M.m") of the current CUDA device, via torch."""
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("needs TensorRT + CUDA GPU: torch sees no CUDA device")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


def make_engine_key(onnx_path: str | os.PathLike, precision: str,
                    profiles: Sequence[OptimizationProfile],
                    tensorrt_version: Optional[str] = None,
                    gpu: Optional[tuple[str, str]] = None) -> EngineKey:
    """Cache key for this ONNX on this machine (TensorRT version and GPU detected if not given)."""
    if tensorrt_version is None:
        tensorrt_version = str(require_tensorrt().__version__)
    gpu_name, capability = gpu if gpu is not None else current_gpu()
    return EngineKey(onnx_model_sha256(onnx_path), tensorrt_version, gpu_name, capability,
                     precision, profiles_to_json(profiles))


@dataclass
class BuildOptions:
    """Options of one engine build (see module docstring for precision rules)."""

    precision: str = "fp16"
    profiles: Sequence[OptimizationProfile] = ()
    workspace_bytes: int = 4 << 30
    timing_cache_path: Optional[str] = None
    calibration_batches: Optional[Iterable[CalibrationBatch]] = None
    calibration_cache_path: Optional[str] = None
    optimization_level: int = 3          # 0..5, TensorRT default 3
    progress: bool = True
    extra: dict = field(default_factory=dict)


def build_engine(onnx_path: str | os.PathLike, options: BuildOptions) -> bytes:
    """Parse the ONNX, apply precision/profiles/caches and return the serialized engine."""
    trt = require_tensorrt()
    current_gpu()
    inputs, float_types, has_qdq = onnx_inputs_and_types(onnx_path)
    check_profiles_against_inputs(inputs, options.profiles)
    plan = plan_precision(options.precision, has_weak_typing(trt),
                          options.calibration_batches is not None, float_types, has_qdq)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    config.builder_optimization_level = int(options.optimization_level)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    trt_profiles = []
    for prof in options.profiles:
        p = builder.create_optimization_profile()
        for r in prof.ranges:
            p.set_shape(r.name, r.min_shape, r.opt_shape, r.max_shape)
        config.add_optimization_profile(p)
        trt_profiles.append(p)
    if plan.use_calibrator:
        config.int8_calibrator = make_calibrator(trt, options.calibration_batches,
                                                 options.calibration_cache_path)
        if trt_profiles:
            config.set_calibration_profile(trt_profiles[0])
    timing_cache = _load_timing_cache(config, options.timing_cache_path)
    if options.progress and hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = make_progress_monitor(trt)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path} (see the log above)")
    if options.timing_cache_path and timing_cache is not None:
        Path(options.timing_cache_path).parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(Path(options.timing_cache_path), bytes(config.get_timing_cache().serialize()))
    print(f"[trt] built {Path(onnx_path).name} ({options.precision}) in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return bytes(serialized)


def _load_timing_cache(config: Any, path: Optional[str]) -> Any:
    if not path:
        return None
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def make_progress_monitor(trt: Any) -> Any:
    """IProgressMonitor printing phase starts / ends with step counts to stderr."""

    class StderrProgress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._depth: dict[str, int] = {}
            self._t0: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._depth[phase_name] = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self._t0[phase_name] = time.perf_counter()
            print(f"[trt] {'  ' * self._depth[phase_name]}{phase_name} ({num_steps} steps)",
                  file=sys.stderr)

        def step_complete(self, phase_name, step):
            return True  # keep building (False would cancel)

        def phase_finish(self, phase_name):
            dt = time.perf_counter() - self._t0.pop(phase_name, time.perf_counter())
            print(f"[trt] {'  ' * self._depth.pop(phase_name, 0)}{phase_name} done {dt:.1f} s",
                  file=sys.stderr)

    return StderrProgress()


class CalibrationFeeder:
    """Turns an iterable of {input name: numpy batch} into CUDA buffers one batch at a time.

    Pure bookkeeping (tested on CPU with device="cpu"); the TensorRT calibrator wraps it.
    """

    def __init__(self, batches: Iterable[CalibrationBatch], device: str = "cuda"):
        self._it = iter(batches)
        self.device = device
        self.count = 0
        self._alive: dict = {}

    def next_pointers(self, names: Sequence[str]) -> Optional[list[int]]:
        import torch

        batch = next(self._it, None)
        if batch is None:
            return None
        missing = [n for n in names if n not in batch]
        if missing:
            raise KeyError(f"calibration batch {self.count} lacks inputs {missing}")
        self._alive = {n: torch.from_numpy(np.ascontiguousarray(batch[n])).to(self.device)
                       for n in names}  # kept alive until the next batch
        self.count += 1
        return [int(self._alive[n].data_ptr()) for n in names]


def make_calibrator(trt: Any, batches: Iterable[CalibrationBatch],
                    cache_path: Optional[str]) -> Any:
    """IInt8EntropyCalibrator2 (TensorRT 10 only) over calibration frames; cache file optional."""
    feeder = CalibrationFeeder(batches)

    class FrameBatchCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return feeder.next_pointers(names)

        def read_calibration_cache(self):
            if cache_path and Path(cache_path).is_file():
                return Path(cache_path).read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if cache_path:
                _atomic_write(Path(cache_path), bytes(cache))

    return FrameBatchCalibrator()


def quantize_onnx(onnx_path: str, output_path: str, mode: str,
                  calibration_batches: Iterable[CalibrationBatch], max_batches: int = 64) -> str:
    """Insert Q/DQ nodes (int8 / fp8) with NVIDIA ModelOpt, calibrated on the given frames.

    Needed for INT8/FP8 on TensorRT 11 (and for FP8 on 10). ModelOpt is optional: without it
    this raises TensorRTUnavailableError with the install hint. Not verified in this repo (no GPU).
    """
    if mode not in ("int8", "fp8"):
        raise ValueError(f"quantize mode must be int8 or fp8, got {mode}")
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError:
        raise TensorRTUnavailableError(
            "needs TensorRT + CUDA GPU and NVIDIA ModelOpt (pip install nvidia-modelopt[onnx]) "
            "to insert Q/DQ nodes") from None
    stacked: dict[str, list] = {}
    for i, batch in enumerate(calibration_batches):
        if i >= max_batches:
            break
        for name, arr in batch.items():
            stacked.setdefault(name, []).append(np.asarray(arr))
    if not stacked:
        raise ValueError("no calibration batches given")
    calib = {k: np.concatenate(v, axis=0) for k, v in stacked.items()}
    from engines.engine_cache import _external_data_files

    quantize(onnx_path=onnx_path, quantize_mode=mode, calibration_data=calib,
             output_path=output_path,  # > 2 GB graphs (official size) keep external weights
             use_external_data_format=bool(_external_data_files(Path(onnx_path))))
    return output_path
