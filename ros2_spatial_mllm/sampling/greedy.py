"""Greedy maximum coverage on packed bitsets, the temporal-spread fill, and uniform sampling.

Frames' voxel sets are rows of a bit matrix ``[N, W]`` of uint64 words (bit ``j`` of the row is
voxel ``j``; built by ``bitsets.py``). Gains start as each row's popcount (``np.bitwise_count``);
after a pick only the words where it added new bits are touched: every row's gain drops by
``popcount(row & new_bits)`` over those columns. So K steps cost ``O(N * W)`` plus ``N`` times the
words the picks changed, no Python loop over voxels, and gains stay exact integers.

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

from ros2_spatial_mllm.sampling.bitsets import pack_voxel_sets

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
    union = np.bitwise_or.reduce(rows, axis=0)  # [W]
    union_size = int(np.bitwise_count(union).sum())
    occupied = np.flatnonzero(union)  # words some frame uses; the others never count
    if occupied.size < rows.shape[1]:
        rows = rows[:, occupied]  # [N, W']
    covered = np.zeros(rows.shape[1], dtype=np.uint64)  # [W']
    # gain[i] = |row i \ covered|, kept exact by subtracting each pick's newly covered bits.
    gain = np.bitwise_count(rows).sum(axis=1, dtype=np.int64)  # [N]
    available = np.ones(n, dtype=bool)
    nearest = np.full(n, np.inf)  # time distance to the nearest chosen frame
    picks: List[int] = []
    gains: List[int] = []
    for _ in range(min(k, n)):
        best = int(np.argmax(gain))  # picked frames hold -1
        if gain[best] <= 0:  # coverage saturated: temporal-spread fill
            spread = np.where(available, nearest, -1.0)
            best = int(np.argmax(spread))
            gains.append(0)
        else:
            gains.append(int(gain[best]))
            new_bits = rows[best] & ~covered  # [W']
            cols = np.flatnonzero(new_bits)  # [C] words that gained bits
            new_bits = new_bits[cols]  # [C]
            covered[cols] |= new_bits
            gain -= np.bitwise_count(rows[:, cols] & new_bits).sum(axis=1, dtype=np.int64)  # [N]
        available[best] = False
        gain[best] = -1
        nearest = np.minimum(nearest, np.abs(t - t[best]))
        picks.append(best)
    covered_size = int(np.bitwise_count(covered).sum())
    coverage = covered_size / union_size if union_size else 0.0
    pick_order = [int(order[p]) for p in picks]
    indices = [int(order[p]) for p in sorted(picks)]
    return SamplingResult(indices, coverage, gains, pick_order, None, union_size)
