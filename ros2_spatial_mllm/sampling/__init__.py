"""Frame sampling: space-aware (voxel max-coverage) and uniform.

Typical robot use (incremental; per-frame work once, query in milliseconds)::

    index = VoxelIndex()
    for stamp, depth, K, pose in frames:          # as frames arrive (worker thread)
        index.add(stamp, frame_voxels_from_depth(depth, K, world_from_camera=pose), stamp=stamp)
    result = index.select(16, keys=window_stamps)  # SamplingResult(indices, coverage, gains, ...)

One-shot use on a clip (model-head geometry, like the reference)::

    voxels = predict_frame_voxels(model, candidate_frames)   # one predict_geometry pass
    result = space_aware_sample(voxels, k=16)

See ``space_aware.py`` for what is exact and what is approximated relative to the reference,
``greedy.py`` for the selection and fill rules.
"""

from ros2_spatial_mllm.sampling.greedy import (
    MAX_CANDIDATES,
    SamplingResult,
    candidate_indices,
    greedy_max_coverage,
    pack_voxel_sets,
    uniform_sample,
)
from ros2_spatial_mllm.sampling.sources import (
    frame_voxels_from_depth,
    frame_voxels_from_prediction,
    predict_frame_voxels,
)
from ros2_spatial_mllm.sampling.space_aware import (
    BBOX_DIVISIONS,
    VoxelIndex,
    coarsening_factor,
    reference_space_aware_sample,
    reference_voxel_size,
    space_aware_sample,
)
from ros2_spatial_mllm.sampling.window import select_frames, window_slots
from ros2_spatial_mllm.sampling.voxels import FrameVoxels, coarsen_keys, pack_keys, sorted_unique, unpack_keys

__all__ = [
    "BBOX_DIVISIONS",
    "MAX_CANDIDATES",
    "FrameVoxels",
    "SamplingResult",
    "VoxelIndex",
    "candidate_indices",
    "coarsen_keys",
    "coarsening_factor",
    "frame_voxels_from_depth",
    "frame_voxels_from_prediction",
    "greedy_max_coverage",
    "pack_keys",
    "pack_voxel_sets",
    "predict_frame_voxels",
    "reference_space_aware_sample",
    "reference_voxel_size",
    "sorted_unique",
    "space_aware_sample",
    "select_frames",
    "uniform_sample",
    "unpack_keys",
    "window_slots",
]
