"""Encoder backends: selection, PyTorch vs ONNX Runtime parity, wiring into SpatialMLLM."""
import importlib.util

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.backends import (BACKEND_NAMES, attach_backend, get_backend,
                                        release_torch_encoders)
from ros2_spatial_mllm.backends.tensorrt_backend import engine_plan


def test_unknown_backend_lists_choices(tiny_model):
    with pytest.raises(ValueError, match="torch, onnxruntime, tensorrt"):
        get_backend("tflite", tiny_model)
    with pytest.raises(ValueError, match="onnx_dir"):
        get_backend("onnxruntime", tiny_model)
    assert BACKEND_NAMES == ("torch", "onnxruntime", "tensorrt")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
                    reason="TensorRT + CUDA present: the error path is not reachable")
def test_tensorrt_backend_without_tensorrt_says_so(tiny_model, tiny_onnx_dir):
    from engines.trt_builder import TensorRTUnavailableError
    with pytest.raises(TensorRTUnavailableError, match="needs TensorRT \\+ CUDA GPU"):
        get_backend("tensorrt", tiny_model, onnx_dir=tiny_onnx_dir)


def test_engine_plan_reads_export_manifest(tiny_onnx_dir, tmp_path):
    plan = {component: (path, profiles) for component, path, profiles in engine_plan(tiny_onnx_dir)}
    assert set(plan) == {"spatial_encoder", "spatial_geometry", "vision_encoder", "connector"}
    path, profiles = plan["spatial_encoder"]
    assert path.is_file() and profiles[0].range_of("images").max_shape == (1, 32, 3, 644, 644)
    with pytest.raises(FileNotFoundError, match="spatial-mllm-engines export"):
        engine_plan(tmp_path)


def test_torch_backend_matches_model_fuse_video(tiny_model):
    from ros2_spatial_mllm.model.processing import VideoProcessingConfig, patchify_video
    torch.manual_seed(0)
    frames = torch.rand(1, 4, 3, 112, 168)
    pixel_values, grid = patchify_video(frames[0], VideoProcessingConfig())
    with torch.no_grad():
        ref = tiny_model.fuse_video(pixel_values, grid, frames)
    fused = get_backend("torch", tiny_model).fuse_video(frames)
    torch.testing.assert_close(fused, ref, atol=0, rtol=0)


def test_backend_rejects_bad_frames(tiny_model):
    backend = get_backend("torch", tiny_model)
    with pytest.raises(ValueError, match="pad to a multiple of 2"):
        backend.fuse_video(torch.rand(1, 3, 3, 112, 112))
    with pytest.raises(ValueError, match="multiple of 28"):
        backend.fuse_video(torch.rand(1, 2, 3, 112, 126))


def test_onnxruntime_backend_matches_torch(tiny_model, tiny_onnx_dir):
    """Same float32 thresholds as test_export_parity (see its docstring)."""
    ort_backend = get_backend("onnxruntime", tiny_model, onnx_dir=tiny_onnx_dir)
    torch_backend = get_backend("torch", tiny_model)
    torch.manual_seed(1)
    frames = torch.rand(1, 6, 3, 168, 224)
    fused_ort, fused_torch = ort_backend.fuse_video(frames), torch_backend.fuse_video(frames)
    assert fused_ort.shape == fused_torch.shape == (3 * 6 * 8, 64)
    torch.testing.assert_close(fused_ort, fused_torch, atol=1e-4, rtol=1e-4)
    geo_ort, geo_torch = ort_backend.spatial_geometry(frames), torch_backend.spatial_geometry(frames)
    for key in ("pose_enc", "depth", "depth_conf"):
        torch.testing.assert_close(geo_ort[key], geo_torch[key], atol=1e-4, rtol=1e-4)


def test_attached_onnx_backend_answers_like_torch(tiny_onnx_dir):
    from ros2_spatial_mllm.inference import SpatialMLLM
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(4)]
    reference = SpatialMLLM.load()
    expected = reference.answer(frames, "How many chairs are there?", max_new_tokens=6)
    engine = SpatialMLLM.load()
    backend = get_backend("onnxruntime", engine.model, onnx_dir=tiny_onnx_dir)
    attach_backend(engine.model, backend)
    released = release_torch_encoders(engine.model, backend)
    assert released > 0 and engine.model.model.visual.patch_embed.proj.weight.is_meta
    assert engine.model.spatial_encoder.vggt_model.aggregator.camera_token.is_meta
    calls = []
    original = backend.spatial_encoder
    backend.spatial_encoder = lambda x: calls.append(tuple(x.shape)) or original(x)
    got = engine.answer(frames, "How many chairs are there?", max_new_tokens=6)
    assert calls, "the spatial encoder did not run through the ONNX backend"
    assert got.text == expected.text and got.num_tokens == expected.num_tokens
    geometry = engine.predict_geometry(np.stack(frames))
    expected_geometry = reference.predict_geometry(np.stack(frames))
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics"):
        np.testing.assert_allclose(geometry[key], expected_geometry[key], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="needs the PyTorch encoders"):
        release_torch_encoders(reference.model, get_backend("torch", reference.model))


def test_configure_backend_on_spatial_mllm(tiny_onnx_dir):
    from ros2_spatial_mllm.backends import configure_backend
    from ros2_spatial_mllm.inference import SpatialMLLM
    engine = SpatialMLLM.load()
    assert configure_backend(engine, "torch").name == "torch"
    assert not engine.model.model.visual.patch_embed.proj.weight.is_meta
    backend = configure_backend(engine, "onnxruntime", onnx_dir=tiny_onnx_dir)
    assert backend.name == "onnxruntime" and engine.model.encoder_backend is backend
    assert engine.model.connector.mlp[0].weight.is_meta
    frames = [np.full((64, 64, 3), 128, np.uint8)] * 2
    assert engine.answer(frames, "Is it bright?", max_new_tokens=2).num_tokens <= 2


def test_load_with_onnxruntime_backend_answers_like_torch(tiny_onnx_dir):
    from ros2_spatial_mllm.inference import SpatialMLLM
    frames = [np.full((96, 128, 3), v, np.uint8) for v in (40, 90, 140, 190)]
    expected = SpatialMLLM.load().answer(frames, "How far is the door?", max_new_tokens=5)
    engine = SpatialMLLM.load(backend="onnxruntime", backend_options={"onnx_dir": str(tiny_onnx_dir)})
    assert engine.info["backend"] == "onnxruntime"
    assert engine.model.connector.mlp[0].weight.is_meta  # PyTorch copy freed: ONNX really serves it
    got = engine.answer(frames, "How far is the door?", max_new_tokens=5)
    assert got.text == expected.text


def test_load_with_onnxruntime_backend_without_export_dir_fails_at_load():
    from ros2_spatial_mllm.inference import SpatialMLLM
    with pytest.raises(ValueError, match="onnx_dir"):
        SpatialMLLM.load(backend="onnxruntime")


def _node_load(config):
    """What the node's on_activate does with its parameters (node.py), without rclpy."""
    from ros2_spatial_mllm.buffer import FrameBuffer
    from ros2_spatial_mllm.query_engine import QueryEngine
    from ros2_spatial_mllm.engine_checks import load_with_verified_backend
    engine = QueryEngine(FrameBuffer(max_frames=8), loader=load_with_verified_backend)
    ok = engine.load(model=config.model_path or None, preset=config.model_preset, device="cpu",
                     backend=config.backend, backend_options=config.backend_options())
    return engine, ok


def test_node_parameters_select_the_backend(tiny_onnx_dir):
    from ros2_spatial_mllm.ros.params import NodeConfig
    config = NodeConfig(backend="onnxruntime", onnx_dir=str(tiny_onnx_dir)).validate()
    engine, ok = _node_load(config)
    assert ok, engine.state_error
    assert engine.model.backend_check["backend"] == "onnxruntime"
    assert engine.model.model.encoder_backend.name == "onnxruntime"
    assert engine.model.model.connector.mlp[0].weight.is_meta  # the export serves the connector
    engine.unload()


def test_node_tensorrt_backend_never_builds_at_activate(tiny_onnx_dir, tmp_path):
    """backend=tensorrt with an empty engine cache and allow_engine_build false: activation fails
    with the reason (no TensorRT here, or no engine with the command that builds it) and the
    cache stays empty."""
    from ros2_spatial_mllm.ros.params import NodeConfig
    cache = tmp_path / "engines"
    config = NodeConfig(backend="tensorrt", onnx_dir=str(tiny_onnx_dir), engine_cache_dir=str(cache),
                        allow_engine_build=False).validate()
    engine, ok = _node_load(config)
    assert not ok
    error = engine.state_error
    assert ("TensorRT" in error and "CUDA" in error) or "spatial-mllm-engines build" in error
    assert not cache.exists() or not any(cache.rglob("*.engine"))


def test_export_without_the_pair_pose_output_is_refused(tiny_model, tiny_onnx_dir, tmp_path):
    """An ONNX export made before the model gained its pair-pose head would give camera-head
    cameras while camera_source says pair_pose: the backend refuses it with a clear error."""
    import shutil

    from engines.export import export_component
    from ros2_spatial_mllm.backends import get_backend
    from training.model_io import build_model

    assert tiny_model.spatial_encoder.vggt_model.pair_pose_head is not None
    stale = tmp_path / "onnx"
    shutil.copytree(tiny_onnx_dir, stale)
    headless, _ = build_model({"init": "random"})            # the preset without the head
    assert headless.spatial_encoder.vggt_model.pair_pose_head is None
    export_component(headless, "spatial_geometry", stale, example_size=(2, 84, 112))
    with pytest.raises(ValueError, match="without the model's pair_pose output"):
        get_backend("onnxruntime", tiny_model, onnx_dir=stale)
    assert get_backend("onnxruntime", headless, onnx_dir=stale) is not None
