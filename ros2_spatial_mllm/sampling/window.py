"""Frame selection over a time-sorted window of buffered frames (what the query engine asks for).

Each frame needs only a ``stamp_ns`` attribute here; the voxel sets come from the geometry
worker (one per frame, None where its geometry is missing).
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence


from ros2_spatial_mllm.sampling.greedy import candidate_indices, uniform_sample
from ros2_spatial_mllm.sampling.space_aware import space_aware_sample


def window_slots(picked: Sequence[float], first: float, last: float) -> List[float]:
    """Where each picked frame lies in the window it was sampled from, in uniform-sample slots:
    the window's first frame at 0, its last at K-1 (K = len(picked)). `picked`, `first` and
    `last` are frame numbers or timestamps; K frames spread evenly over the window land on
    0, 1, ..., K-1, so `grid_times` (model.processing) gives them the temporal positions of evenly spaced frames."""
    k = len(picked)
    if k == 0:
        raise ValueError("no frames picked")
    span = float(last) - float(first)
    if span <= 0 or k == 1:
        return [float(i) for i in range(k)]  # a window of one instant: frames in their order
    return [(float(p) - float(first)) / span * (k - 1) for p in picked]


def select_frames(frames: Sequence[Any], k: int, mode: str, voxel_sets: Sequence[Any] | None = None,
                  max_candidates: int = 128,
                  index_select: Callable[[list[int], int], Any] | None = None) -> tuple[list[int], float, str]:
    """Choose up to ``k`` of ``frames`` (time-sorted): (indices ascending, coverage, mode used).

    space_aware needs one voxel set per frame (None where geometry is missing): candidates are
    up to ``max_candidates`` frames by linspace (``candidate_indices``), restricted to those with geometry; when fewer
    than ``k`` candidates have geometry it falls back to uniform ("uniform_fallback").
    ``index_select(candidate stamps_ns, k)`` (``GeometryWorker.select_space_aware``: a cached
    ``VoxelIndex``) is tried first; when it returns None the stateless ``space_aware_sample``
    runs on ``voxel_sets`` (same picks, slower).
    Coverage for uniform/latest is the fraction of frames used (1.0 when all are used).
    """
    n = len(frames)
    k = min(k, n)
    if mode == "latest":
        return list(range(n - k, n)), k / n, "latest"
    if mode == "space_aware" and voxel_sets is not None:
        # the same linspace pre-selection as the reference and training (truncated, not rounded)
        cand = [i for i in candidate_indices(n, max_candidates) if voxel_sets[i] is not None]
        if len(cand) >= k:
            result = index_select([frames[i].stamp_ns for i in cand], k) if index_select else None
            if result is None:
                result = space_aware_sample([voxel_sets[i] for i in cand], k,
                                            timestamps=[frames[i].stamp_ns * 1e-9 for i in cand])
            chosen = sorted(cand[int(i)] for i in result.indices)
            coverage = float(result.coverage) if result.coverage is not None else len(chosen) / n
            return chosen, coverage, "space_aware"
        mode = "uniform_fallback"
    chosen = sorted(int(i) for i in uniform_sample(n, k))
    return chosen, len(chosen) / n, "uniform" if mode == "uniform" else mode
