"""The encoder backend interface shared by the core (inference.py) and the node.

A backend runs the prefill-only visual stages of the Spatial-MLLM; the LLM always runs in
PyTorch (ros2_spatial_mllm/backends/llm.py). All tensors are torch tensors on the backend's
device; frames are the same resized frames both encoders see:

    frames [B, S, 3, H, W] float in [0, 1], S even (pad_frames_to_multiple), H, W multiples of 28

    vision_encoder(frames)    -> video_embeds [B*S/2*H/28*W/28, hidden]  (Qwen2.5-VL ViT+merger)
    spatial_encoder(frames)   -> spatial_features [B, S, 5 + (H/14)*(W/14), 2C] (VGGT aggregator)
    spatial_geometry(frames)  -> dict(pose_enc [B,S,9], depth [B,S,H,W,1], depth_conf [B,S,H,W][, pair_pose [B,S-1,6]])
    connector(packed_spatial [N, 2C*2*4]) -> spatial_embeds [N, hidden]
    fuse_video(frames)        -> fused video tokens [N, hidden] = video_embeds + spatial_embeds

Only the first four differ between backends; `fuse_video` packs the spatial tokens into Qwen's
merged order (connector.pack_spatial_tokens, a reshape/permute) and adds the two.
"""
from __future__ import annotations

import abc
from typing import Any

import torch

PATCH_START_IDX = 5  # camera + 4 register tokens per frame (VGGT)


class EncoderBackend(abc.ABC):
    """Runs the visual stages of one SpatialMLLMForConditionalGeneration."""

    name = "abstract"

    def __init__(self, model: Any):
        self.model = model
        vision = model.config.vision_config
        self.temporal_patch = int(vision.temporal_patch_size)
        self.merge = int(vision.spatial_merge_size)
        self.patch = int(vision.patch_size)

    @property
    def device(self) -> torch.device:
        """Device of the LLM (encoder weights may have been released to 'meta')."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the fused tokens = the LLM's embedding dtype."""
        return self.model.get_input_embeddings().weight.dtype

    @abc.abstractmethod
    def vision_encoder(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, S, 3, H, W] -> video_embeds [N, hidden]."""

    @abc.abstractmethod
    def spatial_encoder(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, S, 3, H, W] -> spatial_features [B, S, P, 2C]."""

    @abc.abstractmethod
    def spatial_geometry(self, frames: torch.Tensor) -> dict:
        """frames [B, S, 3, H, W] -> dict(pose_enc, depth, depth_conf)."""

    @abc.abstractmethod
    def connector(self, packed_spatial: torch.Tensor) -> torch.Tensor:
        """packed_spatial [N, 2C*tp*m*m] -> spatial_embeds [N, hidden]."""

    def check_frames(self, frames: torch.Tensor) -> None:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, S, 3, H, W], got {tuple(frames.shape)}")
        side = self.patch * self.merge
        if frames.shape[1] % self.temporal_patch:
            raise ValueError(f"{frames.shape[1]} frames: pad to a multiple of {self.temporal_patch}")
        if frames.shape[3] % side or frames.shape[4] % side:
            raise ValueError(f"frame size {tuple(frames.shape[3:])} is not a multiple of {side}")

    def pack(self, spatial_features: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """[B, S, P, 2C] -> [N, 2C*tp*m*m] in Qwen's merged video-token order."""
        from ros2_spatial_mllm.model.connector import pack_spatial_tokens

        patches = spatial_features[:, :, PATCH_START_IDX:]
        return pack_spatial_tokens(patches, height // self.patch, width // self.patch,
                                   self.temporal_patch, self.merge)

    def fuse_video(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, S, 3, H, W] -> fused video tokens [N, hidden] (model dtype)."""
        self.check_frames(frames)
        video = self.vision_encoder(frames)
        spatial = self.connector(self.pack(self.spatial_encoder(frames), *frames.shape[3:]))
        if spatial.shape != video.shape:
            raise ValueError(f"spatial tokens {tuple(spatial.shape)} != video {tuple(video.shape)}")
        return (video.to(self.dtype) + spatial.to(self.dtype))

    def close(self) -> None:
        """Free backend resources (sessions, engines)."""
