"""A small, thread-safe transform tree (tf2 semantics, no rclpy): feed it the transforms of
/tf and /tf_static, ask for ``target_from_source`` at a stamp.

    tree = TransformTree(cache_duration_s=10.0)
    tree.add("odom", "base_link", stamp_ns, (x, y, z), (qx, qy, qz, qw))            # dynamic
    tree.add("base_link", "camera_optical", 0, (0.1, 0, 0.3), q_xyzw, static=True)  # static
    world_from_camera = tree.lookup("odom", "camera_optical", stamp_ns)             # [4, 4]

Conventions (the same as tf2 and geometry_msgs/TransformStamped): an edge added as
(parent, child, translation, rotation) is ``parent_from_child`` — it maps points written in the
child frame into the parent frame (the child's pose in the parent). ``lookup(target, source, t)``
returns the [4, 4] float64 matrix ``target_from_source`` (x_target = T @ x_source). Quaternions
are XYZW (scalar last), as in geometry.py.

Every frame has at most one parent (re-parenting replaces the edge and its history). Dynamic
edges keep a time-sorted history bounded by ``cache_duration_s`` (relative to the edge's newest
stamp) and ``max_history`` entries; a lookup between two stored stamps interpolates
(translation: linear, rotation: slerp); a lookup outside an edge's history by at most
``tolerance_ns`` uses the nearest end, beyond that it raises ``ExtrapolationError``. Static edges
hold at all times. ``stamp_ns=None`` asks for the newest transform of every edge on the chain.
Errors are ``TransformError`` subclasses (``LookupError``) with a message naming the frames.
"""
from __future__ import annotations

import bisect
import threading
from typing import Iterable, Sequence

import numpy as np

__all__ = ["TransformTree", "TransformError", "UnknownFrameError", "ConnectivityError",
           "ExtrapolationError", "slerp", "quaternion_multiply", "rotate", "rotation_matrix"]


class TransformError(LookupError):
    """Base class of every lookup failure."""


class UnknownFrameError(TransformError):
    """A frame that no transform mentions."""


class ConnectivityError(TransformError):
    """Both frames exist but belong to different trees."""


class ExtrapolationError(TransformError):
    """The stamp lies outside an edge's history by more than the tolerance.
    ``direction`` is "past" (older than the oldest stored stamp) or "future"."""

    def __init__(self, message: str, direction: str) -> None:
        super().__init__(message)
        self.direction = direction


# ---------------------------------------------------------------------------- quaternion maths
def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of XYZW quaternions a [4] * b [4] -> [4] (rotation b, then a)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector v [3] by the unit XYZW quaternion q [4] -> [3]."""
    x, y, z, w = (float(c) for c in q)
    vx, vy, vz = (float(c) for c in v)
    tx, ty, tz = 2.0 * (y * vz - z * vy), 2.0 * (z * vx - x * vz), 2.0 * (x * vy - y * vx)  # 2 u x v
    return np.array([vx + w * tx + (y * tz - z * ty),
                     vy + w * ty + (z * tx - x * tz),
                     vz + w * tz + (x * ty - y * tx)])


def rotation_matrix(q: np.ndarray) -> np.ndarray:
    """Unit XYZW quaternion [4] -> rotation [3, 3]; the same result as
    geometry.quaternion_to_matrix (tested), without its torch round trip (~0.2 ms per call),
    since a lookup runs in the image callback for every frame."""
    return np.stack([rotate(q, axis) for axis in np.eye(3)], axis=1)


def _conjugate(q: np.ndarray) -> np.ndarray:
    return np.array([-q[0], -q[1], -q[2], q[3]])


def slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical interpolation between unit XYZW quaternions [4] (shortest arc) -> unit [4]."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to ~1e-7
        out = q0 + fraction * (q1 - q0)
        return out / np.linalg.norm(out)
    theta = np.arccos(min(1.0, dot))
    sin_theta = np.sin(theta)
    return (np.sin((1.0 - fraction) * theta) * q0 + np.sin(fraction * theta) * q1) / sin_theta


def _compose(a: tuple, b: tuple) -> tuple:
    """(t, q) of a_from_b composed with b_from_c -> a_from_c."""
    return a[0] + rotate(a[1], b[0]), quaternion_multiply(a[1], b[1])


def _invert(a: tuple) -> tuple:
    q_inv = _conjugate(a[1])
    return -rotate(q_inv, a[0]), q_inv


_IDENTITY = (np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))


class _Edge:
    """parent_from_child over time: static (one value) or a sorted bounded history."""

    __slots__ = ("parent", "static", "stamps", "values")

    def __init__(self, parent: str, static: bool) -> None:
        self.parent, self.static = parent, static
        self.stamps: list[int] = []
        self.values: list[tuple[np.ndarray, np.ndarray]] = []

    def insert(self, stamp_ns: int, value: tuple, cache_ns: int, max_history: int) -> bool:
        if self.static:
            self.stamps, self.values = [stamp_ns], [value]
            return True
        if self.stamps and stamp_ns < self.stamps[-1] - cache_ns:
            return False  # older than the cache keeps
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.values[i] = value
        else:
            self.stamps.insert(i, stamp_ns)
            self.values.insert(i, value)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_ns)
        cut = max(cut, len(self.stamps) - max_history)
        if cut > 0:
            del self.stamps[:cut], self.values[:cut]
        return True

    def at(self, stamp_ns: int | None, tolerance_ns: int, child: str) -> tuple:
        if self.static or stamp_ns is None:
            return self.values[-1]
        stamps = self.stamps
        if stamp_ns < stamps[0] or stamp_ns > stamps[-1]:
            past = stamp_ns < stamps[0]
            gap = (stamps[0] - stamp_ns) if past else (stamp_ns - stamps[-1])
            if gap <= tolerance_ns:
                return self.values[0] if past else self.values[-1]
            raise ExtrapolationError(
                f"{self.parent} -> {child}: stamp {stamp_ns} is {gap * 1e-9:.3f} s "
                f"{'before the oldest' if past else 'after the newest'} transform "
                f"(history {stamps[0]} .. {stamps[-1]})", "past" if past else "future")
        i = bisect.bisect_left(stamps, stamp_ns)
        if stamps[i] == stamp_ns:
            return self.values[i]
        t0, t1 = stamps[i - 1], stamps[i]
        (p0, q0), (p1, q1) = self.values[i - 1], self.values[i]
        fraction = (stamp_ns - t0) / float(t1 - t0)
        return p0 + fraction * (p1 - p0), slerp(q0, q1, fraction)


class TransformTree:
    """Frames connected by parent_from_child edges; see the module docstring. Thread-safe."""

    def __init__(self, cache_duration_s: float = 10.0, max_history: int = 10000,
                 max_depth: int = 64) -> None:
        if cache_duration_s <= 0 or max_history < 2:
            raise ValueError("cache_duration_s must be > 0 and max_history >= 2")
        self.cache_ns = int(cache_duration_s * 1e9)
        self.max_history, self.max_depth = int(max_history), int(max_depth)
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent
        self._lock = threading.RLock()
        self.ignored_old = 0  # transforms older than the cache (counted, not stored)

    # ------------------------------------------------------------------ writes
    def add(self, parent: str, child: str, stamp_ns: int, translation: Sequence[float],
            rotation_xyzw: Sequence[float], static: bool = False) -> bool:
        """Store parent_from_child at stamp_ns; returns False when older than the cache.
        Raises ValueError for empty/equal frame names, a non-finite value, a zero quaternion, or
        an edge that would close a loop."""
        parent, child = _strip(parent), _strip(child)
        if not parent or not child or parent == child:
            raise ValueError(f"bad frame names: parent {parent!r}, child {child!r}")
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        q = np.asarray(rotation_xyzw, dtype=np.float64).reshape(4)
        norm = float(np.linalg.norm(q))
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and norm > 1e-9):
            raise ValueError(f"{parent} -> {child}: non-finite translation or zero/non-finite rotation")
        q = q / norm
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                if self._ancestors(parent).count(child):
                    raise ValueError(f"{parent} -> {child} would close a loop ({child} is above {parent})")
                edge = self._edges[child] = _Edge(parent, static)
            stored = edge.insert(int(stamp_ns), (t, q), self.cache_ns, self.max_history)
            if not stored:
                self.ignored_old += 1
            return stored

    def add_many(self, transforms: Iterable[tuple], static: bool = False) -> int:
        """add() for (parent, child, stamp_ns, translation, rotation_xyzw) tuples; returns how
        many were stored (bad ones raise like add())."""
        return sum(bool(self.add(*item, static=static)) for item in transforms)

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()

    # ------------------------------------------------------------------ reads
    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def parent_of(self, frame: str) -> str | None:
        with self._lock:
            edge = self._edges.get(_strip(frame))
            return None if edge is None else edge.parent

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int | None = None,
               tolerance_ns: int = 0) -> np.ndarray:
        """target_from_source [4, 4] float64 at stamp_ns (None = newest of every edge)."""
        translation, rotation = self.lookup_tq(target_frame, source_frame, stamp_ns, tolerance_ns)
        out = np.eye(4)
        out[:3, :3] = rotation_matrix(rotation)
        out[:3, 3] = translation
        return out

    def lookup_tq(self, target_frame: str, source_frame: str, stamp_ns: int | None = None,
                  tolerance_ns: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """target_from_source as (translation [3], unit quaternion XYZW [4])."""
        target, source = _strip(target_frame), _strip(source_frame)
        with self._lock:
            for name in (target, source):
                if name not in self._edges and not any(e.parent == name for e in self._edges.values()):
                    known = self.frames()
                    raise UnknownFrameError(f"frame {name!r} is unknown (known: {sorted(known)[:12]})")
            if target == source:
                return _IDENTITY[0].copy(), _IDENTITY[1].copy()
            source_chain, target_chain = self._ancestors(source), self._ancestors(target)
            common = next((f for f in source_chain if f in set(target_chain)), None)
            if common is None:
                raise ConnectivityError(f"{target!r} and {source!r} are not connected "
                                        f"(roots {source_chain[-1]!r} and {target_chain[-1]!r})")
            common_from_source = self._chain(source_chain, common, stamp_ns, tolerance_ns)
            common_from_target = self._chain(target_chain, common, stamp_ns, tolerance_ns)
        return _compose(_invert(common_from_target), common_from_source)

    def can_transform(self, target_frame: str, source_frame: str, stamp_ns: int | None = None,
                      tolerance_ns: int = 0) -> bool:
        try:
            self.lookup_tq(target_frame, source_frame, stamp_ns, tolerance_ns)
            return True
        except TransformError:
            return False

    # ------------------------------------------------------------------ helpers
    def _ancestors(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, ..., root]."""
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > self.max_depth:
                raise TransformError(f"frame chain above {frame!r} deeper than {self.max_depth}")
        return chain

    def _chain(self, chain: list[str], stop: str, stamp_ns: int | None, tolerance_ns: int) -> tuple:
        """stop_from_chain[0] composed along the chain (child -> ... -> stop)."""
        result = _IDENTITY
        for child in chain:
            if child == stop:
                return result
            edge = self._edges[child]
            result = _compose(edge.at(stamp_ns, tolerance_ns, child), result)
        return result


def _strip(frame: str) -> str:
    """tf2 frame ids carry no leading slash; accept one (ROS 1 habit)."""
    return str(frame).strip().lstrip("/")
