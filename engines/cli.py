"""spatial-mllm-engines: export ONNX, build/check TensorRT engines (offline, never at start-up).

    spatial-mllm-engines export --preset tiny --out engines_out/tiny          # tiny CPU run
    spatial-mllm-engines export --model ~/models/Spatial-MLLM --dtype fp16 --out engines_out/fp16
    spatial-mllm-engines build --onnx-dir engines_out/fp16 --precision fp16 \
        --timing-cache ~/.cache/ros2_spatial_mllm/timing.cache            # GPU + TensorRT
    spatial-mllm-engines quantize --onnx-dir engines_out/fp16 --out engines_out/fp8 --mode fp8 \
        --calib-scenes 16                                                  # NVIDIA ModelOpt
    spatial-mllm-engines status --onnx-dir engines_out/tiny --precision fp16 \
        --trt-version 10.3.0 --gpu-name Orin --compute-capability 8.7     # works on CPU
    spatial-mllm-engines verify ~/.cache/ros2_spatial_mllm/engines/connector/<key>.engine

Errors: one line on stderr, exit code 1 (2 for usage errors).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

DEFAULT_CACHE = "~/.cache/ros2_spatial_mllm/engines"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spatial-mllm-engines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="export encoders + connector to ONNX")
    e.add_argument("--preset", default="tiny", choices=("tiny", "official"),
                   help="without --model: tiny = the embedded tiny checkpoint (what the node "
                   "loads by default), official = official sizes with random weights")
    e.add_argument("--model", help="local Spatial-MLLM checkpoint directory")
    e.add_argument("--out", required=True, help="output folder (ONNX + export_manifest.json)")
    e.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="weight/activation dtype baked into the ONNX (TensorRT 11 needs it)")
    e.add_argument("--components", default="spatial_encoder,spatial_geometry,vision_encoder,"
                   "connector", help="comma-separated components")
    e.add_argument("--frames", default="2:16:32", help="frame-count range MIN:OPT:MAX (even)")
    e.add_argument("--height", default="56:476:644",
                   help="image height range (x28; 56 = the side of Qwen's min_pixels)")
    e.add_argument("--width", default="56:644:644", help="image width range (x28)")
    b = sub.add_parser("build", help="build + cache TensorRT engines (needs TensorRT + GPU)")
    _engine_args(b)
    b.add_argument("--timing-cache", help="timing cache file, read and updated "
                   "(default: <cache-dir>/timing.cache)")
    b.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace (GiB)")
    b.add_argument("--calib-dir", help="folder of .npy/.npz calibration batches (int8)")
    b.add_argument("--calib-scenes", type=int, default=0,
                   help="render N procedural scenes with the data engine as calibration (int8)")
    q = sub.add_parser("quantize", help="copy an export with INT8/FP8 Q/DQ encoders (ModelOpt), "
                       "calibrated on data-engine scenes (TensorRT 11 int8, any fp8)")
    q.add_argument("--onnx-dir", required=True, help="output folder of `export` (float)")
    q.add_argument("--out", required=True, help="new export folder with Q/DQ components")
    q.add_argument("--mode", default="fp8", choices=("int8", "fp8"), help="quantized type")
    q.add_argument("--components", default="spatial_encoder,spatial_geometry,vision_encoder",
                   help="comma-separated components to quantize (others are copied)")
    q.add_argument("--calib-scenes", type=int, default=16,
                   help="render N procedural scenes with the data engine as calibration")
    q.add_argument("--calib-dir", help="folder of .npy/.npz calibration batches instead")
    s = sub.add_parser("status", help="which engines are cached / missing / stale")
    _engine_args(s)
    s.add_argument("--trt-version", help="TensorRT version of the target (default: installed)")
    s.add_argument("--gpu-name", help="GPU name of the target (default: current CUDA device)")
    s.add_argument("--compute-capability", help="e.g. 8.7 (Orin), 9.0 (H100)")
    v = sub.add_parser("verify", help="check an engine file against its manifest")
    v.add_argument("engine", help="path to a .engine file")
    return p


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx-dir", required=True, help="output folder of `export`")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="engine cache root")
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16", "int8", "fp8"),
                   help="engine precision")
    p.add_argument("--components", default="", help="comma-separated subset (default: all)")


def cmd_export(args) -> int:
    from engines.export import ExportRanges, export_all
    from engines.profiles import parse_range

    ranges = ExportRanges(parse_range(args.frames), parse_range(args.height), parse_range(args.width))
    ranges.validate()
    model_dir = args.model
    if model_dir is None and args.preset == "tiny":
        from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
        model_dir = TINY_ASSETS_DIR
    if model_dir is not None:
        from ros2_spatial_mllm.model.checkpoint import load_checkpoint
        model, _ = load_checkpoint(model_dir)
        preset = "checkpoint" if args.model else "tiny"
    else:
        from engines.model_factory import build_model
        model, preset = build_model(args.preset), args.preset
    components = [c for c in args.components.split(",") if c]
    manifest = export_all(model, args.out, components=components, dtype=args.dtype,
                          ranges=ranges, preset=preset, model_dir=model_dir)
    for name, entry in manifest["components"].items():
        print(f"{name}: {args.out}/{entry['onnx']} ({entry['export_s']} s)")
    return 0


def _selected(plan, components: str):
    wanted = [c for c in components.split(",") if c]
    unknown = set(wanted) - {c for c, _, _ in plan}
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}")
    return [p for p in plan if not wanted or p[0] in wanted]


def cmd_build(args) -> int:
    from engines.engine_cache import EngineCache, resolve_engine
    from engines.trt_builder import BuildOptions, build_engine, make_engine_key
    from ros2_spatial_mllm.backends.tensorrt_backend import engine_plan

    cache = EngineCache(args.cache_dir)
    timing_cache = args.timing_cache or str(cache.root / "timing.cache")
    for component, onnx_path, profiles in _selected(engine_plan(args.onnx_dir, require=()), args.components):
        calib = _calibration(args, profiles)
        options = BuildOptions(precision=args.precision, profiles=profiles,
                               timing_cache_path=timing_cache,
                               workspace_bytes=int(args.workspace_gb * (1 << 30)),
                               calibration_batches=calib)
        key = make_engine_key(onnx_path, args.precision, profiles)
        entry = resolve_engine(cache, component, key, lambda: build_engine(onnx_path, options),
                               allow_build=True, notes={"onnx": str(onnx_path)})
        print(f"{component}: {entry.engine_path}")
    return 0


def _calibration(args, profiles):
    """TensorRT 10 implicit INT8: calibrator batches at the first profile's opt shape."""
    if args.precision != "int8" or not profiles:
        return None
    from engines.quantize import calibration_batches_for

    return calibration_batches_for(profiles[0], args.calib_dir, args.calib_scenes)


def cmd_quantize(args) -> int:
    from engines.quantize import quantize_export

    components = [c for c in args.components.split(",") if c]
    manifest = quantize_export(args.onnx_dir, args.out, args.mode, components,
                               calib_dir=args.calib_dir, calib_scenes=args.calib_scenes)
    for name in manifest["quantized"]["components"]:
        print(f"{name}: {args.out}/{manifest['components'][name]['onnx']} ({args.mode} Q/DQ)")
    return 0


def cmd_status(args) -> int:
    from engines.engine_cache import EngineCache, EngineCacheError
    from engines.trt_builder import make_engine_key
    from ros2_spatial_mllm.backends.tensorrt_backend import engine_plan

    gpu = None
    if args.gpu_name or args.compute_capability:
        if not (args.gpu_name and args.compute_capability):
            raise ValueError("give both --gpu-name and --compute-capability")
        gpu = (args.gpu_name, args.compute_capability)
    cache = EngineCache(args.cache_dir)
    report, ready = {}, True
    for component, onnx_path, profiles in _selected(engine_plan(args.onnx_dir, require=()), args.components):
        key = make_engine_key(onnx_path, args.precision, profiles, args.trt_version, gpu)
        try:
            hit = cache.lookup(component, key)
            state = f"ok {hit.engine_path}" if hit else "missing"
        except EngineCacheError as e:
            state = f"error: {e}"
        ready &= state.startswith("ok")
        report[component] = {"key": key.short, "state": state}
    print(json.dumps(report, indent=2))
    return 0 if ready else 3


def cmd_verify(args) -> int:
    from pathlib import Path

    from engines.engine_cache import EngineCache

    entry = EngineCache(Path(args.engine).parent.parent).verify_file(args.engine)
    print(json.dumps({"engine": str(entry.engine_path), "component": entry.component,
                      "key": entry.manifest["key"]}, indent=2))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"export": cmd_export, "build": cmd_build, "quantize": cmd_quantize,
                "status": cmd_status, "verify": cmd_verify}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("spatial-mllm-engines: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, no traceback (TEAM.md CLI rule)
        print(f"spatial-mllm-engines {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
