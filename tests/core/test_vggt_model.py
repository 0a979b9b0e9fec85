"""Tiny VGGT: output shapes and conventions, aggregator structure, loading report, ONNX export."""

import importlib.util

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.geometry import pose_encoding_to_extrinsics_intrinsics
from ros2_spatial_mllm.model.vggt import VGGT, LoadReport, VGGTConfig, load_vggt_state_dict, scaled_dpt_layers
from ros2_spatial_mllm.model.vggt.aggregator import first_and_other_frames
from ros2_spatial_mllm.model.vggt.heads import DPTHead
from ros2_spatial_mllm.model.vggt.layers.rope import token_positions

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

HAS_ORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VGGT(VGGTConfig.tiny()).eval()


def test_tiny_config_is_small_and_layers_scale_with_depth(tiny):
    params = sum(p.numel() for p in tiny.parameters())
    assert 2e5 < params < 1.2e6
    assert scaled_dpt_layers(24) == (4, 11, 17, 23)
    assert tiny.depth_head.layer_indices == scaled_dpt_layers(4) == (0, 1, 2, 3)
    assert VGGTConfig.tiny(depth=2).depth_head_layers == (0, 0, 1, 1)
    assert VGGTConfig.tiny(dpt_layer_indices=(0, 0, 1, 3)).depth_head_layers == (0, 0, 1, 3)
    with pytest.raises(ValueError):
        VGGTConfig.tiny(dpt_layer_indices=(0, 1, 2, 9))
    assert VGGTConfig.from_dict(VGGTConfig.tiny().to_dict()) == VGGTConfig.tiny()


def test_tiny_forward_shapes_and_activations(tiny):
    images = torch.rand(2, 3, 3, 112, 112)
    with torch.no_grad():
        out = tiny(images)
    assert out["pose_enc"].shape == (2, 3, 9)
    assert len(out["pose_enc_list"]) == tiny.config.camera_num_iterations
    assert out["depth"].shape == (2, 3, 112, 112, 1)
    assert out["depth_conf"].shape == (2, 3, 112, 112)
    assert (out["depth"] > 0).all()  # exp
    assert (out["depth_conf"] >= 1).all()  # 1 + exp
    assert (out["pose_enc"][..., 7:] >= 0).all()  # FoV through ReLU
    ext, intr = pose_encoding_to_extrinsics_intrinsics(out["pose_enc"], (112, 112))
    assert ext.shape == (2, 3, 3, 4) and intr.shape == (2, 3, 3, 3)
    # unbatched input [S, 3, H, W] gives batch 1
    with torch.no_grad():
        single = tiny(images[0])
    assert torch.allclose(single["depth"][0], out["depth"][0], atol=1e-5)


def test_non_square_input_interpolates_pos_embed(tiny):
    images = torch.rand(1, 2, 3, 98, 154)  # 7 x 11 patches
    with torch.no_grad():
        layers, start = tiny.aggregator(images)
        out = tiny(images)
    assert start == 5
    assert len(layers) == tiny.config.depth
    assert layers[0].shape == (1, 2, 5 + 7 * 11, 2 * tiny.config.embed_dim)
    assert out["depth"].shape == (1, 2, 98, 154, 1)
    with pytest.raises(ValueError):
        tiny.aggregator(torch.rand(1, 2, 3, 100, 112))


def test_single_frame_and_cached_pos_embed(tiny):
    images = torch.rand(1, 1, 3, 98, 154)
    with torch.no_grad():
        plain = tiny(images)
        tiny.aggregator.cache_pos_embed(98, 154)
        cached = tiny(images)
        tiny.aggregator.cache_pos_embed(None)
    assert plain["pose_enc"].shape == (1, 1, 9) and plain["depth"].shape == (1, 1, 98, 154, 1)
    assert torch.allclose(plain["depth"], cached["depth"], atol=1e-6)
    # loading new weights refreshes a cache built from the old ones
    model = VGGT(VGGTConfig.tiny()).eval()
    model.aggregator.cache_pos_embed(98, 154)
    load_vggt_state_dict(model, tiny.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(images)["depth"], plain["depth"], atol=1e-6)


def test_output_layers_select_and_match_full_run(tiny):
    images = torch.rand(1, 4, 3, 112, 112)
    with torch.no_grad():
        full, _ = tiny.aggregator(images)
        last, _ = tiny.aggregator(images, output_layers=[-1])
        picked, _ = tiny.aggregator(images, output_layers=[2, 0])
    assert len(last) == 1 and torch.allclose(last[0], full[-1], atol=1e-6)
    assert torch.allclose(picked[0], full[2], atol=1e-6) and torch.allclose(picked[1], full[0], atol=1e-6)
    with pytest.raises(ValueError):
        tiny.aggregator(images, output_layers=[tiny.config.depth])


def test_aggregator_shared_rope_tables_match_per_block_positions(tiny):
    """The aggregator evaluates RoPE cos/sin once per forward; running every block with explicit
    per-token positions (cos/sin recomputed in each block) gives bitwise the same layers."""
    agg = tiny.aggregator
    images = torch.rand(2, 3, 3, 112, 140)  # B=2, S=3, 8x10 patch grid
    batch, frames = 2, 3
    with torch.no_grad():
        got, _ = agg(images)
        x = (images - agg._image_mean) / agg._image_std
        patches = agg.patch_embed(x.reshape(batch * frames, 3, 112, 140))
        camera = first_and_other_frames(agg.camera_token, batch, frames)
        registers = first_and_other_frames(agg.register_token, batch, frames)
        tokens = torch.cat([camera, registers, patches], dim=1)  # [B*S, P, C]
        num_tokens, channels = tokens.shape[1:]
        pos = token_positions(batch * frames, 8, 10, agg.patch_start_idx)  # [B*S, P, 2]
        for layer in range(tiny.config.depth):
            tokens = agg.frame_blocks[layer](tokens, pos=pos)
            frame_out = tokens.reshape(batch, frames, num_tokens, channels)
            tokens = agg.global_blocks[layer](
                tokens.reshape(batch, frames * num_tokens, channels), pos=pos.reshape(batch, -1, 2)
            )
            global_out = tokens.reshape(batch, frames, num_tokens, channels)
            tokens = tokens.reshape(batch * frames, num_tokens, channels)
            assert torch.equal(got[layer], torch.cat([frame_out, global_out], dim=-1)), layer


def test_frame_attention_is_per_frame_and_global_mixes_frames(tiny):
    """Layer 0's frame half only sees its own frame; its global half sees all frames."""
    images = torch.rand(1, 3, 3, 112, 112)
    changed = images.clone()
    changed[:, 2] = torch.rand(3, 112, 112)
    channels = tiny.config.embed_dim
    with torch.no_grad():
        a, _ = tiny.aggregator(images, output_layers=[0])
        b, _ = tiny.aggregator(changed, output_layers=[0])
    assert torch.allclose(a[0][:, :2, :, :channels], b[0][:, :2, :, :channels], atol=1e-6)
    assert not torch.allclose(a[0][:, :2, :, channels:], b[0][:, :2, :, channels:], atol=1e-4)


def test_frames_after_the_first_are_exchangeable(tiny):
    """Frames 1..S-1 share camera/register tokens and RoPE positions: swapping two swaps outputs."""
    images = torch.rand(1, 4, 3, 112, 112)
    swapped = images[:, [0, 2, 1, 3]]
    with torch.no_grad():
        a = tiny(images)
        b = tiny(swapped)
    assert torch.allclose(a["depth"][:, [0, 2, 1, 3]], b["depth"], atol=1e-4)
    assert torch.allclose(a["pose_enc"][:, [0, 2, 1, 3]], b["pose_enc"], atol=1e-4)
    # but the first frame is special (its own tokens)
    c = tiny(images[:, [1, 0, 2, 3]])
    assert not torch.allclose(a["pose_enc"][:, [1, 0, 2, 3]], c["pose_enc"], atol=1e-4)


def test_first_and_other_frame_tokens():
    token = torch.stack([torch.zeros(1, 3), torch.ones(1, 3)]).reshape(1, 2, 1, 3)
    out = first_and_other_frames(token, batch=2, frames=3)
    assert out.shape == (6, 1, 3)
    assert out[:, 0, 0].tolist() == [0, 1, 1, 0, 1, 1]


def test_dpt_frame_chunks_match_single_pass(tiny):
    head: DPTHead = tiny.depth_head
    images = torch.rand(1, 5, 3, 112, 112)
    with torch.no_grad():
        layers, start = tiny.aggregator(images, output_layers=list(head.layer_indices))
        head.frames_chunk_size = None
        depth_a, conf_a = head(layers, images, start)
        head.frames_chunk_size = 2
        depth_b, conf_b = head(layers, images, start)
        head.frames_chunk_size = None
    assert torch.allclose(depth_a, depth_b, atol=1e-5) and torch.allclose(conf_a, conf_b, atol=1e-5)


def test_load_round_trip_reports_nothing_missing(tiny, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    path = tmp_path / "tiny.safetensors"
    save_file(state, str(path))
    torch.manual_seed(123)
    fresh = VGGT(VGGTConfig.tiny()).eval()
    report = load_vggt_state_dict(fresh, path)
    assert isinstance(report, LoadReport)
    assert report.ok and report.missing == [] and report.unexpected == [] and report.ignored == []
    assert report.loaded == len(state)
    images = torch.rand(1, 2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(fresh(images)["depth"], tiny(images)["depth"])


def test_load_report_separates_ignored_unexpected_missing_mismatched(tiny):
    state = dict(tiny.state_dict())
    state["point_head.x"] = torch.zeros(1)
    state["track_head.fnet.conv.weight"] = torch.zeros(1)
    state["decoder.extra.weight"] = torch.zeros(1)
    del state["camera_head.empty_pose_tokens"]
    state["aggregator.camera_token"] = torch.zeros(1, 2, 1, 7)
    fresh = VGGT(VGGTConfig.tiny())
    report = load_vggt_state_dict(fresh, state)
    assert report.ignored == ["point_head.x", "track_head.fnet.conv.weight"]
    assert report.unexpected == ["decoder.extra.weight"]
    assert report.missing == ["camera_head.empty_pose_tokens"]
    assert [m[0] for m in report.mismatched] == ["aggregator.camera_token"]
    assert not report.ok
    with pytest.raises(RuntimeError):
        load_vggt_state_dict(VGGT(VGGTConfig.tiny()), state, strict=True)


def test_load_with_prefix_and_disabled_heads(tiny):
    prefixed = {"spatial_encoder.vggt_model." + k: v for k, v in tiny.state_dict().items()}
    prefixed["connector.mlp.0.weight"] = torch.zeros(1)
    encoder_only = VGGT(VGGTConfig.tiny(enable_camera=False, enable_depth=False))
    report = load_vggt_state_dict(encoder_only, prefixed, strip_prefix="spatial_encoder.vggt_model.")
    assert report.ok and report.unexpected == []
    assert report.ignored and all(k.startswith(("camera_head.", "depth_head.")) for k in report.ignored)
    assert torch.equal(encoder_only.aggregator.camera_token, tiny.aggregator.camera_token)
    assert encoder_only(torch.rand(1, 2, 3, 112, 112)) == {}


def test_official_loads_onto_meta_with_report():
    with torch.device("meta"):
        model = VGGT(VGGTConfig.official())
        state = {k: torch.empty_like(v) for k, v in model.state_dict().items()}
    state["point_head.scratch.output_conv2.2.weight"] = torch.empty(4, 32, 1, 1, device="meta")
    report = load_vggt_state_dict(model, state)
    assert report.ok and report.ignored == ["point_head.scratch.output_conv2.2.weight"]


@pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed")
@pytest.mark.parametrize("height,width", [(112, 112), (112, 140)])
def test_tiny_aggregator_onnx_matches_torch(tmp_path, height, width):
    """TorchScript ONNX export, dynamic frame count; a non-nominal size uses the cached pos_embed."""
    import onnxruntime as ort

    class LastLayer(torch.nn.Module):
        def __init__(self, aggregator):
            super().__init__()
            self.aggregator = aggregator

        def forward(self, images):  # [1, S, 3, H, W] -> [1, S, P, 2C]
            return self.aggregator(images, output_layers=[-1])[0][0]

    torch.manual_seed(0)
    aggregator = VGGT(VGGTConfig.tiny(enable_camera=False, enable_depth=False)).aggregator.eval()
    module = LastLayer(aggregator).eval()
    images = torch.rand(1, 5, 3, height, width)  # a different frame count than at export
    with torch.no_grad():
        expected = module(images).numpy()  # uncached (bicubic resize in torch)
    aggregator.cache_pos_embed(height, width)
    path = tmp_path / "aggregator.onnx"
    torch.onnx.export(
        module, (torch.rand(1, 3, 3, height, width),), str(path), dynamo=False, input_names=["images"],
        output_names=["tokens"], dynamic_axes={"images": {1: "frames"}, "tokens": {1: "frames"}}, opset_version=17,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]
    grid = (height // 14) * (width // 14)
    assert got.shape == expected.shape == (1, 5, 5 + grid, 128)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_residual_conv_unit_skip_adds_relu_of_input():
    """VGGT's DPT applies an in-place ReLU to the unit's input, so the skip carries relu(x);
    the checkpoint was trained that way. Our unit reproduces it without mutating x."""
    from ros2_spatial_mllm.model.vggt.heads.dpt_blocks import ResidualConvUnit

    torch.manual_seed(0)
    unit = ResidualConvUnit(4)
    x = torch.randn(2, 4, 5, 6)
    x_before = x.clone()
    with torch.no_grad():
        out = unit(x)
        relu_x = torch.relu(x)
        expected = relu_x + unit.conv2(torch.relu(unit.conv1(relu_x)))
        not_expected = x + unit.conv2(torch.relu(unit.conv1(relu_x)))
    assert torch.equal(x, x_before)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, not_expected, atol=1e-3)
