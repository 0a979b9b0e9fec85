"""Chosen frames -> sensor_msgs/Image or CompressedImage with their original stamps.

The node would publish these on e.g. ``~/chosen_frames`` (raw) or ``~/chosen_frames/compressed``
after each answer, one message per frame used, oldest first: header.stamp = the frame's own
source stamp (``Frame.stamp_ns``), header.frame_id = its camera frame. Frames are RGB
[H, W, 3] uint8 (possibly read-only/strided views from the buffer; copied here).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from ros2_spatial_mllm.image_codec import encode_compressed

__all__ = ["ns_to_stamp", "frame_to_image_msg", "frame_to_compressed_msg", "chosen_frame_messages"]


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (sec may be negative, nanosec in [0, 1e9))."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=int(sec), nanosec=int(nanosec))


def frame_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """[H, W, 3] uint8 RGB -> sensor_msgs/Image rgb8 (step = 3 W, no padding)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] uint8 RGB, got shape {rgb.shape}")
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=3 * rgb.shape[1])
    msg.data = rgb.tobytes()
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    return msg


def frame_to_compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg",
                            quality: int = 85) -> CompressedImage:
    """[H, W, 3] uint8 RGB -> sensor_msgs/CompressedImage (JPEG or PNG, image_transport format string)."""
    format_string, payload = encode_compressed(np.ascontiguousarray(rgb), fmt, quality)
    msg = CompressedImage(format=format_string, data=payload)
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    return msg


def chosen_frame_messages(frames: Sequence, compressed: bool = False, max_side: int | None = None,
                          quality: int = 85) -> list:
    """Buffer ``Frame``s (stamp_ns, frame_id, rgb) -> one Image/CompressedImage each, same order.

    ``max_side``: downscale so the longer side is at most this many pixels (None = full size).
    """
    import cv2

    out = []
    for frame in frames:
        rgb = np.asarray(frame.rgb)
        if max_side and max(rgb.shape[:2]) > max_side:
            scale = max_side / max(rgb.shape[:2])
            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            rgb = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA)
        out.append(frame_to_compressed_msg(rgb, frame.stamp_ns, frame.frame_id, quality=quality) if compressed
                   else frame_to_image_msg(rgb, frame.stamp_ns, frame.frame_id))
    return out
