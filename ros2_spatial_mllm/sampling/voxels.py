"""Per-frame voxel sets for space-aware sampling, built once per frame and reused.

A ``FrameVoxels`` holds the occupied voxels of one frame's confident 3D points as packed int64
keys on a fixed *base* grid (``base_voxel`` metres, origin at the world origin). At query time the
sampler needs voxels of the reference size (smallest side of the candidates' bounding box / 20);
it coarsens the base keys by an integer factor ``f`` with integer floor division
(``floor(floor(p / b) / f) == floor(p / (f * b))``, exact), so the query voxel is ``f * b``.
``keys_at(f)`` caches the coarsened keys per factor, so each frame is coarsened at most once per
factor. The frame's bounding box is kept so the union bounding box (hence the reference voxel
size) is exact without touching the points again.

Key layout: three signed 21-bit integers (x, y, z voxel indices + 2**20) packed as
``x << 42 | y << 21 | z``; points farther than ``2**20 * base_voxel`` from the origin (10 km at
1 cm) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

__all__ = ["FrameVoxels", "pack_keys", "unpack_keys", "key_fields", "coarsen_keys", "sorted_unique", "KEY_LIMIT"]

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
KEY_LIMIT = _OFFSET  # |voxel index| must stay below this


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted unique values of a 1-D array (sort + neighbour compare; much faster than the
    hash-based ``np.unique`` of numpy 2.x on int64 keys)."""
    ordered = np.sort(values)
    if ordered.size < 2:
        return ordered
    first = np.empty(ordered.size, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def pack_keys(cells: np.ndarray) -> np.ndarray:
    """Pack integer voxel indices ``[M, 3]`` (|v| < 2**20) into int64 keys ``[M]``."""
    return _pack_columns(cells[:, 0], cells[:, 1], cells[:, 2])


def _pack_columns(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Integer voxel index columns [M] each -> packed int64 keys [M]."""
    keys = (x.astype(np.int64) + _OFFSET) << (2 * _BITS)
    keys |= (y.astype(np.int64) + _OFFSET) << _BITS
    keys |= z.astype(np.int64) + _OFFSET
    return keys


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of ``pack_keys``: int64 keys ``[M]`` -> int64 voxel indices ``[M, 3]``."""
    keys = np.asarray(keys, dtype=np.int64)
    cells = np.empty((keys.shape[0], 3), dtype=np.int64)
    cells[:, 0] = (keys >> (2 * _BITS)) & _MASK
    cells[:, 1] = (keys >> _BITS) & _MASK
    cells[:, 2] = keys & _MASK
    return cells - _OFFSET


def key_fields(keys: np.ndarray):
    """The three stored fields of packed keys ``[M]`` as int64 arrays (x, y, z) ``[M]`` each: the
    voxel indices plus ``2**20`` (no copy into an ``[M, 3]`` table; for differences of indices)."""
    keys = np.asarray(keys, dtype=np.int64)
    return keys >> (2 * _BITS), (keys >> _BITS) & _MASK, keys & _MASK


def coarsen_keys(keys: np.ndarray, factor: int) -> np.ndarray:
    """Keys of the voxels ``factor`` times larger that contain ``keys``; sorted and unique."""
    if factor == 1:
        return sorted_unique(keys)
    return sorted_unique(pack_keys(np.floor_divide(unpack_keys(keys), int(factor))))


@dataclass(eq=False)
class FrameVoxels:
    """Occupied voxels of one frame (see module docstring).

    keys: int64 [M] sorted unique packed base-grid keys; base_voxel: base voxel side (world units,
    metres for sensor depth); bbox_min / bbox_max: float64 [3] bounds of the kept points (None when
    the frame kept no point); num_points: number of points that passed the filters.
    """

    keys: np.ndarray
    base_voxel: float
    bbox_min: Optional[np.ndarray]
    bbox_max: Optional[np.ndarray]
    num_points: int
    _coarse: Dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_points(
        cls,
        points: np.ndarray,
        conf: Optional[np.ndarray] = None,
        base_voxel: float = 0.02,
        min_conf: float = 0.1,
        conf_percentile: Optional[float] = 50.0,
        conf_threshold: Optional[float] = None,
        pixel_stride: int = 1,
    ) -> "FrameVoxels":
        """Build from one frame's world points.

        Args:
            points: [H, W, 3] (or [M, 3]) world points; non-finite points are dropped.
            conf: [H, W] (or [M]) confidence, or None (sensor depth: keep every finite point).
            base_voxel: base grid side in world units (> 0).
            min_conf: keep points with conf > min_conf (reference: 0.1).
            conf_percentile: keep points with conf >= this percentile of the frame's own conf
                (reference: 50th percentile over *all* candidates; see ``conf_threshold``).
            conf_threshold: explicit threshold (e.g. the global percentile of a batch); overrides
                ``conf_percentile``.
            pixel_stride: keep every n-th pixel in both image directions (speed; 1 = all).
        """
        if not base_voxel > 0:
            raise ValueError(f"base_voxel must be > 0, got {base_voxel}")
        points = np.asarray(points)
        if points.shape[-1] != 3:
            raise ValueError(f"points must end with a dimension of 3, got shape {points.shape}")
        if conf is not None:
            conf = np.asarray(conf)
            if conf.shape != points.shape[:-1]:
                raise ValueError(f"conf shape {conf.shape} does not match points {points.shape[:-1]}")
        if pixel_stride > 1 and points.ndim == 3:
            points = points[::pixel_stride, ::pixel_stride]
            conf = conf[::pixel_stride, ::pixel_stride] if conf is not None else None
        flat = points.reshape(-1, 3)  # [M, 3]; work on columns (axis-1 reductions are slow)
        columns = [flat[:, axis] for axis in range(3)]  # 3 x [M] strided views
        keep = np.isfinite(columns[0]) & np.isfinite(columns[1]) & np.isfinite(columns[2])
        if conf is not None:
            conf_flat = conf.reshape(-1).astype(np.float32, copy=False)
            threshold = conf_threshold
            if threshold is None and conf_percentile is not None and conf_flat.size:
                threshold = float(np.percentile(conf_flat, conf_percentile))
            keep &= conf_flat > min_conf
            if threshold is not None:
                keep &= conf_flat >= threshold
        kept = [column[keep].astype(np.float64) for column in columns]  # 3 x [K] contiguous
        cells = [np.floor(column / base_voxel) for column in kept]
        in_range = (np.abs(cells[0]) < KEY_LIMIT) & (np.abs(cells[1]) < KEY_LIMIT) & (np.abs(cells[2]) < KEY_LIMIT)
        if not in_range.all():
            kept = [column[in_range] for column in kept]
            cells = [column[in_range] for column in cells]
        if kept[0].size == 0:
            return cls(np.zeros(0, np.int64), float(base_voxel), None, None, 0)
        keys = sorted_unique(_pack_columns(*cells))
        bbox_min = np.array([column.min() for column in kept])
        bbox_max = np.array([column.max() for column in kept])
        return cls(keys, float(base_voxel), bbox_min, bbox_max, int(kept[0].size))

    @property
    def empty(self) -> bool:
        return self.keys.size == 0

    @property
    def nbytes(self) -> int:
        """Memory held by the keys, including cached coarse levels."""
        return int(self.keys.nbytes + sum(k.nbytes for k in self._coarse.values()))

    def keys_at(self, factor: int) -> np.ndarray:
        """Sorted unique keys of voxels ``factor * base_voxel`` wide (cached per factor)."""
        factor = int(factor)
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        if factor == 1:
            return self.keys
        cached = self._coarse.get(factor)
        if cached is None:
            cached = coarsen_keys(self.keys, factor)
            self._coarse[factor] = cached
        return cached
