"""Greedy maximum coverage on packed bitsets, the temporal-spread fill, and uniform sampling.

Frames' voxel sets are rows of a bit matrix ``[N, W]`` of uint64 words (bit ``j`` of the row is
voxel ``j``). One greedy step is ``popcount(rows & ~covered)`` per row (``np.bitwise_count``), an
argmax, and an OR; K steps cost ``O(K * N * W)`` word operations, no Python loop over voxels.

Selection rules (deterministic):
  1. While some frame adds new voxels: pick the frame with the largest gain; ties -> earliest
     (smallest time, then smallest index).
  2. Once every remaining gain is zero (all coverage reached, or empty frames), fill the remaining
     picks by temporal spread: the frame whose time is farthest from its nearest already chosen
     frame; ties -> earliest. With nothing chosen yet every frame is infinitely far, so the first
     fill pick is the earliest frame, then the latest, then the middle, and so on.
  3. The result always has exactly ``min(k, N)`` distinct indices, sorted by time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import numpy as np

__all__ = [
    "SamplingResult",
    "uniform_sample",
    "candidate_indices",
    "pack_voxel_sets",
    "greedy_max_coverage",
    "MAX_CANDIDATES",
]

MAX_CANDIDATES = 128


@dataclass
class SamplingResult:
    """Frames chosen by a sampler.

    indices: chosen candidate positions, sorted by time; coverage: fraction of the union of all
    candidates' voxels covered by the chosen frames (0..1; 0 when there are no voxels; None for
    uniform sampling); gains: new voxels added by each pick, in pick order; pick_order: the
    picks in the order they were made; voxel_size: query voxel side (world units) or None;
    num_voxels: size of the union; method: "space_aware" | "space_aware_reference" | "uniform".
    """

    indices: List[int]
    coverage: Optional[float] = None
    gains: List[int] = field(default_factory=list)
    pick_order: List[int] = field(default_factory=list)
    voxel_size: Optional[float] = None
    num_voxels: int = 0
    method: str = "space_aware"

    def to_dict(self) -> dict:
        return asdict(self)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"number of frames to pick must be a positive integer, got {k!r}")
    return int(k)


def uniform_sample(n: int, k: int) -> List[int]:
    """Baseline: ``k`` indices spread evenly over ``range(n)`` (``linspace(0, n-1, k)`` truncated to
    int, as the reference); all of ``range(n)`` when ``k >= n``. Indices are distinct and sorted."""
    k = _check_k(k)
    if n < 0:
        raise ValueError(f"number of frames must be >= 0, got {n}")
    if k >= n:
        return list(range(n))
    return np.linspace(0, n - 1, k).astype(np.int64).tolist()


def candidate_indices(n: int, max_candidates: int = MAX_CANDIDATES) -> List[int]:
    """Pre-selection of up to ``max_candidates`` frames out of ``n`` by linspace (reference: 128)."""
    return uniform_sample(n, max_candidates) if n > 0 else []


def pack_voxel_sets(ids_per_frame: Sequence[np.ndarray], num_voxels: int) -> np.ndarray:
    """Bit matrix of voxel sets.

    Args:
        ids_per_frame: N arrays of voxel ids in ``[0, num_voxels)`` (duplicates allowed).
        num_voxels: size of the id space U.
    Returns:
        uint64 ``[N, ceil(U / 64)]`` (at least one word per row), bit ``j`` = voxel ``j``.
    """
    n = len(ids_per_frame)
    words = max(1, -(-num_voxels // 64))
    dense = np.zeros((n, words * 64), dtype=bool)  # [N, 64W]
    lengths = np.fromiter((len(ids) for ids in ids_per_frame), dtype=np.int64, count=n)
    if lengths.sum():
        rows = np.repeat(np.arange(n), lengths)
        dense[rows, np.concatenate([np.asarray(ids, np.int64) for ids in ids_per_frame])] = True
    packed = np.packbits(dense, axis=1, bitorder="little")  # [N, 8W] uint8
    return np.ascontiguousarray(packed).view(np.uint64)  # [N, W]


def greedy_max_coverage(
    bitsets: np.ndarray,
    k: int,
    times: Optional[Sequence[float]] = None,
) -> SamplingResult:
    """Pick ``min(k, N)`` rows of ``bitsets`` [N, W] uint64 (rules in the module docstring).

    Args:
        bitsets: uint64 [N, W] voxel bit matrix (``pack_voxel_sets``).
        k: number of frames wanted (>= 1).
        times: [N] timestamps (any monotonic unit) for tie-breaks, the fill and the final order;
            default: the row index.
    Returns:
        SamplingResult with indices (sorted by time), coverage, gains and pick_order.
    """
    k = _check_k(k)
    bitsets = np.asarray(bitsets, dtype=np.uint64)
    n = bitsets.shape[0]
    times_arr = np.arange(n, dtype=np.float64) if times is None else np.asarray(times, np.float64)
    if times_arr.shape != (n,):
        raise ValueError(f"times must have shape ({n},), got {times_arr.shape}")
    if n == 0:
        return SamplingResult([], 0.0, [], [], None, 0)
    # Rank frames by (time, index) once; argmax/argmin on rank-ordered arrays give "earliest" ties.
    order = np.lexsort((np.arange(n), times_arr))  # [N] time-ordered row ids
    rows = bitsets[order]  # [N, W]
    t = times_arr[order]  # [N]
    covered = np.zeros(rows.shape[1], dtype=np.uint64)  # [W]
    union_size = int(np.bitwise_count(np.bitwise_or.reduce(rows, axis=0)).sum())
    available = np.ones(n, dtype=bool)
    nearest = np.full(n, np.inf)  # time distance to the nearest chosen frame
    picks: List[int] = []
    gains: List[int] = []
    for _ in range(min(k, n)):
        gain = np.bitwise_count(rows & ~covered).sum(axis=1, dtype=np.int64)  # [N]
        gain[~available] = -1
        best = int(np.argmax(gain))
        if gain[best] <= 0:  # coverage saturated: temporal-spread fill
            spread = np.where(available, nearest, -1.0)
            best = int(np.argmax(spread))
            gains.append(0)
        else:
            gains.append(int(gain[best]))
            covered |= rows[best]
        available[best] = False
        nearest = np.minimum(nearest, np.abs(t - t[best]))
        picks.append(best)
    covered_size = int(np.bitwise_count(covered).sum())
    coverage = covered_size / union_size if union_size else 0.0
    pick_order = [int(order[p]) for p in picks]
    indices = [int(order[p]) for p in sorted(picks)]
    return SamplingResult(indices, coverage, gains, pick_order, None, union_size)
