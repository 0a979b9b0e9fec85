"""Message <-> core conversions for the node: stamps, images, camera info, odometry, queries.

Image decoding itself lives in `ros2_spatial_mllm.image_codec` (no rclpy); this module only
reads message fields. Outputs:
    image_msg_to_rgb(msg)        -> [H, W, 3] uint8 RGB (may be a read-only view over msg.data)
    depth_msg_to_m(msg)          -> [H, W] float32 metres, NaN invalid
    camera_info_to_k(msg)        -> [3, 3] float64 K, or None when K is all zeros
    odometry_to_world_from_camera(msg, child_is_optical) -> [4, 4] float64 (OpenCV camera axes)
"""
from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time

from ros2_spatial_mllm import image_codec
from ros2_spatial_mllm.query_engine import LATENCY_KEYS, QueryRequest, QueryResponse

# Rotation taking optical axes (x right, y down, z forward) to ROS body axes (x forward, y left,
# z up): columns are the optical axes written in body coordinates. [3, 3]
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0],
                              [-1.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0]])


def time_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (may be negative for a negative sec)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_time(stamp_ns: int) -> Time:
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=int(sec), nanosec=int(nanosec))


def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> [H, W, 3] uint8 RGB; raises ImageDecodeError."""
    if hasattr(msg, "encoding"):
        return image_codec.decode_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                      msg.is_bigendian)
    return image_codec.as_rgb8(image_codec.decode_compressed(msg.format, msg.data))


def depth_msg_to_m(msg) -> np.ndarray:
    """sensor_msgs/Image (16UC1/32FC1) or CompressedImage (compressedDepth) -> [H, W] metres."""
    if hasattr(msg, "encoding"):
        return image_codec.decode_depth(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                        msg.is_bigendian)
    return image_codec.as_depth_m(image_codec.decode_compressed(msg.format, msg.data))


def camera_info_to_k(msg, image_hw: tuple[int, int] | None = None) -> np.ndarray | None:
    """[3, 3] intrinsics from CameraInfo.k, rescaled when the colour image has another size."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.any(k) or k[2, 2] == 0:
        return None
    if image_hw is not None and msg.width and msg.height:
        sy, sx = image_hw[0] / float(msg.height), image_hw[1] / float(msg.width)
        if abs(sx - 1.0) > 1e-6 or abs(sy - 1.0) > 1e-6:
            k = k.copy()
            k[0, :] *= sx
            k[1, :] *= sy
    return k


def odometry_to_world_from_camera(msg, child_is_optical: bool) -> np.ndarray:
    """nav_msgs/Odometry pose -> [4, 4] world_from_camera with OpenCV camera axes."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    x, y, z, w = q.x, q.y, q.z, q.w
    norm = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    pose = np.eye(4)
    pose[:3, :3] = rotation if child_is_optical else rotation @ BODY_FROM_OPTICAL
    pose[:3, 3] = (p.x, p.y, p.z)
    return pose


def to_query_request(msg) -> QueryRequest:
    """AskSpatial service request or action goal -> QueryRequest (validation is the engine's)."""
    return QueryRequest(
        question=msg.question,
        options=tuple(msg.options),
        t_start_ns=time_to_ns(msg.window_start),
        t_end_ns=time_to_ns(msg.window_end),
        num_frames=int(msg.num_frames),
        sampling=msg.sampling,
        max_new_tokens=int(msg.max_new_tokens),
    )


def fill_outcome(msg, response: QueryResponse):
    """Copy a QueryResponse into a service response / action result / SpatialAnswer (same
    field names in all three). Returns msg."""
    msg.success = bool(response.success)
    msg.error_code = int(response.code)
    msg.error_message = response.message or ""
    msg.answer = response.answer or ""
    msg.answer_kind = response.answer_kind or ""
    msg.value = float(response.value)
    msg.choice = response.choice or ""
    msg.frame_stamps = [ns_to_time(s) for s in response.frame_stamps_ns]
    coverage = float(response.coverage)
    msg.coverage = coverage if math.isfinite(coverage) else 0.0
    msg.num_tokens = int(max(0, response.num_tokens))
    for key in LATENCY_KEYS:
        setattr(msg.latency, key, float(response.latency_ms.get(key, 0.0)))
    return msg


def fill_identity(msg, identity: dict | None):
    """Set `model_revision` / `config_hash` of a service response / action result /
    SpatialAnswer from the loaded model's identity (safety.model_identity keys `revision`,
    `config_hash`); empty strings when no model is loaded. Returns msg."""
    identity = identity or {}
    msg.model_revision = str(identity.get("revision", "") or "")
    msg.config_hash = str(identity.get("config_hash", "") or "")
    return msg


def outcome_log_line(outcome: QueryResponse, interface: str) -> str:
    """The node's one log line per query: code, frames, tokens, total time, answer or reason."""
    total = outcome.latency_ms.get("total_ms", 0.0)
    text = outcome.answer if len(outcome.answer) <= 60 else outcome.answer[:57] + "..."
    return (f"ask[{interface}] #{outcome.request_id} {outcome.code.name}: frames="
            f"{len(outcome.frame_stamps_ns)} tokens={outcome.num_tokens} total={total:.0f}ms "
            + (f"answer={text!r}" if outcome.success else f"reason={outcome.message!r}"))


def fill_request_echo(answer_msg, request_msg, sampling_used: str, interface: str):
    """Copy the request fields of an AskSpatial request/goal into a SpatialAnswer."""
    answer_msg.question = request_msg.question
    answer_msg.options = list(request_msg.options)
    answer_msg.window_start = request_msg.window_start
    answer_msg.window_end = request_msg.window_end
    answer_msg.num_frames = int(request_msg.num_frames)
    answer_msg.sampling = sampling_used or request_msg.sampling
    answer_msg.interface = interface
    return answer_msg
