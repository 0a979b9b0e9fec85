"""ONNX export of the tiny preset: dynamic frames / image size, parity with PyTorch (ORT CPU).

Thresholds. Both sides run float32; the only differences are summation order (ONNX Runtime's
fused GEMM/attention/LayerNorm kernels vs PyTorch's) and exp/erf implementations. float32 eps is
1.2e-7; a dot product of K terms carries ~sqrt(K)*eps relative error and the tiny encoders chain
~12 residual blocks (K <= 256), so about 12 * 16 * 1.2e-7 ~ 2.3e-5 relative per element. We
allow max|onnx - torch| <= 1e-4 * max(1, max|torch|) and a global relative error
||onnx - torch|| / ||torch|| <= 1e-5 (measured: ~1e-6 and ~1e-7). A real export fault (a frame
count or image size baked into the graph, a wrong axis order, a missing window mask) gives
O(1) errors, four orders of magnitude above these bounds.
"""
import json

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from engines.export import COMPONENTS, ExportRanges, component_profiles  # noqa: E402
from engines.trt_builder import check_profiles_against_inputs, onnx_inputs_and_types  # noqa: E402
from ros2_spatial_mllm.model.connector import pack_spatial_tokens  # noqa: E402
from ros2_spatial_mllm.model.processing import VideoProcessingConfig, patchify_video  # noqa: E402

# (frames, height, width): the nominal tiny size, more frames + other aspect, odd grid (2 windows),
# the smallest declared size (56 = side of Qwen's min_pixels)
SIZES = [(2, 112, 112), (6, 224, 168), (4, 140, 196), (2, 56, 56)]


def assert_parity(onnx_out: np.ndarray, torch_out: torch.Tensor) -> None:
    ref = torch_out.detach().float().numpy()
    assert onnx_out.shape == ref.shape
    if ref.size == 0:  # e.g. pair_pose of a single frame: no pairs
        return
    max_abs = float(np.abs(onnx_out - ref).max())
    rel = float(np.linalg.norm(onnx_out - ref) / max(np.linalg.norm(ref), 1e-12))
    assert max_abs <= 1e-4 * max(1.0, float(np.abs(ref).max())), max_abs
    assert rel <= 1e-5, rel


@pytest.fixture(scope="module")
def exported(tiny_model, tiny_onnx_dir):
    model, out = tiny_model, tiny_onnx_dir
    manifest = json.loads((out / "export_manifest.json").read_text())
    sessions = {c: ort.InferenceSession(str(out / manifest["components"][c]["onnx"]),
                                        providers=["CPUExecutionProvider"])
                for c in COMPONENTS}
    return model, out, manifest, sessions


@pytest.mark.parametrize("size", SIZES)
def test_spatial_encoder_parity(exported, size):
    model, _, _, sessions = exported
    x = torch.rand(1, size[0], 3, size[1], size[2])
    with torch.no_grad():
        ref, start = model.spatial_encoder(x)
    (out,) = sessions["spatial_encoder"].run(None, {"images": x.numpy()})
    assert start == 5 and out.shape[2] == 5 + (size[1] // 14) * (size[2] // 14)
    assert_parity(out, ref)


def assert_geometry_parity(model, sessions, x: torch.Tensor) -> None:
    """spatial_geometry ONNX outputs (pose_enc, depth, depth_conf, and pair_pose [1, S-1, 6] when
    the model has a pair-pose head) vs the PyTorch VGGT heads on x [1, S, 3, H, W]."""
    with torch.no_grad():
        ref = model.spatial_encoder.vggt_model(x)
    outs = sessions["spatial_geometry"].run(None, {"images": x.numpy()})
    names = ["pose_enc", "depth", "depth_conf"] + (["pair_pose"] if "pair_pose" in ref else [])
    assert len(outs) == len(names), (len(outs), names)
    for name, out in zip(names, outs):
        assert_parity(out, ref[name])
    if "pair_pose" in ref:
        assert outs[3].shape == (1, x.shape[1] - 1, 6)


@pytest.mark.parametrize("size", SIZES)
def test_spatial_geometry_parity(exported, size):
    model, _, _, sessions = exported
    x = torch.rand(1, size[0], 3, size[1], size[2])
    assert_geometry_parity(model, sessions, x)


@pytest.mark.parametrize("frames", [1, 3])
def test_spatial_geometry_takes_single_and_odd_frame_chunks(exported, frames):
    """The geometry worker's first chunk can be one keyframe, later ones odd counts: the graph
    and the TensorRT profile of spatial_geometry must accept them (the encoders need even S)."""
    from engines.profiles import select_profile
    model, _, manifest, sessions = exported
    x = torch.rand(1, frames, 3, 84, 112)
    assert_geometry_parity(model, sessions, x)
    profiles = component_profiles("spatial_geometry", ExportRanges(), model.connector.merged_dim)
    big = {"images": (1, frames, 3, 84, 112)}  # the tiny resize of a 640 x 480 camera
    assert select_profile(profiles, big) == 0
    saved = manifest["components"]["spatial_geometry"]["profiles"][0]["inputs"][0]
    assert saved["min"][1] == 1


@pytest.mark.parametrize("size", SIZES)
def test_vision_encoder_parity_with_qwen_vision_tower(exported, size):
    model, _, _, sessions = exported
    x = torch.rand(1, size[0], 3, size[1], size[2])
    pixel_values, grid = patchify_video(x[0], VideoProcessingConfig())
    with torch.no_grad():
        ref = model.video_embeds(pixel_values, grid)  # transformers' cu_seqlens/window path
    (out,) = sessions["vision_encoder"].run(None, {"frames": x.numpy()})
    assert_parity(out, ref)


def test_connector_parity_and_fusion(exported):
    model, _, _, sessions = exported
    frames, height, width = 6, 224, 168
    gh, gw = height // 14, width // 14
    spatial = torch.randn(1, frames, 5 + gh * gw, 2 * model.spatial_encoder.vggt_config.embed_dim)
    grid = torch.tensor([[frames // 2, gh, gw]])
    with torch.no_grad():
        ref = model.connector.spatial_embeds(spatial, 5, grid)
    packed = pack_spatial_tokens(spatial[:, :, 5:], gh, gw).numpy()
    (out,) = sessions["connector"].run(None, {"packed_spatial": packed})
    assert_parity(out, ref)


def test_manifest_profiles_match_onnx_inputs(exported):
    model, out, manifest, _ = exported
    saved = json.loads((out / "export_manifest.json").read_text())
    assert saved["components"].keys() == set(COMPONENTS)
    for component, entry in saved["components"].items():
        assert len(entry["onnx_sha256"]) == 64
        inputs, float_types, has_qdq = onnx_inputs_and_types(out / entry["onnx"])
        assert float_types == {"float"} and not has_qdq
        profiles = component_profiles(component, ExportRanges(), model.connector.merged_dim)
        check_profiles_against_inputs(inputs, profiles)  # the builder would accept them
        assert all(-1 in dims for dims in inputs.values())  # dynamic axes really are dynamic


def test_export_ranges_validation():
    with pytest.raises(ValueError, match="even"):
        ExportRanges(frames=(1, 16, 32)).validate()
    with pytest.raises(ValueError, match="multiples of 28"):
        ExportRanges(height=(100, 476, 644)).validate()
    assert ExportRanges().tokens() == (1 * 2 * 2, 8 * 17 * 23, 16 * 23 * 23)


@pytest.mark.parametrize("component", ["spatial_encoder", "connector"])
def test_fp16_export_for_strongly_typed_tensorrt(tiny_model, tmp_path, component):
    """fp16 ONNX (what TensorRT 11 needs for an fp16 engine) vs the float32 PyTorch model.

    fp16 has eps 9.8e-4: weights and activations each round at ~5e-4 relative, and the error
    grows over ~12 blocks, so ~1e-3..5e-3 relative is expected; we allow max abs 2e-2 *
    max(1, max|ref|) and L2-relative 1e-2 (measured ~1.5e-3 max abs relative). The export must
    not change the caller's model (still float32 afterwards)."""
    from engines.export import export_component, export_wrapper
    from engines.trt_builder import onnx_inputs_and_types, plan_precision
    path = export_component(tiny_model, component, tmp_path, dtype="fp16")
    assert next(tiny_model.parameters()).dtype == torch.float32
    inputs, float_types, has_qdq = onnx_inputs_and_types(path)
    assert "float16" in float_types
    assert plan_precision("fp16", False, False, float_types, has_qdq).strongly_typed
    if component == "connector":
        x = torch.randn(24, tiny_model.connector.merged_dim)
    else:
        x = torch.rand(1, 4, 3, 112, 168)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.half().numpy()})
    with torch.no_grad():
        ref = export_wrapper(tiny_model, component)[0](x).numpy()
    out = out.astype(np.float32)
    assert np.abs(out - ref).max() <= 2e-2 * max(1.0, float(np.abs(ref).max()))
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 1e-2
