"""The official preset has exactly the facebook/VGGT-1B key layout (built on the meta device)."""

import re

import pytest
import torch

from ros2_spatial_mllm.model.vggt import VGGT, VGGTConfig


@pytest.fixture(scope="module")
def official_state():
    with torch.device("meta"):
        model = VGGT(VGGTConfig.official())
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# Names and shapes read off the reference implementation (DINOv2 ViT-L/14 + 4 registers,
# 24 x (frame, global) blocks with qk-norm, camera head trunk of 4 blocks, DPT depth head).
KNOWN_SHAPES = {
    "aggregator.camera_token": (1, 2, 1, 1024),
    "aggregator.register_token": (1, 2, 4, 1024),
    "aggregator.patch_embed.cls_token": (1, 1, 1024),
    "aggregator.patch_embed.pos_embed": (1, 1 + 37 * 37, 1024),
    "aggregator.patch_embed.register_tokens": (1, 4, 1024),
    "aggregator.patch_embed.mask_token": (1, 1024),
    "aggregator.patch_embed.patch_embed.proj.weight": (1024, 3, 14, 14),
    "aggregator.patch_embed.patch_embed.proj.bias": (1024,),
    "aggregator.patch_embed.blocks.23.ls1.gamma": (1024,),
    "aggregator.patch_embed.blocks.0.attn.qkv.weight": (3072, 1024),
    "aggregator.patch_embed.norm.weight": (1024,),
    "aggregator.frame_blocks.0.norm1.weight": (1024,),
    "aggregator.frame_blocks.23.attn.qkv.weight": (3072, 1024),
    "aggregator.frame_blocks.23.attn.qkv.bias": (3072,),
    "aggregator.frame_blocks.0.attn.q_norm.weight": (64,),
    "aggregator.frame_blocks.0.attn.k_norm.bias": (64,),
    "aggregator.frame_blocks.5.attn.proj.weight": (1024, 1024),
    "aggregator.global_blocks.23.ls1.gamma": (1024,),
    "aggregator.global_blocks.23.ls2.gamma": (1024,),
    "aggregator.global_blocks.0.mlp.fc1.weight": (4096, 1024),
    "aggregator.global_blocks.0.mlp.fc2.weight": (1024, 4096),
    "aggregator.global_blocks.11.norm2.bias": (1024,),
    "camera_head.token_norm.weight": (2048,),
    "camera_head.trunk.3.attn.qkv.weight": (6144, 2048),
    "camera_head.trunk.0.ls1.gamma": (2048,),
    "camera_head.trunk.0.mlp.fc1.weight": (8192, 2048),
    "camera_head.trunk_norm.bias": (2048,),
    "camera_head.empty_pose_tokens": (1, 1, 9),
    "camera_head.embed_pose.weight": (2048, 9),
    "camera_head.poseLN_modulation.1.weight": (6144, 2048),
    "camera_head.pose_branch.fc1.weight": (1024, 2048),
    "camera_head.pose_branch.fc2.weight": (9, 1024),
    "depth_head.norm.weight": (2048,),
    "depth_head.projects.0.weight": (256, 2048, 1, 1),
    "depth_head.projects.3.weight": (1024, 2048, 1, 1),
    "depth_head.resize_layers.0.weight": (256, 256, 4, 4),
    "depth_head.resize_layers.1.weight": (512, 512, 2, 2),
    "depth_head.resize_layers.3.weight": (1024, 1024, 3, 3),
    "depth_head.scratch.layer1_rn.weight": (256, 256, 3, 3),
    "depth_head.scratch.layer4_rn.weight": (256, 1024, 3, 3),
    "depth_head.scratch.refinenet1.resConfUnit1.conv1.weight": (256, 256, 3, 3),
    "depth_head.scratch.refinenet4.resConfUnit2.conv2.bias": (256,),
    "depth_head.scratch.refinenet2.out_conv.weight": (256, 256, 1, 1),
    "depth_head.scratch.output_conv1.weight": (128, 256, 3, 3),
    "depth_head.scratch.output_conv2.0.weight": (32, 128, 3, 3),
    "depth_head.scratch.output_conv2.2.weight": (2, 32, 1, 1),
}

ABSENT = [
    "aggregator.patch_embed.blocks.0.attn.q_norm.weight",  # DINOv2 has no qk-norm
    "camera_head.trunk.0.attn.q_norm.weight",  # camera trunk has no qk-norm
    "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight",  # coarsest fusion has no skip
    "depth_head.scratch.layer1_rn.bias",
    "depth_head.resize_layers.2.weight",  # identity
    "camera_head.adaln_norm.weight",  # no affine
]


def test_official_key_counts(official_state):
    def count(prefix):
        return sum(1 for k in official_state if k.startswith(prefix))

    # DINOv2: 6 singletons + 24 blocks x 14 + final norm 2
    assert count("aggregator.patch_embed.") == 6 + 24 * 14 + 2
    # 24 frame + 24 global blocks x 18 (14 + q_norm/k_norm weight+bias)
    assert count("aggregator.frame_blocks.") == 24 * 18
    assert count("aggregator.global_blocks.") == 24 * 18
    assert count("aggregator.") == 1210
    assert count("camera_head.") == 69
    assert count("depth_head.") == 62
    assert len(official_state) == 1210 + 69 + 62
    assert not any(k.startswith(("point_head.", "track_head.")) for k in official_state)


def test_official_block_key_set(official_state):
    block_suffixes = {re.sub(r"^aggregator\.frame_blocks\.7\.", "", k) for k in official_state if k.startswith("aggregator.frame_blocks.7.")}
    assert block_suffixes == {
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
        "attn.q_norm.weight", "attn.q_norm.bias", "attn.k_norm.weight", "attn.k_norm.bias",
        "attn.proj.weight", "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma",
    }  # fmt: skip
    layer_ids = {int(k.split(".")[2]) for k in official_state if k.startswith("aggregator.global_blocks.")}
    assert layer_ids == set(range(24))


@pytest.mark.parametrize("name,shape", sorted(KNOWN_SHAPES.items()))
def test_official_known_shapes(official_state, name, shape):
    assert official_state.get(name) == shape


@pytest.mark.parametrize("name", ABSENT)
def test_official_absent_keys(official_state, name):
    assert name not in official_state


def test_official_parameter_count_and_config():
    cfg = VGGTConfig.official()
    assert cfg.depth_head_layers == (4, 11, 17, 23)
    assert cfg.patch_start_idx == 5
    with torch.device("meta"):
        model = VGGT(cfg)
    total = sum(p.numel() for p in model.parameters())
    # VGGT-1B is ~1.26B with point + track heads; without them ~1.16B
    assert 1.10e9 < total < 1.20e9
    assert sum(p.numel() for p in model.aggregator.parameters()) == 909_112_320
