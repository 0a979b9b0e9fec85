"""Export-friendly wrappers of the Spatial-MLLM encoders (same weights, shape-only control flow).

Each wrapper takes and returns plain tensors, and computes everything that depends on the frame
count or image size from tensor shapes (no `.tolist()`, no Python loops over data), so
`torch.onnx.export` produces graphs with a dynamic frame count and image size.

    SpatialEncoderExport  images [B, S, 3, H, W] in [0, 1] -> spatial_features [B, S, P, 2C]
    SpatialGeometryExport images [B, S, 3, H, W] in [0, 1] -> pose_enc [B, S, 9],
                          depth [B, S, H, W, 1], depth_conf [B, S, H, W]   (sampling heads)
    VisionEncoderExport   frames [B, S, 3, H, W] in [0, 1] (S even, H, W multiples of 28)
                          -> video_embeds [B*S/2*H/28*W/28, hidden]  (Qwen2.5-VL ViT + merger)
    ConnectorExport       packed_spatial [N, 2C*2*4] -> spatial_embeds [N, hidden]

VisionEncoderExport re-expresses Qwen2.5-VL's vision forward without cu_seqlens: Qwen attends
within each temporal patch (full layers) and within windows of a temporal patch (window layers);
here temporal patches are the batch dimension and windows are an attention mask built from the
patch grid, with tokens kept in Qwen's merge-block order (so no window permutation is needed:
attention is permutation-equivariant and the merger groups the same 4 tokens).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _cubic_aa_filter(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys cubic kernel (a = -0.5, the one torch uses for antialiased bicubic)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def aa_bicubic_matrix(in_size: int, out_size, device=None) -> torch.Tensor:
    """[out, in] matrix M with M @ v == F.interpolate(v, out, 'bicubic', antialias=True) along
    one axis (align_corners=False; the support widens by in/out when shrinking; rows
    renormalised at the borders). `out_size` may be a traced shape value."""
    out_idx = torch.arange(out_size, device=device, dtype=torch.float32)
    count = torch.ones_like(out_idx).sum()  # out as a tensor, so tracing keeps it dynamic
    scale = float(in_size) / count
    centers = (out_idx + 0.5) * scale  # [out]
    inv = torch.clamp(1.0 / scale, max=1.0)
    taps = torch.arange(in_size, device=device, dtype=torch.float32) + 0.5  # [in]
    weights = _cubic_aa_filter((taps.unsqueeze(0) - centers.unsqueeze(1)) * inv)
    return weights / weights.sum(dim=1, keepdim=True)


def export_pos_embed(patch_embed: nn.Module, grid_h, grid_w, dtype: torch.dtype) -> torch.Tensor:
    """Replacement of DinoV2PatchEmbed.interpolated_pos_embed with two matmuls (exportable:
    torch's legacy ONNX exporter has no antialiased bicubic). Equal to it at every grid size,
    including the identity at the nominal grid."""
    pos = patch_embed.pos_embed.float()
    side = patch_embed.grid_size
    grid = pos[0, 1:].reshape(side, side, -1)  # [M, M, C]
    rows = aa_bicubic_matrix(side, grid_h, pos.device)  # [gh, M]
    cols = aa_bicubic_matrix(side, grid_w, pos.device)  # [gw, M]
    grid = torch.einsum("hm,mnc->hnc", rows, grid)
    grid = torch.einsum("wn,hnc->hwc", cols, grid).reshape(1, -1, pos.shape[-1])
    return torch.cat([pos[:, :1], grid], dim=1).to(dtype)


class _ExportablePosEmbed:
    """Context manager swapping interpolated_pos_embed on a DinoV2PatchEmbed instance."""

    def __init__(self, aggregator: nn.Module):
        self.patch_embed = aggregator.patch_embed
        self.active = hasattr(self.patch_embed, "interpolated_pos_embed")

    def __enter__(self):
        if self.active:
            pe = self.patch_embed
            pe.interpolated_pos_embed = lambda gh, gw, dtype: export_pos_embed(pe, gh, gw, dtype)
        return self

    def __exit__(self, *exc):
        if self.active:
            del self.patch_embed.interpolated_pos_embed  # back to the class method


class SpatialEncoderExport(nn.Module):
    """VGGT aggregator, one layer: images [B, S, 3, H, W] -> spatial_features [B, S, P, 2C]."""

    def __init__(self, spatial_encoder: nn.Module):
        super().__init__()
        self.aggregator = spatial_encoder.vggt_model.aggregator
        self.layer_idx = int(spatial_encoder.layer_idx)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with _ExportablePosEmbed(self.aggregator):
            layers, _ = self.aggregator(images, output_layers=[self.layer_idx])
        return layers[0]


class SpatialGeometryExport(nn.Module):
    """Full VGGT with camera + depth heads (what frame sampling uses), DPT chunking off; a fourth
    output, pair_pose [B, S-1, 6], when the model has a pair-pose head."""

    def __init__(self, spatial_encoder: nn.Module):
        super().__init__()
        self.vggt = spatial_encoder.vggt_model
        if self.vggt.camera_head is None or self.vggt.depth_head is None:
            raise ValueError("geometry export needs a VGGT with camera and depth heads")

    def forward(self, images: torch.Tensor):
        head = self.vggt.depth_head
        chunk, head.frames_chunk_size = head.frames_chunk_size, None  # Python loop over frames
        try:
            with _ExportablePosEmbed(self.vggt.aggregator):
                out = self.vggt(images)
        finally:
            head.frames_chunk_size = chunk
        if "pair_pose" in out:
            return out["pose_enc"], out["depth"], out["depth_conf"], out["pair_pose"]
        return out["pose_enc"], out["depth"], out["depth_conf"]


class VisionEncoderExport(nn.Module):
    """Qwen2.5-VL vision tower: frames [B, S, 3, H, W] in [0, 1] -> [B*t*hb*wb, out_hidden]."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        cfg = visual.config
        self.visual = visual
        self.patch = int(cfg.patch_size)
        self.temporal = int(cfg.temporal_patch_size)
        self.merge = int(cfg.spatial_merge_size)
        self.window_units = int(cfg.window_size) // self.merge // self.patch
        self.full_layers = set(int(i) for i in visual.fullatt_block_indexes)

    def patch_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, S, 3, H, W] -> patch vectors [B*t, gh*gw, 3*tp*p*p], Qwen's order."""
        b, s, c, h, w = frames.shape
        tp, p, m = self.temporal, self.patch, self.merge
        mean = torch.tensor(CLIP_MEAN, device=frames.device, dtype=frames.dtype).view(1, 1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=frames.device, dtype=frames.dtype).view(1, 1, 3, 1, 1)
        x = (frames - mean) / std
        x = x.reshape(b, s // tp, tp, c, h // p // m, m, p, w // p // m, m, p)
        x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)  # [B, t, hb, wb, mh, mw, C, tp, py, px]
        return x.reshape(b * (s // tp), (h // p) * (w // p), c * tp * p * p)

    def grid_positions(self, hb: int, wb: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions [L, 2] (row, col) in merge-block order, window id [L]) for an hb x wb grid."""
        m = self.merge
        rb = torch.arange(hb, device=device).view(hb, 1, 1, 1)
        cb = torch.arange(wb, device=device).view(1, wb, 1, 1)
        mr = torch.arange(m, device=device).view(1, 1, m, 1)
        mc = torch.arange(m, device=device).view(1, 1, 1, m)
        zero = torch.zeros(hb, wb, m, m, dtype=torch.long, device=device)
        rows = (rb * m + mr + zero).reshape(-1)
        cols = (cb * m + mc + zero).reshape(-1)
        window = ((rb // self.window_units) * 65536 + cb // self.window_units + zero).reshape(-1)
        return torch.stack([rows, cols], dim=-1), window

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        vis = self.visual
        x = self.patch_tokens(frames)
        weight = vis.patch_embed.proj.weight
        x = F.linear(x.to(weight.dtype), weight.reshape(weight.shape[0], -1))  # [G, L, D]
        groups, length, dim = x.shape
        hb, wb = frames.shape[3] // (self.patch * self.merge), frames.shape[4] // (self.patch * self.merge)
        positions, window = self.grid_positions(hb, wb, frames.device)
        cos, sin = vis.rotary_pos_emb(x, positions)  # [L, head_dim] each
        same_window = window.unsqueeze(0) == window.unsqueeze(1)  # [L, L]
        window_mask = torch.zeros(length, length, dtype=x.dtype, device=x.device).masked_fill(
            ~same_window, float("-inf"))
        for index, block in enumerate(vis.blocks):
            attn = block.attn
            h = block.norm1(x)
            qkv = attn.qkv(h).reshape(groups, length, 3, attn.num_heads, -1)
            q, k, v = qkv.permute(2, 0, 1, 3, 4).unbind(0)  # [G, L, heads, hd]
            q, k = _rotary(q, k, cos, sin)
            mask = None if index in self.full_layers else window_mask
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                 v.transpose(1, 2), attn_mask=mask)
            x = x + attn.proj(out.transpose(1, 2).reshape(groups, length, dim))
            x = x + block.mlp(block.norm2(x))
        return vis.merger(x)  # [G*L/m^2, out_hidden], order (b, t, hb, wb)


def _rotary(q, k, cos, sin):
    """Qwen's vision RoPE (float32 math) on q, k [G, L, heads, hd] with cos/sin [L, hd]."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    return apply_rotary_pos_emb_vision(q, k, cos, sin)


class ConnectorExport(nn.Module):
    """Connector MLP: packed_spatial [N, 2C*tp*m*m] -> spatial_embeds [N, hidden].

    Packing (pure reshape/permute, connector.pack_spatial_tokens) stays in torch."""

    def __init__(self, connector: nn.Module):
        super().__init__()
        self.connector = connector

    def forward(self, packed_spatial: torch.Tensor) -> torch.Tensor:
        c = self.connector
        return c.mlp(c.ln_q(packed_spatial.to(c.mlp[0].weight.dtype)))
