"""Geometry sources for space-aware sampling: sensor depth + poses, or the spatial encoder's heads.

(b) sensor: ``frame_voxels_from_depth`` - one depth image (metres, or raw units times
    ``depth_scale``) + pinhole intrinsics + the camera pose (``world_from_camera`` 4x4, e.g. from
    odometry/TF, or ``camera_from_world`` 3x4/4x4 OpenCV extrinsics). Every valid depth pixel is a
    point (no confidence percentile unless ``conf`` is given): metric and consistent across frames,
    so each frame is voxelised once when it arrives.
(a) model heads: ``frame_voxels_from_prediction`` - the dict of ``SpatialMLLM.predict_geometry``
    (depth [N,h,w], depth_conf [N,h,w], extrinsics [N,3,4] camera-from-world with world = first
    frame, intrinsics [N,3,3]). One batch shares one world frame and scale, so the reference's
    *global* confidence percentile is applied exactly over the batch, and ``base_voxel`` defaults to
    the batch's reference voxel / 8 (the query voxel is then exactly the reference size).
    ``predict_frame_voxels(model, frames)`` runs the model then converts.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional

import numpy as np

from ros2_spatial_mllm.sampling.space_aware import BBOX_DIVISIONS, reference_voxel_size
from ros2_spatial_mllm.sampling.voxels import FrameVoxels

__all__ = ["frame_voxels_from_depth", "frame_voxels_from_prediction", "predict_frame_voxels",
           "MODEL_BASE_SUBDIVISION", "CONFIDENCE_RULES", "add_confidence_option"]

MODEL_BASE_SUBDIVISION = 8  # base voxel = reference voxel / 8 for model-head batches
CONFIDENCE_RULES = ("frame", "batch")  # which model-depth points count; "batch" = global_percentile=True


def add_confidence_option(parser: Any) -> None:
    """The `--confidence frame|batch` option every program that voxelises model depth shares
    (the CLI, spatial-mllm-eval, training.sampling_coverage); read it as
    ``global_percentile=args.confidence == "batch"``."""
    parser.add_argument("--confidence", default="frame", choices=CONFIDENCE_RULES,
                        help="space-aware sampling on the model's depth: keep each frame's points above its "
                             "own median depth confidence (frame, default: what the node's geometry worker "
                             "does) or above the median over all candidates (batch: the reference's offline rule)")


def _camera_from_world(world_from_camera, camera_from_world) -> np.ndarray:
    """Exactly one pose argument -> camera-from-world [3, 4] float64."""
    from ros2_spatial_mllm.geometry import invert_extrinsics  # lazy: geometry imports torch

    if (world_from_camera is None) == (camera_from_world is None):
        raise ValueError("pass exactly one of world_from_camera (4x4) or camera_from_world (3x4/4x4)")
    if world_from_camera is not None:
        pose = np.asarray(world_from_camera, np.float64)
        if pose.shape not in ((4, 4), (3, 4)):
            raise ValueError(f"world_from_camera must be 4x4 or 3x4, got {pose.shape}")
        extrinsics = invert_extrinsics(pose)
    else:
        extrinsics = np.asarray(camera_from_world, np.float64)
        if extrinsics.shape not in ((4, 4), (3, 4)):
            raise ValueError(f"camera_from_world must be 3x4 or 4x4, got {extrinsics.shape}")
    return np.asarray(extrinsics, np.float64)[:3, :4]


def frame_voxels_from_depth(
    depth: np.ndarray,
    intrinsics: np.ndarray,
    world_from_camera: Optional[np.ndarray] = None,
    camera_from_world: Optional[np.ndarray] = None,
    conf: Optional[np.ndarray] = None,
    base_voxel: float = 0.02,
    depth_scale: float = 1.0,
    min_depth: float = 0.0,
    max_depth: float = float("inf"),
    pixel_stride: int = 1,
) -> FrameVoxels:
    """Voxelise one sensor depth frame.

    Args:
        depth: [H, W] depth along the optical axis (``depth * depth_scale`` in metres; e.g. 0.001
            for uint16 millimetres). 0, NaN, inf and values outside (min_depth, max_depth] are invalid.
        intrinsics: [3, 3] pinhole matrix of the depth image.
        world_from_camera / camera_from_world: the pose (exactly one).
        conf: optional [H, W] confidence (then the conf > 0.1 and own 50th percentile rules apply).
        base_voxel: base grid side in metres; pixel_stride: subsample pixels for speed.
    """
    from ros2_spatial_mllm.geometry import depth_to_world_points

    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    k = np.asarray(intrinsics, np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"intrinsics must be 3x3, got {k.shape}")
    extrinsics = _camera_from_world(world_from_camera, camera_from_world)
    if pixel_stride > 1:  # subsample before unprojecting; pixel (u, v) -> (u / s, v / s)
        depth = depth[::pixel_stride, ::pixel_stride]
        conf = None if conf is None else np.asarray(conf)[::pixel_stride, ::pixel_stride]
        k = k.copy()
        k[:2] /= pixel_stride
    metres = depth.astype(np.float32) * np.float32(depth_scale)
    valid = np.isfinite(metres) & (metres > max(min_depth, 0.0)) & (metres <= max_depth)
    metres = np.where(valid, metres, np.nan).astype(np.float32)
    points = depth_to_world_points(metres[None], extrinsics[None], k[None])[0]  # [H, W, 3]
    return FrameVoxels.from_points(points, conf, base_voxel=base_voxel,
                                   conf_percentile=50.0 if conf is not None else None)


def frame_voxels_from_prediction(
    prediction: Mapping[str, Any],
    base_voxel: Optional[float] = None,
    conf_percentile: float = 50.0,
    min_conf: float = 0.1,
    global_percentile: bool = True,
    pixel_stride: int = 1,
) -> List[FrameVoxels]:
    """``SpatialMLLM.predict_geometry`` output -> one FrameVoxels per frame (same order).

    Args:
        prediction: dict with depth [N,h,w] (or [N,h,w,1]), depth_conf [N,h,w], extrinsics
            [N,3,4] camera-from-world, intrinsics [N,3,3] (numpy or torch).
        base_voxel: base grid side; None -> this batch's reference voxel / 8.
        global_percentile: True -> conf threshold = percentile over the whole batch (reference
            rule); False -> each frame's own percentile (what a streaming caller can do).
    """
    from ros2_spatial_mllm.geometry import depth_to_world_points

    def as_numpy(name: str) -> np.ndarray:
        if name not in prediction:
            raise KeyError(f"predict_geometry output lacks {name!r}")
        value = prediction[name]
        if hasattr(value, "detach"):
            value = value.detach().float().cpu().numpy()
        return np.asarray(value, dtype=np.float32)

    depth, conf = as_numpy("depth"), as_numpy("depth_conf")
    extrinsics, intrinsics = as_numpy("extrinsics"), as_numpy("intrinsics")
    if depth.ndim == 4:
        depth = depth[..., 0]
    if pixel_stride > 1:
        depth, conf = depth[:, ::pixel_stride, ::pixel_stride], conf[:, ::pixel_stride, ::pixel_stride]
        intrinsics = intrinsics.copy()
        intrinsics[:, :2] /= pixel_stride
    points = depth_to_world_points(depth, extrinsics[:, :3, :4], intrinsics)  # [N, h, w, 3]
    threshold = float(np.percentile(conf, conf_percentile)) if global_percentile and conf.size else None
    if base_voxel is None:
        keep = np.isfinite(points).all(axis=-1) & (conf > min_conf)
        if threshold is not None:
            keep &= conf >= threshold
        kept = points[keep]
        size = reference_voxel_size(kept.min(axis=0), kept.max(axis=0), BBOX_DIVISIONS) if kept.size else None
        base_voxel = size / MODEL_BASE_SUBDIVISION if size else 0.01
    return [
        FrameVoxels.from_points(points[i], conf[i], base_voxel=base_voxel, min_conf=min_conf,
                                conf_percentile=None if threshold is not None else conf_percentile,
                                conf_threshold=threshold)
        for i in range(points.shape[0])
    ]


def predict_frame_voxels(model: Any, frames: np.ndarray, **kwargs: Any) -> List[FrameVoxels]:
    """Run ``model.predict_geometry(frames [N,H,W,3] uint8)`` and build FrameVoxels per frame.

    ``model`` is a ``ros2_spatial_mllm.inference.SpatialMLLM`` (or anything with that method);
    kwargs go to ``frame_voxels_from_prediction``.
    """
    return frame_voxels_from_prediction(model.predict_geometry(np.asarray(frames)), **kwargs)
