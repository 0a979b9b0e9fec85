"""Bounded, thread-safe ring of keyframes: the node's memory of what the camera has seen.

Frames arrive from the subscription callback (``add``) and are read by queries (``window``) and
by the geometry worker (listeners). The buffer is bounded by frame count AND bytes; the oldest
frames are evicted first. Decimation keeps keyframes only:

* time: a frame closer than ``min_interval_s`` to the last kept frame is dropped (``decimated``);
* motion (when thresholds > 0 and both this frame and the last kept frame carry a pose): a frame
  that passed the time test is kept only if the camera moved ``>= min_translation_m`` or turned
  ``>= min_rotation_deg`` since the last kept frame, or if ``max_interval_s`` has elapsed (so a
  robot standing still still refreshes its view); otherwise it is dropped (``decimated``).

Time going backwards (bag loop, simulation reset, a clock jump):
* a stamp equal to or up to ``time_jump_threshold_s`` older than the newest kept stamp is
  dropped as ``out_of_order`` (late or duplicated message; the buffer stays time-sorted);
* a stamp more than ``time_jump_threshold_s`` older is a *time jump*. With
  ``on_time_jump="reset"`` (default) the buffer is cleared (evicted frames are reported to the
  listeners and counted as ``time_jump_cleared``), ``time_jumps`` is incremented and the frame
  is kept as the first frame of the new timeline. With ``"drop"``, such frames are dropped
  (``time_jump``) until stamps pass the newest kept stamp again.

Counters (``stats()``): received, kept, dropped[reason] for reason in DROP_REASONS, time_jumps;
``rejected_total`` = frames never kept (received - kept); ``evicted`` and ``time_jump_cleared``
count frames that were kept and later left.
"""
from __future__ import annotations

import bisect
import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

__all__ = ["Frame", "FrameBuffer", "AddOutcome", "DROP_REASONS", "pose_delta"]

DROP_REASONS = ("decimated", "out_of_order", "time_jump", "time_jump_cleared", "evicted",
                "too_large", "decode_error", "invalid")


@dataclass(eq=False)
class Frame:
    """One camera frame.

    stamp_ns: header stamp in nanoseconds (the source stamp, copied into answers);
    rgb: [H, W, 3] uint8 RGB (may be a read-only view over the message buffer);
    depth: [H, W] float32 metres (NaN invalid) or None; may differ in size from rgb;
    intrinsics: [3, 3] float K of the rgb image (pixels) or None;
    world_from_camera: [4, 4] float camera-to-world (OpenCV camera axes) or None.
    """

    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    depth: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    world_from_camera: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes this frame holds (images and matrices)."""
        total = self.rgb.nbytes
        for extra in (self.depth, self.intrinsics, self.world_from_camera):
            if extra is not None:
                total += extra.nbytes
        return int(total)

    @property
    def stamp_s(self) -> float:
        return self.stamp_ns * 1e-9


class AddOutcome(NamedTuple):
    """Result of ``FrameBuffer.add``: kept or not, and why (``"kept"``, ``"kept_after_reset"``,
    or one of DROP_REASONS), plus the frames evicted to make room."""

    kept: bool
    reason: str
    evicted: int = 0


def pose_delta(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation metres, rotation degrees) between two [4, 4] world_from_camera poses."""
    translation = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    relative = a[:3, :3].T @ b[:3, :3]
    cos_angle = (float(np.trace(relative)) - 1.0) / 2.0
    return translation, math.degrees(math.acos(max(-1.0, min(1.0, cos_angle))))


_LEFT_AFTER_KEEP = ("evicted", "time_jump_cleared")  # frames that were kept, then left
Listener = Callable[[Frame], None]


class FrameBuffer:
    """Time-sorted keyframe ring bounded by ``max_frames`` and ``max_bytes``; thread-safe."""

    def __init__(self, max_frames: int = 256, max_bytes: int = 512 << 20, min_interval_s: float = 0.0,
                 min_translation_m: float = 0.0, min_rotation_deg: float = 0.0,
                 max_interval_s: float = 2.0, time_jump_threshold_s: float = 1.0,
                 on_time_jump: str = "reset", rate_window: int = 64) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError(f"max_frames ({max_frames}) and max_bytes ({max_bytes}) must be >= 1")
        if min(min_interval_s, min_translation_m, min_rotation_deg, max_interval_s) < 0:
            raise ValueError("decimation thresholds must be >= 0")
        if on_time_jump not in ("reset", "drop"):
            raise ValueError(f"on_time_jump must be 'reset' or 'drop', got {on_time_jump!r}")
        self.max_frames, self.max_bytes = int(max_frames), int(max_bytes)
        self.min_interval_ns = int(min_interval_s * 1e9)
        self.max_interval_ns = int(max_interval_s * 1e9)
        self.min_translation_m, self.min_rotation_deg = float(min_translation_m), float(min_rotation_deg)
        self.time_jump_threshold_ns = int(time_jump_threshold_s * 1e9)
        self.on_time_jump = on_time_jump
        self._lock = threading.RLock()
        self._frames: list[Frame] = []
        self._stamps: list[int] = []
        self._bytes = 0
        self._last_kept: Frame | None = None  # survives eviction: decimation keeps working
        self._received = 0
        self._kept = 0
        self._time_jumps = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._arrivals: collections.deque[float] = collections.deque(maxlen=rate_window)
        self._on_keep: list[Listener] = []
        self._on_evict: list[Listener] = []

    # ---------------------------------------------------------------- listeners
    def add_listener(self, on_keep: Listener | None = None, on_evict: Listener | None = None) -> None:
        """Call ``on_keep(frame)`` after a frame is kept and ``on_evict(frame)`` after one leaves.
        Listeners run on the caller's thread outside the lock; they must be quick (enqueue only)."""
        with self._lock:
            if on_keep is not None:
                self._on_keep.append(on_keep)
            if on_evict is not None:
                self._on_evict.append(on_evict)

    # ---------------------------------------------------------------- intake
    def add(self, frame: Frame) -> AddOutcome:
        """Offer a frame; returns whether it was kept and why not. Never raises for bad frames:
        they are counted as ``invalid``."""
        evicted: list[Frame] = []
        with self._lock:
            self._received += 1
            self._arrivals.append(time.monotonic())
            outcome = self._add_locked(frame, evicted)
            keep_listeners = list(self._on_keep) if outcome.kept else []
            evict_listeners = list(self._on_evict)
        for frame_out in evicted:
            for listener in evict_listeners:
                listener(frame_out)
        for listener in keep_listeners:
            listener(frame)
        return outcome

    def count_drop(self, reason: str = "decode_error") -> None:
        """Count a message that never became a Frame (e.g. a decode error) as received+dropped."""
        if reason not in self._dropped:
            raise ValueError(f"unknown drop reason {reason!r}; one of {DROP_REASONS}")
        with self._lock:
            self._received += 1
            self._arrivals.append(time.monotonic())
            self._dropped[reason] += 1

    def _drop(self, reason: str) -> AddOutcome:
        self._dropped[reason] += 1
        return AddOutcome(False, reason)

    def _add_locked(self, frame: Frame, evicted: list[Frame]) -> AddOutcome:
        rgb = getattr(frame, "rgb", None)
        if (not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3
                or rgb.dtype != np.uint8 or rgb.size == 0):
            return self._drop("invalid")
        if frame.nbytes > self.max_bytes:
            return self._drop("too_large")
        reason = "kept"
        last = self._last_kept
        if last is not None:
            delta_ns = frame.stamp_ns - last.stamp_ns
            if delta_ns <= 0:
                if -delta_ns <= self.time_jump_threshold_ns:
                    return self._drop("out_of_order")
                if self.on_time_jump == "drop":
                    return self._drop("time_jump")
                self._time_jumps += 1
                self._dropped["time_jump_cleared"] += len(self._frames)
                evicted.extend(self._frames)
                self._clear_locked()
                reason, last = "kept_after_reset", None
            elif not self._is_keyframe(frame, last, delta_ns):
                return self._drop("decimated")
        self._frames.append(frame)
        self._stamps.append(frame.stamp_ns)
        self._bytes += frame.nbytes
        self._last_kept = frame
        self._kept += 1
        n_before = len(evicted)
        while len(self._frames) > self.max_frames or self._bytes > self.max_bytes:
            old = self._frames.pop(0)
            self._stamps.pop(0)
            self._bytes -= old.nbytes
            evicted.append(old)
            self._dropped["evicted"] += 1
        return AddOutcome(True, reason, len(evicted) - n_before)

    def _is_keyframe(self, frame: Frame, last: Frame, delta_ns: int) -> bool:
        if delta_ns < self.min_interval_ns:
            return False
        motion_gated = self.min_translation_m > 0 or self.min_rotation_deg > 0
        if not motion_gated or frame.world_from_camera is None or last.world_from_camera is None:
            return True
        if self.max_interval_ns and delta_ns >= self.max_interval_ns:
            return True
        moved, turned = pose_delta(last.world_from_camera, frame.world_from_camera)
        return ((self.min_translation_m > 0 and moved >= self.min_translation_m)
                or (self.min_rotation_deg > 0 and turned >= self.min_rotation_deg))

    def _clear_locked(self) -> None:
        self._frames.clear()
        self._stamps.clear()
        self._bytes = 0
        self._last_kept = None

    def clear(self) -> None:
        """Drop every frame (reported to on_evict listeners, not counted as a drop)."""
        with self._lock:
            gone = list(self._frames)
            self._clear_locked()
            listeners = list(self._on_evict)
        for frame in gone:
            for listener in listeners:
                listener(frame)

    # ---------------------------------------------------------------- reads
    def window(self, t_start_ns: int | None = None, t_end_ns: int | None = None) -> list[Frame]:
        """Frames with t_start_ns <= stamp <= t_end_ns (None = unbounded), oldest first."""
        with self._lock:
            lo = 0 if t_start_ns is None else bisect.bisect_left(self._stamps, int(t_start_ns))
            hi = len(self._stamps) if t_end_ns is None else bisect.bisect_right(self._stamps, int(t_end_ns))
            return self._frames[lo:hi]

    def get(self, stamp_ns: int) -> Frame | None:
        """The frame with exactly this stamp, or None."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            return self._frames[i] if i < len(self._stamps) and self._stamps[i] == stamp_ns else None

    def latest(self) -> Frame | None:
        with self._lock:
            return self._frames[-1] if self._frames else None

    def stamps(self) -> list[int]:
        with self._lock:
            return list(self._stamps)

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def __contains__(self, stamp_ns: int) -> bool:
        return self.get(stamp_ns) is not None

    def stats(self) -> dict:
        """Diagnostics snapshot: counts, fill, bytes, span and rates (plain Python types)."""
        with self._lock:
            arrivals = list(self._arrivals)
            span_s = (self._stamps[-1] - self._stamps[0]) * 1e-9 if len(self._stamps) > 1 else 0.0
            rate = 0.0
            if len(arrivals) > 1 and arrivals[-1] > arrivals[0]:
                rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
            return {
                "frames": len(self._frames), "max_frames": self.max_frames,
                "fill": len(self._frames) / self.max_frames,
                "bytes": self._bytes, "max_bytes": self.max_bytes,
                "byte_fill": self._bytes / self.max_bytes,
                "span_s": span_s,
                "oldest_stamp_ns": self._stamps[0] if self._stamps else 0,
                "newest_stamp_ns": self._stamps[-1] if self._stamps else 0,
                "received": self._received, "kept": self._kept,
                "dropped": dict(self._dropped),
                "rejected_total": sum(v for k, v in self._dropped.items() if k not in _LEFT_AFTER_KEEP),
                "time_jumps": self._time_jumps, "input_rate_hz": rate,
            }
