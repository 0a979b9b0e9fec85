"""The VGGT patch embed equals an independent DINOv2-with-registers (transformers) given the
same weights: block layout, LayerScale, register insertion, final norm, and the bicubic
antialiased pos_embed resize for non-nominal grids."""

import pytest
import torch

from ros2_spatial_mllm.model.vggt.patch_embed import DinoV2PatchEmbed

transformers = pytest.importorskip("transformers")


def to_transformers_state(ours: dict, depth: int) -> dict:
    """Our DINOv2 names -> transformers Dinov2WithRegistersModel names."""
    out = {
        "embeddings.cls_token": ours["cls_token"],
        "embeddings.mask_token": ours["mask_token"],
        "embeddings.position_embeddings": ours["pos_embed"],
        "embeddings.register_tokens": ours["register_tokens"],
        "embeddings.patch_embeddings.projection.weight": ours["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": ours["patch_embed.proj.bias"],
        "layernorm.weight": ours["norm.weight"],
        "layernorm.bias": ours["norm.bias"],
    }
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        q_w, k_w, v_w = ours[src + "attn.qkv.weight"].chunk(3, dim=0)
        q_b, k_b, v_b = ours[src + "attn.qkv.bias"].chunk(3, dim=0)
        for name, w, b in (("q_proj", q_w, q_b), ("k_proj", k_w, k_b), ("v_proj", v_w, v_b)):
            out[dst + f"attention.{name}.weight"], out[dst + f"attention.{name}.bias"] = w, b
        out[dst + "attention.o_proj.weight"] = ours[src + "attn.proj.weight"]
        out[dst + "attention.o_proj.bias"] = ours[src + "attn.proj.bias"]
        out[dst + "layer_scale1.lambda1"] = ours[src + "ls1.gamma"]
        out[dst + "layer_scale2.lambda1"] = ours[src + "ls2.gamma"]
        for part in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            for kind in ("weight", "bias"):
                out[dst + f"{part}.{kind}"] = ours[src + f"{part}.{kind}"]
    return out


@pytest.mark.parametrize("height,width", [(112, 112), (98, 154)])
def test_patch_embed_matches_transformers_dinov2_with_registers(height, width):
    torch.manual_seed(0)
    ours = DinoV2PatchEmbed(img_size=112, patch_size=14, embed_dim=64, depth=2, num_heads=4, num_register_tokens=4).eval()
    with torch.no_grad():  # make every parameter matter (LayerScale and norms away from their init)
        for param in ours.parameters():
            param.add_(0.1 * torch.randn_like(param))
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, image_size=112,
        patch_size=14, num_register_tokens=4, layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True,
    )  # fmt: skip
    reference = transformers.Dinov2WithRegistersModel(config).eval()
    missing, unexpected = reference.load_state_dict(to_transformers_state(ours.state_dict(), 2), strict=False)
    assert not unexpected and all("pooler" in k for k in missing)
    images = torch.randn(3, 3, height, width)
    with torch.no_grad():
        expected = reference(pixel_values=images).last_hidden_state[:, 1 + 4 :]
        got = ours(images)
    assert got.shape == expected.shape == (3, (height // 14) * (width // 14), 64)
    assert torch.allclose(got, expected, atol=1e-4)
