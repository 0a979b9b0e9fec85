"""Subscription-side glue: ROS image/depth/camera_info/odometry/TF messages -> FrameBuffer.

Callbacks only decode and push (geometry is the GeometryWorker's job, in its own thread).

Pairing is by stamp and does not depend on arrival order across topics. Depth, odometry and TF
come on other topics than the colour image, and under a burst (a bag replayed as fast as
possible, a stalled executor) whole runs of one topic can be delivered before the others. So a
colour frame waits in a pending queue until each configured partner is *decided*:
  * depth / odometry: decided once that stream delivered a message stamped at or after the
    frame (streams are in stamp order per publisher), or a message within `sync_tolerance_s`
    that is exactly on the frame; the nearest stamp within the tolerance is then paired (or none).
    Odometry poses are interpolated (translation linear, rotation slerp) between the messages on
    both sides of the frame when they are at most 2 * `sync_tolerance_s` apart, as TF does;
  * TF (`tf_world_frame` set): decided once `world <- camera` can be interpolated at the frame
    stamp (or the stamp is older than the TF history); the pose is
    `tree.lookup(world, camera_frame or header.frame_id, stamp)`;
  * camera_info: latched, decided once any arrived.
A frame leaves the queue (oldest first, so frames enter the buffer in arrival order) when
decided, after `depth_wait_s` of wall time (then paired with what is there; TF may then use the
nearest transform within `sync_tolerance_s`), or when more than `max_pending` frames wait.
Partner messages are kept in stamp-sorted rings larger than the queue.

Late pairing: a reliable topic that lost samples in a burst is repaired by DDS only at the
writer's next heartbeat (Fast DDS: every 3 s), far beyond any sensible queue wait; observed with
the shipped bag replayed with --max: odometry and camera_info (small messages) arrived 3 s after
their images. So `sensor_lookup(frame)` gives the GeometryWorker the same by-stamp pairing for a
frame that entered the buffer without its depth/pose: the worker retries it until its own
`sensor_wait_s` (the node's `sync_late_pairing_s`) runs out.

A message that cannot be decoded is counted in the buffer as `decode_error` (and here by
reason), logged (throttled) and dropped; nothing raises out of a callback. Counters (also in
/diagnostics as intake_<name>): decode errors, `pair_timeout` (left the queue undecided),
`pair_overflow` (pushed out by `max_pending`), `unpaired_depth` / `unpaired_pose` (a frame
pushed without that partner), `tf_error` (a TF message that could not be stored).
"""
from __future__ import annotations

import bisect
import collections
import re
import threading
import time

from ros2_spatial_mllm.buffer import Frame, FrameBuffer
from ros2_spatial_mllm.geometry import interpolate_pose
from ros2_spatial_mllm.image_codec import ImageDecodeError
from ros2_spatial_mllm.ros.convert import (camera_info_to_k, depth_msg_to_m, image_msg_to_rgb,
                                           odometry_to_world_from_camera, time_to_ns)
from ros2_spatial_mllm.transforms import ExtrapolationError, TransformError, TransformTree


class _StampedRing:
    """Last `size` (stamp_ns, value) pairs kept sorted by stamp; nearest-stamp lookup and the
    newest stamp seen; thread-safe."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._stamps: list[int] = []
        self._values: list = []
        self._lock = threading.Lock()
        self.newest_ns: int | None = None

    def push(self, stamp_ns: int, value) -> None:
        with self._lock:
            i = bisect.bisect_right(self._stamps, stamp_ns)
            self._stamps.insert(i, stamp_ns)
            self._values.insert(i, value)
            if len(self._stamps) > self.size:
                del self._stamps[0], self._values[0]
            self.newest_ns = stamp_ns if self.newest_ns is None else max(self.newest_ns, stamp_ns)

    def __len__(self) -> int:
        return len(self._stamps)

    def nearest(self, stamp_ns: int, tolerance_ns: int):
        """(value, decided): the value nearest stamp_ns within tolerance (or None), and whether
        that can still change (False while nothing at or after stamp_ns arrived)."""
        with self._lock:
            stamps = self._stamps
            if not stamps:
                return None, False
            i = bisect.bisect_left(stamps, stamp_ns)
            best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)),
                       key=lambda j: abs(stamps[j] - stamp_ns))
            value = self._values[best] if abs(stamps[best] - stamp_ns) <= tolerance_ns else None
            decided = stamps[-1] >= stamp_ns or (self.newest_ns is not None and self.newest_ns >= stamp_ns)
            return value, decided

    def around(self, stamp_ns: int):
        """((stamp, value) of the newest entry before stamp_ns or None, the same for the oldest
        entry at or after it)."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            before = (self._stamps[i - 1], self._values[i - 1]) if i > 0 else None
            after = (self._stamps[i], self._values[i]) if i < len(self._stamps) else None
            return before, after

    def pose_at(self, stamp_ns: int, tolerance_ns: int):
        """(world_from_camera [4, 4] or None, decided) for a ring of poses: interpolated between
        the entries on both sides of stamp_ns when they are at most 2 * tolerance apart (odometry
        at 10 Hz or faster with the default 0.05 s), else the nearest within the tolerance."""
        before, after = self.around(stamp_ns)
        if before is not None and after is not None and after[0] - before[0] <= 2 * tolerance_ns:
            if after[0] == stamp_ns:
                return after[1], True
            fraction = (stamp_ns - before[0]) / float(after[0] - before[0])
            return interpolate_pose(before[1], after[1], fraction), True
        return self.nearest(stamp_ns, tolerance_ns)


class FrameIntake:
    """Turns messages into `Frame`s for `buffer`. `logger` is an rclpy logger (or any object with
    warning()). With `tf_world_frame`, poses come from `tf_tree` (fed by on_tf / on_tf_static)."""

    def __init__(self, buffer: FrameBuffer, logger, sync_tolerance_s: float = 0.05,
                 odom_child_is_optical: bool = False, log_throttle_s: float = 2.0,
                 expect_depth: bool = False, expect_pose: bool = False, expect_info: bool = False,
                 depth_wait_s: float = 1.0, max_pending: int = 32, tf_world_frame: str = "",
                 camera_frame: str = "", tf_cache_s: float = 10.0) -> None:
        self.buffer, self.logger = buffer, logger
        self.tolerance_ns = int(sync_tolerance_s * 1e9)
        self.odom_child_is_optical = odom_child_is_optical
        self.log_throttle_s = log_throttle_s
        self.enabled = False            # the node sets this while active
        self.tf_world_frame, self.camera_frame = tf_world_frame.strip().lstrip("/"), camera_frame
        self.tf_tree = TransformTree(cache_duration_s=tf_cache_s) if self.tf_world_frame else None
        self.expect_depth, self.expect_info = expect_depth, expect_info
        self.expect_pose = expect_pose and self.tf_tree is None   # odometry poses
        self.depth_wait_s, self.max_pending = depth_wait_s, max(1, int(max_pending))
        self._pending: collections.deque[tuple[float, Frame]] = collections.deque()  # (arrival, frame)
        self._push_lock = threading.Lock()
        self._depth = _StampedRing(max(32, 2 * self.max_pending))
        self._poses = _StampedRing(max(256, 4 * self.max_pending))
        self._camera_info = None
        self._lock = threading.Lock()
        self._errors: dict[str, int] = collections.Counter()
        self._last_log: dict[str, float] = {}
        self._last_frame_id = ""
        self.last_frame_monotonic: float | None = None
        self.decode_ms_ewma = 0.0

    @property
    def waits_for_partners(self) -> bool:
        return self.expect_depth or self.expect_pose or self.expect_info or self.tf_tree is not None

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
            self._flush_locked(force=not self.waits_for_partners)
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
        self.flush_stale()

    def flush_stale(self) -> None:
        """Push the frames whose partners are decided or that waited too long (call periodically)."""
        with self._push_lock:
            self._flush_locked()

    def on_camera_info(self, msg) -> None:
        self._camera_info = msg
        self.flush_stale()

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
        self.flush_stale()

    def on_tf(self, msg) -> None:
        """tf2_msgs/TFMessage from /tf (stored even while inactive: the history is needed later)."""
        self._add_transforms(msg, static=False)

    def on_tf_static(self, msg) -> None:
        """tf2_msgs/TFMessage from /tf_static (transient local: arrives once per publisher)."""
        self._add_transforms(msg, static=True)

    # ------------------------------------------------------------------ helpers
    def _add_transforms(self, msg, static: bool) -> None:
        if self.tf_tree is None:
            return
        for tf in msg.transforms:
            try:
                t, r = tf.transform.translation, tf.transform.rotation
                self.tf_tree.add(tf.header.frame_id, tf.child_frame_id, time_to_ns(tf.header.stamp),
                                 (t.x, t.y, t.z), (r.x, r.y, r.z, r.w), static=static)
            except Exception as exc:  # noqa: BLE001 - one bad transform must not drop the rest
                self._count("tf_error")
                self._log("tf_error", f"ignored transform {tf.header.frame_id!r} -> "
                                      f"{tf.child_frame_id!r}: {exc}")
        if self.enabled:
            self.flush_stale()

    def _tf_pose(self, frame: Frame, tolerance_ns: int):
        """(world_from_camera [4, 4] or None, decided) from the TF tree."""
        camera = self.camera_frame or frame.frame_id
        try:
            return self.tf_tree.lookup(self.tf_world_frame, camera, frame.stamp_ns, tolerance_ns), True
        except ExtrapolationError as exc:
            return None, exc.direction == "past"
        except TransformError:
            return None, False

    def _partners(self, frame: Frame, final: bool):
        """(depth, pose, decided) for a pending frame; final: last chance (use tolerances)."""
        depth, depth_done = self._depth.nearest(frame.stamp_ns, self.tolerance_ns) \
            if self.expect_depth else (None, True)
        if self.tf_tree is not None:
            pose, pose_done = self._tf_pose(frame, self.tolerance_ns if final else 0)
        elif self.expect_pose:
            pose, pose_done = self._poses.pose_at(frame.stamp_ns, self.tolerance_ns)
        else:
            pose, pose_done = None, True
        info_done = self._camera_info is not None or not self.expect_info
        return depth, pose, depth_done and pose_done and info_done

    def _flush_locked(self, force: bool = False) -> None:
        """Push pending frames, oldest first, while the oldest is decided, waited
        `depth_wait_s`, or too many frames wait (force pushes everything)."""
        now = time.monotonic()
        while self._pending:
            arrived, frame = self._pending[0]
            depth, pose, decided = self._partners(frame, final=False)
            overflow = len(self._pending) > self.max_pending
            timed_out = now - arrived >= self.depth_wait_s
            if not (force or decided or timed_out or overflow):
                return
            if not decided and not force:
                self._count("pair_overflow" if overflow else "pair_timeout")
                depth, pose, _ = self._partners(frame, final=True)
            if self.expect_depth and depth is None:
                self._count("unpaired_depth")
            if (self.expect_pose or self.tf_tree is not None) and pose is None:
                self._count("unpaired_pose")
            self._pending.popleft()
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

    def sensor_lookup(self, frame: Frame):
        """(depth [h, w] m, K [3, 3] of the rgb image, world_from_camera [4, 4]) for a frame
        already in the buffer, from the frame or the by-stamp rings / TF tree; None while a part
        is missing. For GeometryWorker(sensor_lookup=...); cheap (no decoding)."""
        depth = frame.depth
        if depth is None:
            depth, _ = self._depth.nearest(frame.stamp_ns, self.tolerance_ns)
        intrinsics = frame.intrinsics
        if intrinsics is None and self._camera_info is not None:
            intrinsics = camera_info_to_k(self._camera_info, frame.rgb.shape[:2])
        pose = frame.world_from_camera
        if pose is None:
            if self.tf_tree is not None:
                pose, _ = self._tf_pose(frame, self.tolerance_ns)
            else:
                pose, _ = self._poses.pose_at(frame.stamp_ns, self.tolerance_ns)
        if depth is None or intrinsics is None or pose is None:
            return None
        return depth, intrinsics, pose

    @property
    def last_frame_id(self) -> str:
        return self._last_frame_id

    @property
    def pending(self) -> int:
        return len(self._pending)

    def error_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)
