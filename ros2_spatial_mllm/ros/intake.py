"""Subscription-side glue: ROS image/depth/camera_info/odometry messages -> FrameBuffer.

Callbacks only decode and push (geometry is the GeometryWorker's job, in its own thread).
Depth and odometry are paired with a colour frame by nearest stamp within `sync_tolerance_s`;
camera_info is latched. Depth and odometry often arrive after their colour image (separate
topics): with those topics configured, a colour frame waits (at most `depth_wait_s`, at most
`max_pending` frames) until its depth / pose / camera_info are there, and frames always enter
the buffer in arrival order. A message that cannot be decoded is counted in the buffer as
`decode_error` (and here by reason), logged (throttled) and dropped; nothing raises out of a
callback.
"""
from __future__ import annotations

import bisect
import collections
import re
import threading
import time

from ros2_spatial_mllm.buffer import Frame, FrameBuffer
from ros2_spatial_mllm.image_codec import ImageDecodeError
from ros2_spatial_mllm.ros.convert import (camera_info_to_k, depth_msg_to_m, image_msg_to_rgb,
                                           odometry_to_world_from_camera, time_to_ns)


class _StampedRing:
    """Last `size` (stamp_ns, value) pairs, nearest-stamp lookup; thread-safe."""

    def __init__(self, size: int = 32) -> None:
        self._items: collections.deque[tuple[int, object]] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def push(self, stamp_ns: int, value) -> None:
        with self._lock:
            self._items.append((stamp_ns, value))

    def nearest(self, stamp_ns: int, tolerance_ns: int):
        with self._lock:
            items = sorted(self._items, key=lambda item: item[0])
        if not items:
            return None
        stamps = [s for s, _ in items]
        i = bisect.bisect_left(stamps, stamp_ns)
        best = min((j for j in (i - 1, i) if 0 <= j < len(items)),
                   key=lambda j: abs(stamps[j] - stamp_ns))
        return items[best][1] if abs(stamps[best] - stamp_ns) <= tolerance_ns else None


class FrameIntake:
    """Turns messages into `Frame`s for `buffer`. `logger` is an rclpy logger."""

    def __init__(self, buffer: FrameBuffer, logger, sync_tolerance_s: float = 0.05,
                 odom_child_is_optical: bool = False, log_throttle_s: float = 2.0,
                 expect_depth: bool = False, expect_pose: bool = False, expect_info: bool = False,
                 depth_wait_s: float = 0.25, max_pending: int = 4) -> None:
        self.buffer, self.logger = buffer, logger
        self.tolerance_ns = int(sync_tolerance_s * 1e9)
        self.odom_child_is_optical = odom_child_is_optical
        self.log_throttle_s = log_throttle_s
        self.enabled = False            # the node sets this while active
        self.expect_depth, self.expect_pose, self.expect_info = expect_depth, expect_pose, expect_info
        self.depth_wait_s, self.max_pending = depth_wait_s, max_pending
        self._pending: collections.deque[tuple[float, Frame]] = collections.deque()  # (arrival, frame)
        self._push_lock = threading.Lock()
        self._depth = _StampedRing()
        self._poses = _StampedRing(256)
        self._camera_info = None
        self._lock = threading.Lock()
        self._errors: dict[str, int] = collections.Counter()
        self._last_log: dict[str, float] = {}
        self._last_frame_id = ""
        self.last_frame_monotonic: float | None = None
        self.decode_ms_ewma = 0.0

    # ------------------------------------------------------------------ callbacks
    def on_image(self, msg) -> None:
        if not self.enabled:
            return
        started = time.perf_counter()
        try:
            rgb = image_msg_to_rgb(msg)
        except ImageDecodeError as exc:
            self._reject("decode_error", f"dropped image: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - bad input must never kill the node
            self._reject("decode_error", f"dropped image ({type(exc).__name__}): {exc}")
            return
        stamp_ns = time_to_ns(msg.header.stamp)
        frame = Frame(stamp_ns=stamp_ns, frame_id=msg.header.frame_id, rgb=rgb)
        with self._push_lock:
            self._pending.append((time.monotonic(), frame))
            self._flush_locked(force=not (self.expect_depth or self.expect_pose or self.expect_info))
        self._last_frame_id = msg.header.frame_id
        self.last_frame_monotonic = time.monotonic()
        elapsed_ms = (time.perf_counter() - started) * 1e3
        self.decode_ms_ewma = elapsed_ms if not self.decode_ms_ewma else (
            0.9 * self.decode_ms_ewma + 0.1 * elapsed_ms)

    def on_depth(self, msg) -> None:
        if not self.enabled:
            return
        try:
            self._depth.push(time_to_ns(msg.header.stamp), depth_msg_to_m(msg))
        except Exception as exc:  # noqa: BLE001
            self._count("depth_decode_error")
            self._log("depth", f"dropped depth image: {exc}")
            return
        with self._push_lock:
            self._flush_locked()

    def flush_stale(self) -> None:
        """Push frames that waited `depth_wait_s` for depth (call periodically)."""
        with self._push_lock:
            self._flush_locked()

    def on_camera_info(self, msg) -> None:
        self._camera_info = msg
        with self._push_lock:
            self._flush_locked()

    def on_odometry(self, msg) -> None:
        if not self.enabled:
            return
        try:
            pose = odometry_to_world_from_camera(msg, self.odom_child_is_optical)
            self._poses.push(time_to_ns(msg.header.stamp), pose)
        except Exception as exc:  # noqa: BLE001
            self._count("odometry_error")
            self._log("odometry", f"dropped odometry: {exc}")
            return
        with self._push_lock:
            self._flush_locked()

    # ------------------------------------------------------------------ helpers
    def _flush_locked(self, force: bool = False) -> None:
        """Push pending frames, oldest first, while the oldest has its depth, waited long
        enough, or too many frames wait (force pushes everything)."""
        now = time.monotonic()
        while self._pending:
            arrived, frame = self._pending[0]
            depth = self._depth.nearest(frame.stamp_ns, self.tolerance_ns) if self.expect_depth else None
            pose = self._poses.nearest(frame.stamp_ns, self.tolerance_ns) if self.expect_pose else None
            complete = ((depth is not None or not self.expect_depth)
                        and (pose is not None or not self.expect_pose)
                        and (self._camera_info is not None or not self.expect_info))
            if not (force or complete or now - arrived >= self.depth_wait_s
                    or len(self._pending) > self.max_pending):
                return
            self._pending.popleft()
            self.logger.info(f"DBG push {frame.stamp_ns} depth={depth is not None} pose={pose is not None} info={self._camera_info is not None} force={force} waited={now-arrived:.3f} pend={len(self._pending)} ndepth={len(self._depth._items)} nposes={len(self._poses._items)}")
            self._push(frame, depth, pose)

    def _push(self, frame: Frame, depth, pose) -> None:
        try:
            info = self._camera_info
            if info is not None:
                frame.intrinsics = camera_info_to_k(info, frame.rgb.shape[:2])
            frame.depth = depth
            frame.world_from_camera = pose
        except Exception as exc:  # noqa: BLE001 - geometry inputs are optional
            self._log("geometry", f"ignoring depth/pose for frame {frame.stamp_ns}: {exc}")
        outcome = self.buffer.add(frame)
        if not outcome.kept and outcome.reason in ("invalid", "too_large"):
            self._count(outcome.reason)
            self._log(outcome.reason, f"dropped image {frame.rgb.shape} stamp {frame.stamp_ns}: {outcome.reason}")

    def _reject(self, reason: str, message: str) -> None:
        self.buffer.count_drop("decode_error")
        self._count(reason)
        self._log(reason, message)

    def _count(self, reason: str) -> None:
        with self._lock:
            self._errors[reason] += 1

    def _log(self, key: str, message: str) -> None:
        """Warn once per `log_throttle_s` per kind of problem (same text up to the numbers)."""
        now = time.monotonic()
        kind = key + ":" + re.sub(r"\d+", "#", message)[:48]
        if now - self._last_log.get(kind, -1e9) >= self.log_throttle_s:
            if len(self._last_log) > 256:
                self._last_log.clear()
            self._last_log[kind] = now
            with self._lock:
                count = self._errors.get(key, 0)
            self.logger.warning(f"{message} (total {key}: {count})" if count else message)

    @property
    def last_frame_id(self) -> str:
        return self._last_frame_id

    def error_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)
