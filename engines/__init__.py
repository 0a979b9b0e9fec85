"""Offline engine tooling for the Spatial-MLLM: ONNX export, TensorRT build, engine cache.

    engines.export        export_all(model, out_dir) -> ONNX per component + export_manifest.json
    engines.export_modules  export-friendly wrappers (dynamic frames / image size)
    engines.profiles      optimisation profiles + select_profile (pure Python)
    engines.engine_cache  EngineKey, EngineCache, resolve_engine (never builds unless allowed)
    engines.trt_builder   build_engine(onnx, BuildOptions) on the tensorrt Python API (lazy)
    engines.trt_runtime   TensorRTEngine: run an engine on torch CUDA tensors, no host copies
    engines.calibration   INT8 calibration batches from the data engine or .npy/.npz files
    engines.quantize      INT8/FP8 Q/DQ copies of an export folder (ModelOpt, scene calibration)
    engines.cli           `spatial-mllm-engines` (export / quantize / build / status / verify)
Runtime backends that use these live in ros2_spatial_mllm.backends.
"""
