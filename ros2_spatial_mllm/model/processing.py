"""Video preprocessing for the Spatial-MLLM (pure torch, no torchvision/PIL).

Qwen2.5-VL's video processor facts reproduced here:
* `smart_resize`: sides rounded to multiples of factor = patch 14 * merge 2 = 28, total pixels
  kept within [min_pixels, max_pixels], aspect ratio kept as well as possible.
* frames are rescaled to [0, 1], normalised with the CLIP mean/std and cut into patches
  [t * gh * gw, 3 * tp * 14 * 14] ordered (t, h_block, w_block, merge_row, merge_col), with
  the channel/temporal/pixel order (C, tp, py, px) inside a patch; S is padded to a multiple
  of tp = 2 by repeating the last frame.
Both encoders get the same resized frames: `pixel_values_videos` for Qwen's ViT and the
[S, 3, H, W] tensor in [0, 1] for VGGT. `frames_from_pixel_values_videos` inverts the patching.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "VideoProcessingConfig",
    "smart_resize",
    "resize_frames",
    "patchify_video",
    "frames_from_pixel_values_videos",
    "video_chat_inputs",
    "grid_times",
]

CLIP_MEAN: Tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VideoProcessingConfig:
    """Resize/patch settings, read from a checkpoint's (video_)preprocessor_config.json."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    # per-frame video limits of qwen_vl_utils (used by the official evaluation): 128 / 768 tokens of 28x28
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    image_mean: Tuple[float, ...] = field(default=CLIP_MEAN)
    image_std: Tuple[float, ...] = field(default=CLIP_STD)

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "VideoProcessingConfig":
        """video_preprocessor_config.json if present (all fields). Otherwise preprocessor_config.json
        gives patch sizes and mean/std only: its pixel limits are the image processor's (up to
        12.8 MP in the official files), so the video defaults above are kept."""
        video = Path(model_dir) / "video_preprocessor_config.json"
        if video.is_file():
            return cls.from_dict(json.loads(video.read_text()))
        image = Path(model_dir) / "preprocessor_config.json"
        if image.is_file():
            values = json.loads(image.read_text())
            for key in ("min_pixels", "max_pixels", "size"):
                values.pop(key, None)
            return cls.from_dict(values)
        return cls()

    @classmethod
    def from_dict(cls, values: dict) -> "VideoProcessingConfig":
        size = values.get("size") or {}
        out = cls()
        out.patch_size = int(values.get("patch_size", out.patch_size))
        out.temporal_patch_size = int(values.get("temporal_patch_size", out.temporal_patch_size))
        out.merge_size = int(values.get("merge_size", out.merge_size))
        out.min_pixels = int(values.get("min_pixels") or size.get("shortest_edge") or out.min_pixels)
        out.max_pixels = int(values.get("max_pixels") or size.get("longest_edge") or out.max_pixels)
        out.image_mean = tuple(values.get("image_mean", out.image_mean))
        out.image_std = tuple(values.get("image_std", out.image_std))
        return out


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 3136, max_pixels: int = 324576):
    """Qwen's resize rule -> (new_height, new_width), both multiples of `factor`."""
    if min(height, width) <= 0:
        raise ValueError(f"bad frame size {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {height}x{width} exceeds 200")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_frames(frames: Sequence[np.ndarray] | np.ndarray, config: VideoProcessingConfig) -> torch.Tensor:
    """frames: S x [H, W, 3] uint8 RGB (all the same size) -> [S, 3, h, w] float32 in [0, 1],
    h and w from `smart_resize` (OpenCV: area filter when shrinking, bicubic when enlarging)."""
    import cv2

    if len(frames) == 0:
        raise ValueError("no frames given")
    shapes = {tuple(np.shape(f)) for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"all frames must have the same size, got {sorted(shapes)}")
    height, width, *channels = shapes.pop()
    if channels != [3]:
        raise ValueError(f"frames must be HxWx3 RGB, got shape {(height, width, *channels)}")
    new_h, new_w = smart_resize(height, width, config.factor, config.min_pixels, config.max_pixels)
    interpolation = cv2.INTER_AREA if new_h * new_w < height * width else cv2.INTER_CUBIC
    out = np.empty((len(frames), new_h, new_w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frame.dtype}")
        out[i] = frame if (new_h, new_w) == (height, width) else cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def patchify_video(frames: torch.Tensor, config: VideoProcessingConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """frames [S, 3, H, W] in [0, 1] (H, W multiples of 28) ->
    (pixel_values_videos [t*gh*gw, 3*tp*p*p], video_grid_thw [1, 3] = (t, gh, gw)), S padded to tp."""
    tp, p, m = config.temporal_patch_size, config.patch_size, config.merge_size
    if frames.shape[0] % tp:
        frames = torch.cat([frames, frames[-1:].repeat(tp - frames.shape[0] % tp, 1, 1, 1)])
    mean = torch.tensor(config.image_mean, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    x = (frames - mean) / std
    s, c, h, w = x.shape
    t, gh, gw = s // tp, h // p, w // p
    x = x.reshape(t, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # [t, hb, wb, mh, mw, C, tp, py, px]
    pixel_values = x.reshape(t * gh * gw, c * tp * p * p).contiguous()
    return pixel_values, torch.tensor([[t, gh, gw]], dtype=torch.long)


def frames_from_pixel_values_videos(
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor,
    vision_config,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """Inverse of `patchify_video` for a batch of equally sized videos -> [B, S, 3, H, W] in [0, 1]."""
    tp, p, m = vision_config.temporal_patch_size, vision_config.patch_size, vision_config.spatial_merge_size
    videos: List[torch.Tensor] = []
    offset = 0
    for t, gh, gw in video_grid_thw.tolist():
        count = t * gh * gw
        x = pixel_values_videos[offset : offset + count].float()
        offset += count
        x = x.reshape(t, gh // m, gw // m, m, m, 3, tp, p, p)
        x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(t * tp, 3, gh * p, gw * p)
        mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        videos.append((x * std_t + mean_t).clamp_(0.0, 1.0))
    if len({v.shape for v in videos}) != 1:
        raise ValueError("videos of different sizes in one batch: pass spatial_pixel_values explicitly")
    return torch.stack(videos)


VIDEO_PAD = "<|video_pad|>"


def video_prompt_tokens(tokenizer, prompt: str, num_video_tokens: int, video_token_id: int) -> tuple[str, list[int], list[int]]:
    """User prompt + video -> (chat text, token ids, mm_token_type_ids), lists of length L.

    The chat template renders one <|video_pad|> for the video; it is expanded to
    ``num_video_tokens`` (one per merged video patch), and those tokens are typed 2 (video).
    The one place the prompt is tokenized, for answering and for training on cached features."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text.count(VIDEO_PAD) != 1:
        raise ValueError("chat template must render exactly one <|video_pad|> for the video")
    text = text.replace(VIDEO_PAD, VIDEO_PAD * num_video_tokens)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    mm_types = [2 if i == video_token_id else 0 for i in ids]
    if sum(mm_types) != 2 * num_video_tokens:
        raise ValueError("the prompt itself contains video placeholder tokens")
    return text, ids, mm_types


def grid_times(slots: Sequence[float], temporal_patch_size: int, fps: float) -> torch.Tensor:
    """Each temporal grid's time in seconds [T] from its frames' slots (`sampling.window_slots`).

    Qwen2.5-VL puts grid t of an evenly sampled video at t * temporal_patch_size / fps seconds
    (mRoPE temporal id = that time * tokens_per_second). Here grid t sits at the mean slot of its
    frames, shifted so that slots 0..K-1 give exactly those times; unevenly spaced frames (space-aware
    picks) get times that keep their gaps. Frames are padded to the temporal patch like the pixels
    (the last one repeated)."""
    if len(slots) == 0:
        raise ValueError("no frame slots given")
    tp = int(temporal_patch_size)
    padded = list(slots) + [slots[-1]] * (-len(slots) % tp)
    grids = torch.tensor(padded, dtype=torch.float64).view(-1, tp).mean(dim=1)  # [T]
    return ((grids - (tp - 1) / 2.0) / fps).clamp(min=0.0).float()


def video_chat_inputs(tokenizer, config: VideoProcessingConfig, video_token_id: int,
                      frames: Sequence[np.ndarray], prompt: str, fps: float,
                      slots: Sequence[float] | None = None) -> dict:
    """Frames (HxWx3 uint8 RGB) + user prompt -> the model's CPU inputs, float32 pixels:
    input_ids/attention_mask/mm_token_type_ids [1, L], pixel_values_videos [t*gh*gw, 3*2*14*14],
    video_grid_thw [1, 3], second_per_grid_ts [1], spatial_pixel_values [1, S, 3, H, W] in [0, 1].
    The prompt's tokens come from ``video_prompt_tokens``; fps sets the mRoPE time spacing.
    With `slots` (`sampling.window_slots`, one per frame) second_per_grid_ts is instead each grid's time,
    [1, T] (`grid_times`; the model's `frame_time_positions`)."""
    if len(frames) == 0:
        raise ValueError("no frames given")
    if slots is not None and len(slots) != len(frames):
        raise ValueError(f"{len(slots)} frame slots for {len(frames)} frames")
    resized = resize_frames(frames, config)  # [S, 3, H, W]
    pixel_values, grid_thw = patchify_video(resized, config)
    t, gh, gw = grid_thw[0].tolist()
    _, ids, mm_types = video_prompt_tokens(tokenizer, prompt, t * gh * gw // config.merge_size**2, video_token_id)
    ids = torch.tensor([ids], dtype=torch.long)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                mm_token_type_ids=torch.tensor([mm_types], dtype=torch.int32),
                pixel_values_videos=pixel_values, video_grid_thw=grid_thw,
                second_per_grid_ts=(torch.tensor([config.temporal_patch_size / fps]) if slots is None
                                    else grid_times(slots, config.temporal_patch_size, fps)[None]),
                spatial_pixel_values=resized[None])
