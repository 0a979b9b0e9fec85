"""Spatial-MLLM = transformers' Qwen2.5-VL + VGGT spatial encoder + "mlp_add" connector.

Video path at prefill (the only place the spatial encoder runs):
    frames [B, S, 3, H, W] in [0, 1] (S even, H and W multiples of 28; the same resized frames
    Qwen patchified into pixel_values_videos [B*S*gh*gw, 3*2*14*14])
    video_embeds   = Qwen ViT + merger(pixel_values_videos)           # [N, hidden]
    spatial layer  = VGGT aggregator(frames)[layer_idx]                # [B, S, 5+gh*gw, 2C]
    fused          = video_embeds + connector(spatial layer)           # [N, hidden]
    fused replaces the <|video_pad|> embeddings (Qwen's masked scatter via mm_encoder_outputs).
Decode steps (KV cache) carry no pixels, so neither encoder runs again.

Module names (transformers 5): `model.visual`, `model.language_model`, `lm_head`,
`spatial_encoder.vggt_model`, `connector`. `checkpoint.py` maps them to the official
checkpoint prefixes (`visual.`, `model.`, ...).
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .config import SpatialMLLMConfig, vggt_config_from_spatial_config
from .connector import SpatialConnector, pad_frames_to_multiple
from .processing import frames_from_pixel_values_videos
from .spatial_encoder import SpatialEncoder

__all__ = ["SpatialMLLMForConditionalGeneration"]


class _GridTimedQwenModel(Qwen2_5_VLModel):
    """Qwen2.5-VL's inner model, whose video tokens may take per-grid times.

    Qwen's `get_rope_index` multiplies each video's `second_per_grid_ts` entry by
    tokens_per_second and hands it here as `time_interval`: a scalar spaces the T grids evenly
    (ids t * interval, Qwen's rule). A row of a [num_videos, T_max] `second_per_grid_ts` (each grid's
    time in seconds, `processing.grid_times`) arrives as a [T_max] tensor of temporal ids instead;
    a video of T < T_max grids reads the first T (a batch of videos of several lengths pads the rest)."""

    def get_vision_position_ids(self, start_position, grid_thw, temp_merge_size=1, spatial_merge_size=1,
                                time_interval=1.0, device=None):
        if not (isinstance(time_interval, torch.Tensor) and time_interval.dim() == 1):
            return super().get_vision_position_ids(start_position, grid_thw, temp_merge_size, spatial_merge_size,
                                                   time_interval, device)
        t = int(grid_thw[0]) // temp_merge_size
        h, w = int(grid_thw[1]) // spatial_merge_size, int(grid_thw[2]) // spatial_merge_size
        if time_interval.numel() < t or not torch.isfinite(time_interval[:t]).all():
            raise ValueError(f"{time_interval.numel()} grid times for {t} temporal grids (need {t} finite)")
        temporal = time_interval[:t].to(device).round().long() + start_position  # [T]
        rows = torch.arange(h, device=device) + start_position
        cols = torch.arange(w, device=device) + start_position
        grid = torch.meshgrid(temporal, rows, cols, indexing="ij")  # 3 x [T, h, w], tokens in (t, h, w) order
        return torch.stack(grid, dim=0).reshape(3, -1)


class SpatialMLLMForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL with spatial tokens fused into its video tokens (see module docstring).

    Extra forward/generate input: `spatial_pixel_values` [B, S, 3, H, W] in [0, 1]. When it is
    omitted, the frames are recovered exactly from `pixel_values_videos` (CLIP mean/std).
    """

    config_class = SpatialMLLMConfig
    config: SpatialMLLMConfig

    def __init__(self, config: SpatialMLLMConfig):
        super().__init__(config)
        if type(self.model) is Qwen2_5_VLModel:  # same tensors; only the video positions' rule grows
            self.model.__class__ = _GridTimedQwenModel
        vggt_config = vggt_config_from_spatial_config(config.spatial_config)
        self.spatial_encoder = SpatialEncoder(vggt_config, layer_idx=config.spatial_embeds_layer_idx)
        # keep VGGT's own initialisation: mark it initialised for transformers' post_init
        for tensor in list(self.spatial_encoder.parameters()) + list(self.spatial_encoder.buffers()):
            tensor._is_hf_initialized = True
        vision = config.vision_config
        self.connector = SpatialConnector(
            spatial_dim=self.spatial_encoder.output_dim,
            llm_hidden_size=config.text_config.hidden_size,
            temporal_patch_size=vision.temporal_patch_size,
            spatial_merge_size=vision.spatial_merge_size,
        )
        # the connector keeps torch's fan-in initialisation (std ~ 1/sqrt(3 * fan_in)): the
        # LLM's initializer_range would make a 1024-wide Linear of the tiny preset amplify 4x
        for tensor in self.connector.parameters():
            tensor._is_hf_initialized = True
        self.post_init()

    # ---- the three stages of the video path (inference.py times them separately) -------------

    def video_embeds(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor) -> torch.Tensor:
        """Qwen ViT + merger: [B*S*gh*gw, 3*tp*14*14] -> [N, hidden] merged video tokens."""
        out = self.model.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        return torch.cat(tuple(out.pooler_output), dim=0)

    def spatial_features(self, spatial_pixel_values: torch.Tensor) -> tuple[torch.Tensor, int]:
        """VGGT aggregator: frames [B, S, 3, H, W] in [0, 1] -> ([B, S', P, 2C], patch_start_idx).

        S' = S rounded up to the temporal patch by repeating the last frame."""
        frames = pad_frames_to_multiple(spatial_pixel_values, self.connector.temporal_patch_size, dim=1)
        dtype = next(self.spatial_encoder.parameters()).dtype
        return self.spatial_encoder(frames.to(dtype))

    def fuse_video(
        self,
        pixel_values_videos: torch.Tensor,
        video_grid_thw: torch.Tensor,
        spatial_pixel_values: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """All three stages: returns fused video tokens [N, hidden]."""
        if spatial_pixel_values is None:
            spatial_pixel_values = frames_from_pixel_values_videos(
                pixel_values_videos, video_grid_thw, self.config.vision_config
            )
        video = self.video_embeds(pixel_values_videos, video_grid_thw)
        features, patch_start_idx = self.spatial_features(spatial_pixel_values)
        return self.connector(video, features, patch_start_idx, video_grid_thw)

    # ---- transformers entry points ----------------------------------------------------------

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values=None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        pixel_values: Optional[torch.Tensor] = None,
        pixel_values_videos: Optional[torch.Tensor] = None,
        image_grid_thw: Optional[torch.LongTensor] = None,
        video_grid_thw: Optional[torch.LongTensor] = None,
        mm_token_type_ids: Optional[torch.IntTensor] = None,
        second_per_grid_ts: Optional[torch.Tensor] = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: Optional[dict] = None,
        spatial_pixel_values: Optional[torch.Tensor] = None,
        **kwargs,
    ):
        """Qwen2.5-VL forward; with `pixel_values_videos` the fused tokens replace the video
        tokens (spatial_pixel_values: [B, S, 3, H, W] in [0, 1], optional, see class doc)."""
        if pixel_values_videos is not None:
            if mm_encoder_outputs is not None and mm_encoder_outputs.get("video") is not None:
                raise ValueError("give either pixel_values_videos or mm_encoder_outputs['video']")
            fused = self.fuse_video(pixel_values_videos, video_grid_thw, spatial_pixel_values)
            mm_encoder_outputs = dict(mm_encoder_outputs or {})
            mm_encoder_outputs["video"] = BaseModelOutputWithPooling(pooler_output=(fused,))
            pixel_values_videos = None
        if pixel_values is not None:  # images take Qwen's path (no spatial fusion for images)
            mm_encoder_outputs = dict(mm_encoder_outputs or {})
            mm_encoder_outputs["image"] = self.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
            pixel_values = None
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            second_per_grid_ts=second_per_grid_ts,
            logits_to_keep=logits_to_keep,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )

    def _supports_mm_encoder_outputs(self) -> bool:
        """Keep `generate` from pre-encoding videos with Qwen's encoder alone: pixels must reach
        `forward` at prefill so that the spatial tokens are fused (they are dropped afterwards)."""
        return False

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool = False, **kwargs):
        """As Qwen's, plus: `spatial_pixel_values` only reaches the prefill step."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            inputs.pop("spatial_pixel_values", None)
        return inputs


try:  # AutoModelForImageTextToText.from_config(SpatialMLLMConfig(...)) builds this class
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.register(SpatialMLLMConfig, SpatialMLLMForConditionalGeneration)
except (ImportError, ValueError):  # pragma: no cover - older/newer auto classes or re-registration
    pass
