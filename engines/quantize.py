"""INT8 / FP8 export folders with Q/DQ nodes (TensorRT explicit quantization), calibrated on
procedural scenes from the data engine (or on .npy/.npz files).

    spatial-mllm-engines quantize --onnx-dir engines_out/fp32 --out engines_out/fp8 \
        --mode fp8 --calib-scenes 16                                  # needs NVIDIA ModelOpt
    spatial-mllm-engines build --onnx-dir engines_out/fp8 --precision fp8   # GPU + TensorRT

Why a separate folder: TensorRT 11 removed the implicit INT8 calibrator and builds strongly typed
networks, and TensorRT has no FP8 calibrator at all, so INT8 on 11 and FP8 on 10/11 need the
scales inside the ONNX (QuantizeLinear/DequantizeLinear pairs). `quantize_export` copies an
export folder, replaces the chosen components by their Q/DQ versions (ModelOpt, calibrated on
frames at each component's `opt` profile shape) and rewrites export_manifest.json (new
onnx_sha256, so engine cache keys change with the quantized graph; a `quantized` record per
component). Components that are not quantized (by default the connector, whose input is packed
spatial features rather than frames) are copied unchanged and stay at the exported precision:
build them with `--components` and a float precision, or keep them in PyTorch.

Everything except the ModelOpt call is plain Python and tested on CPU (with a stand-in
quantizer); the ModelOpt + TensorRT part is not verified in this repository (no GPU).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from engines.engine_cache import onnx_model_sha256
from engines.profiles import OptimizationProfile

QUANT_MODES = ("int8", "fp8")
FRAME_COMPONENTS = ("spatial_encoder", "spatial_geometry", "vision_encoder")
Quantizer = Callable[[str, str, str, Iterable], str]  # (onnx, output, mode, batches) -> output


def calibration_batches_for(profile: OptimizationProfile, calib_dir: Optional[str] = None,
                            calib_scenes: int = 0) -> Optional[Iterable[dict]]:
    """Calibration batches for the first input of `profile`, at its opt shape [1, S, 3, H, W]:
    files of `calib_dir`, or `calib_scenes` rendered data-engine scenes; None when neither fits
    (no source given, or the input is not a frame tensor)."""
    rng = profile.ranges[0]
    if calib_dir:
        from engines.calibration import directory_calibration_batches

        return directory_calibration_batches(calib_dir, rng.name)
    if calib_scenes > 0 and len(rng.opt_shape) == 5:
        from engines.calibration import scene_calibration_batches

        _, frames, _, height, width = rng.opt_shape
        return scene_calibration_batches(calib_scenes, frames, height, width, rng.name)
    return None


def _modelopt_quantizer(onnx_path: str, output_path: str, mode: str, batches: Iterable) -> str:
    from engines.trt_builder import quantize_onnx

    return quantize_onnx(onnx_path, output_path, mode, batches)


def quantize_export(onnx_dir: str | Path, out_dir: str | Path, mode: str,
                    components: Sequence[str] = FRAME_COMPONENTS, calib_dir: Optional[str] = None,
                    calib_scenes: int = 0, quantizer: Quantizer = _modelopt_quantizer) -> dict:
    """Copy the export folder `onnx_dir` to `out_dir` with `components` quantized (`mode` int8 or
    fp8). Returns the new manifest. Raises ValueError/FileNotFoundError with the fix."""
    if mode not in QUANT_MODES:
        raise ValueError(f"quantize mode must be one of {QUANT_MODES}, got '{mode}'")
    src, dst = Path(onnx_dir).expanduser(), Path(out_dir).expanduser()
    manifest_path = src / "export_manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no export_manifest.json in {src}; run `spatial-mllm-engines "
                                f"export --out {src}` first")
    if dst.resolve() == src.resolve():
        raise ValueError("--out must differ from --onnx-dir (the float export is kept)")
    manifest = json.loads(manifest_path.read_text())
    unknown = sorted(set(components) - set(manifest["components"]))
    if unknown:
        raise ValueError(f"components {unknown} are not in {src} "
                         f"(exported: {sorted(manifest['components'])})")
    plans = {}
    for name in components:  # check every calibration source before the slow part starts
        profiles = [OptimizationProfile.from_dict(p) for p in manifest["components"][name]["profiles"]]
        batches = calibration_batches_for(profiles[0], calib_dir, calib_scenes) if profiles else None
        if batches is None:
            raise ValueError(f"no calibration data for '{name}': give --calib-scenes N (frames "
                             f"inputs only) or --calib-dir with .npy/.npz batches for its input")
        plans[name] = batches
    dst.mkdir(parents=True, exist_ok=True)
    source = f"dir:{calib_dir}" if calib_dir else f"data-engine scenes:{calib_scenes}"
    for name, entry in manifest["components"].items():
        onnx_rel = Path(entry["onnx"])
        folder = dst / onnx_rel.parent
        if folder.exists():
            shutil.rmtree(folder)  # stale files of a previous run
        if name not in plans:
            shutil.copytree(src / onnx_rel.parent, folder)
            continue
        folder.mkdir(parents=True)
        quantizer(str(src / onnx_rel), str(dst / onnx_rel), mode, plans[name])
        entry["onnx_sha256"] = onnx_model_sha256(dst / onnx_rel)
        entry["quantized"] = {"mode": mode, "calibration": source}
    manifest["quantized"] = {"mode": mode, "components": sorted(plans), "from": str(src)}
    (dst / "export_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
