"""Spatial-MLLM model: official key layout (meta device), token order, fusion, prefill-only spatial
encoder, odd frame counts. Tiny preset, CPU, a few seconds."""

from __future__ import annotations

import itertools

import pytest
import torch

from ros2_spatial_mllm.model.checkpoint import to_module_key, to_official_key
from ros2_spatial_mllm.model.config import SpatialMLLMConfig, vggt_config_from_spatial_config
from ros2_spatial_mllm.model.connector import pack_spatial_tokens, pad_frames_to_multiple
from ros2_spatial_mllm.model.presets import build_model, official_config, tiny_config
from ros2_spatial_mllm.model.processing import (
    VideoProcessingConfig,
    frames_from_pixel_values_videos,
    patchify_video,
)
from ros2_spatial_mllm.model.vggt.config import VGGTConfig

OFFICIAL_PREFIXES = ("visual.", "model.", "lm_head.", "spatial_encoder.vggt_model.", "connector.")


@pytest.fixture(scope="module")
def official_keys():
    model = build_model("official", device="meta")
    return {to_official_key(k): tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(tiny_config(), device="cpu", seed=3)


def _video_inputs(model, frames: int = 4, height: int = 56, width: int = 84, seed: int = 0):
    """Random frames -> (pixel_values_videos, video_grid_thw, frames [1, S, 3, H, W])."""
    gen = torch.Generator().manual_seed(seed)
    video = torch.rand(frames, 3, height, width, generator=gen)
    cfg = VideoProcessingConfig()
    pixel_values, grid = patchify_video(video, cfg)
    return pixel_values, grid, video[None]


def test_official_keys_use_reference_prefixes_and_connector_shapes(official_keys):
    assert all(k.startswith(OFFICIAL_PREFIXES) for k in official_keys), [
        k for k in official_keys if not k.startswith(OFFICIAL_PREFIXES)
    ][:5]
    assert official_keys["connector.ln_q.weight"] == (16384,)
    assert official_keys["connector.mlp.0.weight"] == (16384, 16384)
    assert official_keys["connector.mlp.0.bias"] == (16384,)
    assert official_keys["connector.mlp.2.weight"] == (2048, 16384)
    assert official_keys["connector.mlp.2.bias"] == (2048,)
    assert sorted(k for k in official_keys if k.startswith("connector.")) == [
        "connector.ln_q.weight", "connector.mlp.0.bias", "connector.mlp.0.weight",
        "connector.mlp.2.bias", "connector.mlp.2.weight",
    ]


def test_official_keys_qwen_and_vggt_layout(official_keys):
    # Qwen2.5-VL-3B: 32 ViT blocks (1280 wide), 36 LLM layers (2048 wide), vocab 151936
    assert official_keys["visual.patch_embed.proj.weight"] == (1280, 3, 2, 14, 14)
    assert official_keys["visual.merger.mlp.2.weight"] == (2048, 5120)
    assert "visual.blocks.31.attn.qkv.weight" in official_keys
    assert "visual.blocks.32.attn.qkv.weight" not in official_keys
    assert official_keys["model.embed_tokens.weight"] == (151936, 2048)
    assert official_keys["model.layers.35.self_attn.k_proj.weight"] == (256, 2048)
    assert "model.layers.36.mlp.up_proj.weight" not in official_keys
    assert "model.norm.weight" in official_keys
    assert official_keys["lm_head.weight"] == (151936, 2048)  # tied with the embeddings, not written
    # VGGT-1B under spatial_encoder.vggt_model
    vggt = "spatial_encoder.vggt_model.aggregator."
    assert official_keys[vggt + "camera_token"] == (1, 2, 1, 1024)
    assert official_keys[vggt + "register_token"] == (1, 2, 4, 1024)
    for kind, name in itertools.product(("frame_blocks", "global_blocks"), ("attn.qkv.weight", "ls1.gamma", "attn.q_norm.weight")):
        assert f"{vggt}{kind}.23.{name}" in official_keys
        assert f"{vggt}{kind}.24.{name}" not in official_keys
    assert any(k.startswith(vggt + "patch_embed.") for k in official_keys)
    assert any(k.startswith("spatial_encoder.vggt_model.camera_head.") for k in official_keys)
    assert any(k.startswith("spatial_encoder.vggt_model.depth_head.") for k in official_keys)


def test_key_mapping_round_trips(official_keys):
    for key in official_keys:
        assert to_official_key(to_module_key(key)) == key
    assert to_module_key("visual.blocks.0.norm1.weight") == "model.visual.blocks.0.norm1.weight"
    assert to_module_key("model.layers.0.mlp.up_proj.weight") == "model.language_model.layers.0.mlp.up_proj.weight"
    assert to_module_key("spatial_encoder.vggt_model.aggregator.camera_token") == "spatial_encoder.vggt_model.aggregator.camera_token"


def test_config_round_trips_through_config_json(tmp_path):
    config = official_config()
    config.save_pretrained(str(tmp_path))
    loaded = SpatialMLLMConfig.from_pretrained(str(tmp_path), local_files_only=True)
    assert loaded.model_type == "spatial-mllm"
    assert loaded.connector_config == {"connector_type": "mlp_add", "spatial_embeds_layer_idx": -1}
    assert (loaded.spatial_config.img_size, loaded.spatial_config.patch_size, loaded.spatial_config.embed_dim) == (518, 14, 1024)
    assert vggt_config_from_spatial_config(loaded.spatial_config) == VGGTConfig.official()
    assert loaded.text_config.hidden_size == 2048 and loaded.vision_config.out_hidden_size == 2048
    tiny = tiny_config()
    assert vggt_config_from_spatial_config(SpatialMLLMConfig(**tiny.to_dict()).spatial_config) == VGGTConfig.tiny()


def test_official_style_spatial_config_defaults_to_vggt_1b():
    config = SpatialMLLMConfig(spatial_config={"img_size": 518, "patch_size": 14, "embed_dim": 1024})
    assert vggt_config_from_spatial_config(config.spatial_config) == VGGTConfig.official()


def test_spatial_tokens_follow_qwen_video_token_order():
    """Pack position-coded VGGT features and compare with the patches Qwen merges per token."""
    frames, gh, gw, dim = 4, 4, 6, 2
    s, r, c = torch.meshgrid(torch.arange(frames), torch.arange(gh), torch.arange(gw), indexing="ij")
    code = torch.stack([s, r, c], -1).float()  # [S, gh, gw, 3] = (frame, row, col)
    features = torch.stack([code[..., 0] * 100 + code[..., 1] * 10 + code[..., 2], torch.ones(frames, gh, gw)], -1)
    packed = pack_spatial_tokens(features.reshape(1, frames, gh * gw, dim), gh, gw)  # [N, 4*dim*2]
    # Qwen: image whose pixels encode (frame, row, col) of their 14px patch
    img = torch.zeros(frames, 3, gh * 14, gw * 14)
    for f, i, j in itertools.product(range(frames), range(gh), range(gw)):
        img[f, 0, i * 14:(i + 1) * 14, j * 14:(j + 1) * 14] = f * 100 + i * 10 + j
    cfg = VideoProcessingConfig(image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))
    patches, grid = patchify_video(img, cfg)  # [t*gh*gw, 3*2*14*14], layout (C, tp, py, px)
    assert packed.shape == (grid.prod() // 4, 4 * dim * 2)
    qwen_code = patches.reshape(-1, 3, 2, 14 * 14)[:, 0, :, 0]  # [t*gh*gw, tp] code of both frames
    for token in range(packed.shape[0]):
        vec = packed[token].reshape(4, dim, 2)  # (merge position, channel, frame)
        expected = qwen_code[4 * token: 4 * token + 4]  # the 4 patches Qwen's merger fuses
        assert torch.equal(vec[:, 0, :], expected), token
        assert torch.equal(vec[:, 1, :], torch.ones(4, 2))



def test_patchify_keeps_frames_on_their_device():
    """The torch backend patchifies frames where they are (a CUDA tensor on a GPU: the mean/std
    must follow them; found on an H200). The meta device stands in for the GPU here."""
    patches, grid = patchify_video(torch.rand(4, 3, 56, 84, device="meta"), VideoProcessingConfig())
    assert patches.device.type == "meta" and patches.shape == (2 * 4 * 6, 3 * 2 * 14 * 14)
    assert grid.tolist() == [[2, 4, 6]]

def test_pad_frames_repeats_last_frame():
    x = torch.arange(3 * 2, dtype=torch.float32).reshape(1, 3, 2)
    padded = pad_frames_to_multiple(x, 2, dim=1)
    assert padded.shape == (1, 4, 2)
    assert torch.equal(padded[0, 3], x[0, 2])
    assert pad_frames_to_multiple(padded, 2, dim=1) is padded


def test_frames_recovered_from_pixel_values_videos(tiny_model):
    pixel_values, grid, frames = _video_inputs(tiny_model)
    recovered = frames_from_pixel_values_videos(pixel_values, grid, tiny_model.config.vision_config)
    assert recovered.shape == frames.shape
    assert torch.allclose(recovered, frames, atol=1e-5)


@torch.inference_mode()
def test_fused_embeds_add_connector_output_to_video_embeds(tiny_model):
    pixel_values, grid, frames = _video_inputs(tiny_model)
    video = tiny_model.video_embeds(pixel_values, grid)
    fused = tiny_model.fuse_video(pixel_values, grid, frames)
    assert fused.shape == video.shape == (int(grid.prod()) // 4, tiny_model.config.text_config.hidden_size)
    assert (fused - video).abs().max() > 1e-3  # the connector really contributes
    features, start = tiny_model.spatial_features(frames)
    assert start == 5 and features.shape[:2] == (1, 4)
    spatial = tiny_model.connector.spatial_embeds(features, start, grid)
    assert torch.allclose(fused, video + spatial, atol=1e-6)


@torch.inference_mode()
def test_odd_frame_count_repeats_last_frame(tiny_model):
    pixel_values, grid, frames = _video_inputs(tiny_model, frames=3)
    assert grid.tolist() == [[2, 4, 6]]  # Qwen side padded 3 -> 4 frames
    padded = torch.cat([frames, frames[:, -1:]], dim=1)
    fused_odd = tiny_model.fuse_video(pixel_values, grid, frames)
    fused_even = tiny_model.fuse_video(pixel_values, grid, padded)
    assert torch.allclose(fused_odd, fused_even, atol=1e-6)
    features, _ = tiny_model.spatial_features(frames)
    assert features.shape[1] == 4


@torch.inference_mode()
def test_spatial_encoder_runs_once_per_generate(tiny_model):
    config = tiny_model.config
    pixel_values, grid, frames = _video_inputs(tiny_model)
    num_video = int(grid.prod()) // 4
    ids = [1, 20, 21, config.vision_start_token_id] + [config.video_token_id] * num_video + [config.vision_end_token_id, 30, 31]
    input_ids = torch.tensor([ids])
    mm_types = (input_ids == config.video_token_id).int() * 2
    calls = {"spatial": 0, "visual": 0}
    hooks = [
        tiny_model.spatial_encoder.register_forward_hook(lambda *a: calls.__setitem__("spatial", calls["spatial"] + 1)),
        tiny_model.model.visual.register_forward_hook(lambda *a: calls.__setitem__("visual", calls["visual"] + 1)),
    ]
    try:
        out = tiny_model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mm_token_type_ids=mm_types,
            pixel_values_videos=pixel_values, video_grid_thw=grid, spatial_pixel_values=frames,
            max_new_tokens=5, min_new_tokens=5, do_sample=False, use_cache=True,
            output_logits=True, return_dict_in_generate=True,
        )
    finally:
        for hook in hooks:
            hook.remove()
    assert out.sequences.shape[1] == input_ids.shape[1] + 5
    assert calls == {"spatial": 1, "visual": 1}
    # generate's first step saw the fused tokens (same logits as a plain forward of our model)
    tiny_model.model.rope_deltas = None
    ref = tiny_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mm_token_type_ids=mm_types,
                     pixel_values_videos=pixel_values, video_grid_thw=grid, spatial_pixel_values=frames).logits[0, -1]
    assert torch.allclose(out.logits[0][0], ref, atol=1e-5)


def test_video_pixel_limits_come_from_video_config_not_image_config(tmp_path):
    import json

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "image_mean": [0.5, 0.5, 0.5]}))
    cfg = VideoProcessingConfig.from_dir(tmp_path)
    assert (cfg.min_pixels, cfg.max_pixels) == (128 * 28 * 28, 768 * 28 * 28)  # qwen_vl_utils video limits
    assert cfg.image_mean == (0.5, 0.5, 0.5)
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({"min_pixels": 3136, "max_pixels": 12544}))
    assert VideoProcessingConfig.from_dir(tmp_path).max_pixels == 12544
