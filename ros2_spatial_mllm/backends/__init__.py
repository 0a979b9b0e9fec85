"""Backends for the prefill-only visual stages (2D encoder, spatial encoder, connector).

Selection by name, as the node/CLI parameter `backend`:
    "torch"        (default) the model's PyTorch modules, any device/dtype
    "onnxruntime"  ONNX files from `spatial-mllm-engines export` (CPU EP; CUDA EP when present)
    "tensorrt"     cached TensorRT engines (never built at start-up unless allow_build=True)

Options (node parameters, all optional): onnx_dir (export folder), device ("cpu"/"cuda"),
engine_cache_dir, engine_precision (fp32|fp16|bf16|int8|fp8), allow_engine_build (false).

    backend = get_backend("onnxruntime", model, onnx_dir="engines_out/tiny")
    attach_backend(model, backend)   # model.generate / forward now fuse video via the backend
    configure_backend(spatial_mllm, "tensorrt", onnx_dir=..., allow_engine_build=False)
                                     # the same for a SpatialMLLM, + frees the torch encoders
The LLM (prefill + KV-cache decode) is in ros2_spatial_mllm.backends.llm.
"""
from __future__ import annotations

from typing import Any

from .base import PATCH_START_IDX, EncoderBackend
from .torch_backend import TorchBackend

BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")


def get_backend(name: str, model: Any, **options: Any) -> EncoderBackend:
    """Backend `name` for `model`. Raises ValueError for an unknown name (lists valid ones)."""
    name = (name or "torch").lower()
    if name in ("torch", "pytorch"):
        return TorchBackend(model)
    if name in ("onnxruntime", "onnx", "ort"):
        from .onnx_backend import OnnxRuntimeBackend

        if not options.get("onnx_dir"):
            raise ValueError("backend 'onnxruntime' needs onnx_dir (spatial-mllm-engines export)")
        return OnnxRuntimeBackend(model, options["onnx_dir"], device=options.get("device", "cpu"),
                                  intra_op_threads=options.get("intra_op_threads"))
    if name in ("tensorrt", "trt"):
        from .tensorrt_backend import DEFAULT_CACHE_DIR, TensorRTBackend

        if not options.get("onnx_dir"):
            raise ValueError("backend 'tensorrt' needs onnx_dir (spatial-mllm-engines export)")
        return TensorRTBackend(model, options["onnx_dir"],
                               cache_dir=options.get("engine_cache_dir") or DEFAULT_CACHE_DIR,
                               precision=options.get("engine_precision", "fp16"),
                               allow_build=bool(options.get("allow_engine_build", False)))
    raise ValueError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_NAMES)}")


def release_torch_encoders(model: Any, backend: EncoderBackend) -> int:
    """Free the PyTorch copies of the modules `backend` runs itself (Jetson: unified memory holds
    the engines already). Moves them to the 'meta' device; returns the bytes released.
    The VGGT heads (and aggregator) stay when the backend has no spatial_geometry of its own."""
    if isinstance(backend, TorchBackend):
        raise ValueError("the torch backend needs the PyTorch encoders")
    modules = [model.model.visual, model.connector]
    vggt = model.spatial_encoder.vggt_model
    own_geometry = getattr(backend, "_torch", None) is None
    modules += [vggt] if own_geometry else []
    released = sum(p.numel() * p.element_size() for m in modules for p in m.parameters()
                   if p.device.type != "meta")
    for module in modules:
        module.to("meta")
    return released


def attach_backend(model: Any, backend: EncoderBackend) -> Any:
    """Route the model's visual stages through `backend` (instance attributes shadow methods).

    Patched: model.video_embeds(pixel_values_videos, grid_thw), model.spatial_features(frames),
    model.connector.spatial_embeds(features, patch_start_idx, grid_thw), model.fuse_video(...)
    (forward/generate at prefill) and model.spatial_encoder.predict_geometry(frames), so both
    SpatialMLLM.answer (stage by stage) and model.generate use the backend unchanged.
    """
    from ros2_spatial_mllm.model.connector import pad_frames_to_multiple
    from ros2_spatial_mllm.model.processing import frames_from_pixel_values_videos

    vision_config = model.config.vision_config
    tp = backend.temporal_patch

    def video_embeds(pixel_values_videos, video_grid_thw):
        frames = frames_from_pixel_values_videos(pixel_values_videos, video_grid_thw, vision_config)
        return backend.vision_encoder(frames)

    def spatial_features(spatial_pixel_values):
        frames = pad_frames_to_multiple(spatial_pixel_values, tp, dim=1)
        return backend.spatial_encoder(frames.float()), PATCH_START_IDX

    def spatial_embeds(spatial_features, patch_start_idx, grid_thw):
        if patch_start_idx != PATCH_START_IDX:
            raise ValueError(f"backends assume patch_start_idx {PATCH_START_IDX}")
        _, gh, gw = (int(v) for v in grid_thw.reshape(-1, 3)[0].tolist())
        frames = pad_frames_to_multiple(spatial_features, tp, dim=1)
        return backend.connector(backend.pack(frames, gh * backend.patch, gw * backend.patch))

    def fuse_video(pixel_values_videos, video_grid_thw, spatial_pixel_values=None):
        if spatial_pixel_values is None:
            spatial_pixel_values = frames_from_pixel_values_videos(
                pixel_values_videos, video_grid_thw, vision_config)
        frames = pad_frames_to_multiple(spatial_pixel_values, tp, dim=1)
        return backend.fuse_video(frames.float())

    model.video_embeds = video_embeds
    model.spatial_features = spatial_features
    model.connector.spatial_embeds = spatial_embeds
    model.fuse_video = fuse_video
    model.spatial_encoder.predict_geometry = lambda frames: backend.spatial_geometry(frames)
    model.encoder_backend = backend
    return model


def configure_backend(engine: Any, name: str = "torch", release_torch: bool = True,
                      **options: Any) -> EncoderBackend:
    """One call for the node / CLI after SpatialMLLM.load(): build backend `name` for
    engine.model, route the model's visual stages through it and (for onnxruntime/tensorrt,
    release_torch=True) free the PyTorch encoder weights. Returns the backend."""
    backend = get_backend(name, engine.model, **options)
    if not isinstance(backend, TorchBackend):
        attach_backend(engine.model, backend)
        if release_torch:
            release_torch_encoders(engine.model, backend)
    return backend


__all__ = ["BACKEND_NAMES", "EncoderBackend", "TorchBackend", "attach_backend",
           "configure_backend", "get_backend", "release_torch_encoders"]
