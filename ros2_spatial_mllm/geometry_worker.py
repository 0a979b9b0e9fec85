"""Per-frame geometry for space-aware sampling, computed in a worker thread as frames are kept.

The worker listens to a ``FrameBuffer``: every kept frame is queued (bounded; when full the
oldest pending frame is dropped and counted), and its voxel set (the sampling package's
``FrameVoxels``) is computed off the subscription callback and cached by frame stamp. Queries
read the cache (``voxels_for``), so no geometry runs at query time. Entries leave with the
buffer's evictions. ``FrameVoxels`` results are also added to a ``sampling.VoxelIndex`` keyed by
frame stamp (per-frame voxel ids precomputed here, off the query path), so a query's
space-aware pick (``select_space_aware``) costs about 0.5 ms for 16 of 128 frames instead of the
2-4 ms of the stateless ``space_aware_sample``; the picks are identical (same voxel sets, same
times ``stamp_ns * 1e-9``, same greedy).

Two geometry sources:
* sensor: the frame has depth [h, w] metres + intrinsics + world_from_camera -> unproject a
  subsampled depth map (longest side <= ``max_points_side``) into world points; every valid
  depth pixel counts (no confidence filter). About a millisecond, no model.
* model heads: otherwise ``model.predict_geometry(frames [N, H, W, 3])`` (VGGT camera + depth
  heads). Its poses are camera-from-world with *world = first frame of the batch* and its
  scale is per batch, so per-chunk results are not comparable by themselves. Each chunk is
  therefore anchored on a reference keyframe: chunk = [reference] + up to ``chunk_size - 1`` new
  frames. Poses come out relative to the reference camera; the reference's known world pose maps
  them into one persistent world frame, and the ratio of the reference's median depth in this
  chunk to its first estimate fixes the scale. When the reference leaves the buffer, the newest
  frame with model geometry becomes the reference (its world pose and depth are known), so the
  world frame chains on. A model whose cameras chain consecutive steps (``camera_source ==
  "pair_pose"``, the trained tiny default) is re-anchored on every chunk instead, so that the
  step from the reference to the chunk's first new frame stays short. Small chunks keep each
  model call short (queries wait for it: the model lock is shared with the query engine) while
  the shared reference keeps all voxel sets in one frame and one scale; re-running the whole
  window per query (the reference code's way) is what this avoids.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ros2_spatial_mllm.buffer import Frame, FrameBuffer
from ros2_spatial_mllm.sampling import FrameVoxels, SamplingResult, VoxelIndex

__all__ = ["GeometryWorker", "GeometryEntry", "unproject_depth", "default_voxel_builder"]
log = logging.getLogger(__name__)


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray, world_from_camera: np.ndarray,
                    max_side: int = 64) -> np.ndarray:
    """Depth [h, w] (same scale as the pose) -> world points [h', w', 3] float32, NaN where the
    depth is invalid; subsampled with a stride so that max(h', w') <= ``max_side``.
    ``intrinsics`` [3, 3] are those of the depth map."""
    stride = max(1, int(np.ceil(max(depth.shape) / max_side)))
    d = np.asarray(depth, np.float32)[::stride, ::stride]
    K = np.asarray(intrinsics, np.float64).copy()
    K[:2] /= stride
    v, u = np.mgrid[0:d.shape[0], 0:d.shape[1]].astype(np.float32)
    z = np.where(np.isfinite(d) & (d > 0), d, np.nan).astype(np.float32)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)  # [h', w', 3]
    T = np.asarray(world_from_camera, np.float64)
    return (cam @ T[:3, :3].T + T[:3, 3]).astype(np.float32)


def default_voxel_builder(world_points: np.ndarray, confidence: np.ndarray | None, base_voxel: float = 0.02) -> Any:
    """The sampling package's per-frame voxel cache from points [h, w, 3] (+ conf [h, w] or None)."""
    return FrameVoxels.from_points(world_points, confidence, base_voxel=base_voxel,
                                   conf_percentile=50.0 if confidence is not None else None)


@dataclass
class GeometryEntry:
    """Cached geometry of one frame: voxel set, source ("sensor"/"model"), estimated pose."""

    voxels: Any
    source: str
    world_from_camera: np.ndarray | None = None
    median_depth: float = float("nan")


@dataclass
class _Reference:
    stamp_ns: int
    rgb: np.ndarray                  # [H, W, 3] uint8 as given to the model
    world_from_camera: np.ndarray    # [4, 4] in the worker's persistent world frame
    median_depth: float              # in world scale


class GeometryWorker:
    """Computes and caches per-frame voxel sets for a FrameBuffer (see module docstring).

    model_provider() -> model with ``predict_geometry`` or None (not loaded: model-path frames
    wait); model_lock: shared with the query engine; build_voxels(points [h, w, 3], conf [h, w] or
    None for sensor depth) -> voxel set (default: ``FrameVoxels.from_points`` with ``base_voxel``).
    sensor_lookup(frame) -> (depth [h, w] m, K [3, 3] of the rgb image, world_from_camera [4, 4])
    or None: sensor data that arrived after the image (depth/odometry on other topics are not
    ordered with the image); a frame without sensor data waits up to ``sensor_wait_s`` for it
    before it goes to the model path (or is skipped when ``use_model`` is False). The frame
    itself is never modified (the buffer's byte accounting depends on it).
    """

    def __init__(self, buffer: FrameBuffer, model_provider: Callable[[], Any] | None = None,
                 model_lock: threading.RLock | None = None,
                 build_voxels: Callable[[np.ndarray, np.ndarray], Any] | None = None,
                 queue_size: int = 64, chunk_size: int = 4, max_points_side: int = 64, base_voxel: float = 0.02,
                 use_sensor: bool = True, use_model: bool = True, autostart: bool = True,
                 sensor_lookup: Callable[[Frame], tuple | None] | None = None, sensor_wait_s: float = 0.5) -> None:
        if chunk_size < 2:
            raise ValueError("chunk_size must be >= 2 (the reference frame plus one new frame)")
        self.buffer = buffer
        self.model_provider = model_provider or (lambda: None)
        self.model_lock = model_lock or threading.RLock()
        self.build_voxels = build_voxels or (lambda pts, conf: default_voxel_builder(pts, conf, base_voxel))
        self.queue_size, self.chunk_size, self.max_points_side = queue_size, chunk_size, max_points_side
        self.use_sensor, self.use_model = use_sensor, use_model
        self.sensor_lookup, self.sensor_wait_s = sensor_lookup, sensor_wait_s
        self._cv = threading.Condition()
        self._pending: collections.deque[tuple[Frame, float]] = collections.deque()  # (frame, queued at)
        self._cache: dict[int, GeometryEntry] = {}
        self._index = VoxelIndex()   # stamp_ns -> FrameVoxels ids; guarded by self._cv like the cache
        self._reference: _Reference | None = None
        self._busy = False
        self._stop = False
        self._counts = {"queued": 0, "sensor": 0, "model": 0, "dropped_queue_full": 0,
                        "dropped_evicted": 0, "skipped_no_source": 0, "errors": 0, "reanchored": 0,
                        "index_selects": 0, "index_misses": 0, "index_rejected": 0}
        self._compute_ms = collections.deque(maxlen=64)
        buffer.add_listener(on_keep=self._on_keep, on_evict=self._on_evict)
        self._thread: threading.Thread | None = None
        if autostart:
            self.start()

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="geometry-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify_model_ready(self) -> None:
        """Wake the worker (call after the model is loaded so waiting frames are processed)."""
        with self._cv:
            self._cv.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending or running that can run now (tests, benchmarks)."""
        end = time.monotonic() + timeout
        with self._cv:
            while not self._idle_locked() and time.monotonic() < end:
                self._cv.wait(0.05)
            return self._idle_locked()

    # ------------------------------------------------------------------ buffer listeners
    def _on_keep(self, frame: Frame) -> None:
        with self._cv:
            if len(self._pending) >= self.queue_size:
                self._pending.popleft()
                self._counts["dropped_queue_full"] += 1
            self._pending.append((frame, time.monotonic()))
            self._counts["queued"] += 1
            self._cv.notify()

    def _on_evict(self, frame: Frame) -> None:
        with self._cv:
            self._cache.pop(frame.stamp_ns, None)
            if frame.stamp_ns in self._index:
                self._index.remove(frame.stamp_ns)

    # ------------------------------------------------------------------ reads
    def voxels_for(self, stamps: Sequence[int]) -> list[Any]:
        """Voxel set per stamp, None where not (yet) computed."""
        with self._cv:
            return [entry.voxels if (entry := self._cache.get(int(s))) else None for s in stamps]

    def select_space_aware(self, stamps: Sequence[int], k: int) -> SamplingResult | None:
        """Space-aware pick of ``min(k, len(stamps))`` of these frames from the voxel index.

        Returns the ``SamplingResult`` of ``VoxelIndex.select`` (indices are positions in
        ``stamps``, sorted by time), or None when some stamp is not indexed (geometry not computed
        yet, evicted meanwhile, or a custom ``build_voxels`` that returns no ``FrameVoxels``):
        the caller then uses the stateless ``space_aware_sample``.
        """
        keys = [int(s) for s in stamps]
        with self._cv:
            if not keys or not all(key in self._index for key in keys):
                self._counts["index_misses"] += 1
                return None
            self._counts["index_selects"] += 1
            return self._index.select(k, keys)

    def indexed_stamps(self) -> list[int]:
        """Stamps (ns) held by the voxel index, in time order."""
        with self._cv:
            return [int(key) for key in self._index.keys()]

    def entry(self, stamp_ns: int) -> GeometryEntry | None:
        with self._cv:
            return self._cache.get(int(stamp_ns))

    def stats(self) -> dict:
        with self._cv:
            times = list(self._compute_ms)
            return {**self._counts, "pending": len(self._pending), "cached": len(self._cache),
                    "indexed": len(self._index),
                    "mean_compute_ms": float(np.mean(times)) if times else 0.0,
                    "reference_stamp_ns": self._reference.stamp_ns if self._reference else 0}

    # ------------------------------------------------------------------ worker
    def _sensor_data(self, frame: Frame) -> tuple | None:
        """(depth, K, world_from_camera) from the frame, else from ``sensor_lookup``, else None."""
        if not self.use_sensor:
            return None
        if frame.depth is not None and frame.intrinsics is not None and frame.world_from_camera is not None:
            return frame.depth, frame.intrinsics, frame.world_from_camera
        if self.sensor_lookup is not None:
            try:
                found = self.sensor_lookup(frame)
            except Exception:  # a broken lookup must not stop the worker
                log.exception("sensor_lookup failed")
                found = None
            if found is not None and all(part is not None for part in found):
                return tuple(found)
        return None

    def _classify_locked(self) -> tuple[list, list[Frame], int]:
        """Pending frames -> (sensor [(frame, data)], model/no-source [frame], still waiting count).
        Frames without sensor data wait up to ``sensor_wait_s`` for it when a lookup is set."""
        now = time.monotonic()
        sensor, other, waiting = [], [], 0
        for frame, queued_at in self._pending:
            data = self._sensor_data(frame)
            if data is not None:
                sensor.append((frame, data))
            elif self.use_sensor and self.sensor_lookup is not None and now - queued_at < self.sensor_wait_s:
                waiting += 1
            else:
                other.append(frame)
        return sensor, other, waiting

    def _runnable_locked(self) -> bool:
        if not self._pending:
            return False
        sensor, other, _ = self._classify_locked()
        return bool(sensor) or bool(other and (not self.use_model or self.model_provider() is not None))

    def _idle_locked(self) -> bool:
        if self._busy or not self._pending:
            return not self._busy
        sensor, other, waiting = self._classify_locked()
        model_blocked = self.use_model and self.model_provider() is None
        return not sensor and not waiting and (not other or model_blocked)

    def _take_batch_locked(self) -> tuple[list, list[Frame]]:
        sensor, other, _ = self._classify_locked()
        if not self.use_model:
            self._counts["skipped_no_source"] += len(other)
            taken_other, chunk = other, []
        else:
            chunk = other[: self.chunk_size - 1] if self.model_provider() is not None else []
            taken_other = chunk
        taken = {id(f) for f, _ in sensor} | {id(f) for f in taken_other}
        self._pending = collections.deque(item for item in self._pending if id(item[0]) not in taken)
        return sensor, chunk

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._runnable_locked():
                    self._cv.wait(0.05 if self._pending else 0.2)
                if self._stop:
                    return
                sensor, chunk = self._take_batch_locked()
                self._busy = True
            try:
                for frame, data in sensor:
                    self._process_sensor(frame, *data)
                if chunk:
                    self._process_chunk(chunk)
            except Exception:
                log.exception("geometry worker failed")
                with self._cv:
                    self._counts["errors"] += 1
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _store(self, frame: Frame, entry: GeometryEntry, started: float) -> None:
        with self._cv:
            if frame.stamp_ns not in self.buffer:   # evicted while we computed
                self._counts["dropped_evicted"] += 1
                return
            self._cache[frame.stamp_ns] = entry
            self._index_locked(frame.stamp_ns, entry.voxels)
            self._counts[entry.source] += 1
            self._compute_ms.append((time.perf_counter() - started) * 1e3)

    def _index_locked(self, stamp_ns: int, voxels: Any) -> None:
        """Add a frame's voxels to the index (time = stamp in seconds, as the stateless path)."""
        if not isinstance(voxels, FrameVoxels):
            self._counts["index_rejected"] += 1
            return
        try:
            self._index.add(stamp_ns, voxels, stamp=stamp_ns * 1e-9)
        except ValueError:   # base_voxel differs from the indexed frames': stateless path for it
            log.warning("frame %d not indexed: base_voxel %g differs", stamp_ns, voxels.base_voxel)
            self._counts["index_rejected"] += 1
            if stamp_ns in self._index:
                self._index.remove(stamp_ns)

    def _process_sensor(self, frame: Frame, depth: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray) -> None:
        started = time.perf_counter()
        K = np.asarray(intrinsics, np.float64).copy()   # K of the rgb image -> K of the depth map
        if depth.shape != frame.rgb.shape[:2]:
            K[0] *= depth.shape[1] / frame.rgb.shape[1]
            K[1] *= depth.shape[0] / frame.rgb.shape[0]
        points = unproject_depth(depth, K, pose, self.max_points_side)
        stride = max(1, int(np.ceil(max(depth.shape) / self.max_points_side)))
        sub = depth[::stride, ::stride]
        finite = sub[np.isfinite(sub) & (sub > 0)]
        median = float(np.median(finite)) if finite.size else float("nan")
        self._store(frame, GeometryEntry(self.build_voxels(points, None), "sensor",
                                         np.asarray(pose, np.float32), median), started)

    def _choose_reference(self, first: Frame, chain: bool = False) -> _Reference:
        """chain=False: keep the reference keyframe while it is buffered (VGGT's camera head
        relates every frame of a chunk to the first directly). chain=True: the newest frame with
        model geometry anchors each chunk, because a pair-pose head's cameras are a chain of
        consecutive steps and its first step (reference -> first new frame) must be short."""
        ref = self._reference
        if ref is not None and ref.stamp_ns in self.buffer and not chain:
            return ref
        with self._cv:   # newest frame with model geometry still buffered becomes the reference
            known = [(s, e) for s, e in self._cache.items() if e.source == "model" and s in self.buffer]
        if ref is not None and known:
            stamp, entry = max(known, key=lambda item: item[0])
            if stamp == ref.stamp_ns:
                return ref
            frame = self.buffer.get(stamp)
            if frame is not None:
                self._counts["reanchored"] += 1
                self._reference = _Reference(stamp, self._resize(frame.rgb, ref.rgb.shape[:2]),
                                             entry.world_from_camera.astype(np.float64), entry.median_depth)
                return self._reference
        if ref is not None and ref.stamp_ns in self.buffer:
            return ref
        # first chunk (or nothing to chain from): this chunk's first frame defines the world
        self._reference = _Reference(first.stamp_ns, np.ascontiguousarray(first.rgb),
                                     np.eye(4), float("nan"))
        return self._reference

    @staticmethod
    def _resize(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        if rgb.shape[:2] == tuple(hw):
            return np.ascontiguousarray(rgb)
        return cv2.resize(np.ascontiguousarray(rgb), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)

    def _process_chunk(self, chunk: list[Frame]) -> None:
        started = time.perf_counter()
        model = self.model_provider()
        if model is None:
            with self._cv:
                self._pending.extendleft((f, time.monotonic()) for f in reversed(chunk))
            return
        ref = self._choose_reference(chunk[0], chain=getattr(model, "camera_source", None) == "pair_pose")
        new = [f for f in chunk if f.stamp_ns != ref.stamp_ns]
        images = np.stack([ref.rgb] + [self._resize(f.rgb, ref.rgb.shape[:2]) for f in new])  # [N, H, W, 3]
        with self.model_lock:
            out = model.predict_geometry(images)
        depth, conf = np.asarray(out["depth"], np.float32), np.asarray(out["depth_conf"], np.float32)
        extrinsics, intrinsics = np.asarray(out["extrinsics"], np.float64), np.asarray(out["intrinsics"])
        ref_median = float(np.nanmedian(depth[0]))
        if not np.isfinite(ref.median_depth):   # first chunk: its scale defines the world scale
            ref.median_depth = ref_median
        scale = ref.median_depth / ref_median if ref_median > 0 else 1.0
        frames = [self.buffer.get(ref.stamp_ns)] + new   # the reference itself gets geometry once
        for i, frame in enumerate(frames):
            if frame is None or (i == 0 and self.entry(ref.stamp_ns) is not None):
                continue
            cam_from_ref = np.eye(4)
            cam_from_ref[:3, :4] = extrinsics[i]
            cam_from_ref[:3, 3] *= scale
            world_from_cam = ref.world_from_camera @ np.linalg.inv(cam_from_ref)
            points = unproject_depth(depth[i] * scale, intrinsics[i], world_from_cam, self.max_points_side)
            sub = max(1, int(np.ceil(max(depth.shape[1:]) / self.max_points_side)))
            point_conf = conf[i][::sub, ::sub]
            self._store(frame, GeometryEntry(self.build_voxels(points, point_conf), "model",
                                             world_from_cam.astype(np.float32),
                                             float(np.nanmedian(depth[i])) * scale), started)
