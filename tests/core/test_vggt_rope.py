"""2D RoPE: position layout, rotation properties, and export without data-dependent ints."""

import importlib.util

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.model.vggt.layers.attention import Attention
from ros2_spatial_mllm.model.vggt.layers.rope import (
    RotaryPositionEmbedding2D,
    apply_rope,
    patch_grid_positions,
    token_positions,
)

HAS_ORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None


def test_special_tokens_at_zero_and_patches_from_one():
    pos = token_positions(batch=3, grid_h=2, grid_w=3, num_special_tokens=5)
    assert pos.shape == (3, 5 + 6, 2) and pos.dtype == torch.long
    assert (pos[:, :5] == 0).all()
    expected = torch.tensor([[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]])  # (row+1, col+1), row-major
    assert torch.equal(pos[1, 5:], expected)
    assert torch.equal(patch_grid_positions(1, 2, 3)[0], torch.cartesian_prod(torch.arange(2), torch.arange(3)))


def reference_rope(tokens, positions, base=100.0):
    """Independent table-lookup formulation (the way the reference implementation does it)."""
    half = tokens.shape[-1] // 2
    inv_freq = 1.0 / base ** (torch.arange(0, half, 2).float() / half)
    table = torch.outer(torch.arange(int(positions.max()) + 1).float(), inv_freq)
    table = torch.cat([table, table], dim=-1)
    out = []
    for axis, feats in enumerate(tokens.chunk(2, dim=-1)):
        cos = table.cos()[positions[..., axis]][:, None]
        sin = table.sin()[positions[..., axis]][:, None]
        x1, x2 = feats.chunk(2, dim=-1)
        out.append(feats * cos + torch.cat([-x2, x1], dim=-1) * sin)
    return torch.cat(out, dim=-1)


def test_rope_matches_table_formulation_and_is_identity_at_zero():
    torch.manual_seed(0)
    rope = RotaryPositionEmbedding2D(100.0)
    tokens = torch.randn(2, 4, 5 + 12, 16)  # [B, heads, N, head_dim]
    pos = token_positions(2, 3, 4, 5)
    out = rope(tokens, pos)
    assert torch.allclose(out, reference_rope(tokens, pos), atol=1e-5)
    assert torch.allclose(out[:, :, :5], tokens[:, :, :5])  # special tokens unrotated
    assert torch.allclose(out.norm(dim=-1), tokens.norm(dim=-1), atol=1e-5)  # a rotation


def test_rope_scores_depend_on_relative_position_only():
    torch.manual_seed(1)
    rope = RotaryPositionEmbedding2D(100.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        rq = rope(q, torch.tensor([[pq]]))
        rk = rope(k, torch.tensor([[pk]]))
        return (rq * rk).sum()

    assert torch.allclose(score([3, 5], [1, 2]), score([7, 9], [5, 6]), atol=1e-5)
    assert not torch.allclose(score([3, 5], [1, 2]), score([3, 5], [2, 2]), atol=1e-3)


def test_precomputed_tables_match_per_call_rope_bitwise():
    """cos/sin evaluated once (per batch row or once for the grid, broadcast) rotate exactly like
    rope(tokens, positions), in float32 and bfloat16."""
    torch.manual_seed(2)
    rope = RotaryPositionEmbedding2D(100.0)
    pos = token_positions(3, 4, 5, 5)  # [3, 25, 2]
    cos, signed_sin = rope.cos_sin(pos, 16)
    grid_cos, grid_sin = rope.grid_cos_sin(4, 5, 5, 16)
    assert cos.shape == (3, 1, 25, 16) and grid_cos.shape == (1, 1, 25, 16) and grid_cos.dtype == torch.float32
    assert torch.equal(grid_cos.expand_as(cos), cos) and torch.equal(grid_sin.expand_as(signed_sin), signed_sin)
    for dtype in (torch.float32, torch.bfloat16):
        tokens = torch.randn(3, 2, 25, 16).to(dtype)
        expected = rope(tokens, pos)
        assert expected.dtype == dtype
        assert torch.equal(apply_rope(tokens, cos, signed_sin), expected)
        assert torch.equal(apply_rope(tokens, grid_cos, grid_sin), expected)
    tokens = torch.randn(3, 2, 25, 16)
    assert torch.allclose(apply_rope(tokens, grid_cos, grid_sin), reference_rope(tokens, pos), atol=1e-5)


def test_attention_with_tables_equals_attention_with_positions():
    torch.manual_seed(3)
    attn = Attention(32, num_heads=2, qk_norm=True, rope=RotaryPositionEmbedding2D(100.0)).eval()
    x, pos = torch.randn(2, 5 + 6, 32), token_positions(2, 2, 3, 5)
    tables = attn.rope.grid_cos_sin(2, 3, 5, 16)
    with torch.no_grad():
        by_pos, by_tables = attn(x, pos=pos), attn(x, rope_cos_sin=tables)
        assert torch.equal(by_pos, by_tables)
        assert not torch.allclose(by_pos, attn(x), atol=1e-4)  # RoPE really is applied


class GridRope(torch.nn.Module):
    """Positions / tables built from the input's shape + RoPE: what the aggregator traces.
    mode "positions": rope(tokens, positions); mode "tables": grid_cos_sin + apply_rope."""

    def __init__(self, mode="positions"):
        super().__init__()
        self.rope = RotaryPositionEmbedding2D(100.0)
        self.mode = mode

    def forward(self, tokens, grid):  # tokens [B, heads, 5 + h*w, d], grid [h, w] (only its shape is used)
        if self.mode == "tables":
            tables = self.rope.grid_cos_sin(grid.shape[0], grid.shape[1], 5, tokens.shape[-1], tokens.device)
            return apply_rope(tokens, *tables)
        pos = token_positions(tokens.shape[0], grid.shape[0], grid.shape[1], 5, device=tokens.device)
        return self.rope(tokens, pos)


def _run_ort(path, tokens, grid):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, [tokens.numpy(), grid.numpy()])))[0]


@pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed")
@pytest.mark.parametrize("mode", ["positions", "tables"])
def test_rope_exports_with_dynamic_grid_torchscript(tmp_path, mode):
    """Export at a 3x4 grid, run at 5x2: nothing about the grid may be baked in."""
    module = GridRope(mode).eval()
    tokens, grid = torch.randn(2, 2, 5 + 12, 8), torch.zeros(3, 4)
    path = tmp_path / "rope.onnx"
    torch.onnx.export(
        module, (tokens, grid), str(path), dynamo=False, input_names=["tokens", "grid"],
        dynamic_axes={"tokens": {0: "b", 2: "n"}, "grid": {0: "h", 1: "w"}}, opset_version=17,
    )  # fmt: skip
    tokens2, grid2 = torch.randn(3, 2, 5 + 10, 8), torch.zeros(5, 2)
    np.testing.assert_allclose(_run_ort(path, tokens2, grid2), module(tokens2, grid2).numpy(), atol=1e-5)


@pytest.mark.skipif(not (HAS_ORT and HAS_ONNXSCRIPT), reason="onnx/onnxruntime/onnxscript not installed")
@pytest.mark.parametrize("mode", ["positions", "tables"])
def test_rope_exports_with_dynamic_grid_dynamo(tmp_path, mode):
    """torch.export refuses data-dependent Python ints (e.g. int(positions.max())) on symbolic shapes."""
    module = GridRope(mode).eval()
    tokens, grid = torch.randn(2, 2, 5 + 12, 8), torch.zeros(3, 4)
    auto = torch.export.Dim.AUTO
    path = tmp_path / "rope_dynamo.onnx"
    torch.onnx.export(module, (tokens, grid), str(path), dynamo=True, dynamic_shapes=({2: auto}, {0: auto, 1: auto}))
    tokens2, grid2 = torch.randn(2, 2, 5 + 10, 8), torch.zeros(5, 2)
    np.testing.assert_allclose(_run_ort(path, tokens2, grid2), module(tokens2, grid2).numpy(), atol=1e-5)
