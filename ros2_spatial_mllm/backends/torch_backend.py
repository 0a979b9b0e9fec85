"""PyTorch backend (default): the model's own modules, any device and dtype."""
from __future__ import annotations

import torch

from .base import EncoderBackend


class TorchBackend(EncoderBackend):
    """Runs the stages with the model's modules (transformers' Qwen ViT, A's VGGT)."""

    name = "torch"

    @torch.inference_mode()
    def vision_encoder(self, frames: torch.Tensor) -> torch.Tensor:
        from ros2_spatial_mllm.model.processing import VideoProcessingConfig, patchify_video

        vision = self.model.config.vision_config
        cfg = VideoProcessingConfig(patch_size=vision.patch_size,
                                    temporal_patch_size=vision.temporal_patch_size,
                                    merge_size=vision.spatial_merge_size)
        pixels, grids = zip(*(patchify_video(video.float(), cfg) for video in frames))
        pixel_values = torch.cat(pixels).to(self.device)
        grid = torch.cat(grids).to(self.device)
        return self.model.video_embeds(pixel_values, grid)

    @torch.inference_mode()
    def spatial_encoder(self, frames: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.spatial_encoder.parameters()).dtype
        features, _ = self.model.spatial_encoder(frames.to(device=self.device, dtype=dtype))
        return features

    @torch.inference_mode()
    def spatial_geometry(self, frames: torch.Tensor) -> dict:
        dtype = next(self.model.spatial_encoder.parameters()).dtype
        out = self.model.spatial_encoder.vggt_model(frames.to(device=self.device, dtype=dtype))
        return {k: out[k] for k in ("pose_enc", "depth", "depth_conf", "pair_pose") if k in out}

    @torch.inference_mode()
    def connector(self, packed_spatial: torch.Tensor) -> torch.Tensor:
        c = self.model.connector
        return c.mlp(c.ln_q(packed_spatial.to(c.mlp[0].weight.dtype)))
