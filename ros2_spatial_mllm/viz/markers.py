"""Voxel coverage and camera trajectory as RViz/Foxglove-friendly messages.

Inputs are the sampling package's per-frame ``FrameVoxels`` (packed int64 keys on a base grid of
``base_voxel`` metres; see sampling/voxels.py) and camera poses ``world_from_camera`` [N, 4, 4]
(OpenCV camera axes: z forward). All outputs are in ``frame_id`` (the world frame the geometry
lives in: the odometry frame for sensor geometry, the first keyframe's camera for model geometry).

coverage_markers -> MarkerArray: [DELETEALL, CUBE_LIST "observed" (grey, translucent) = union of the
    window's voxels, CUBE_LIST "covered" (green) = voxels seen by the chosen frames]
voxel_cloud / points_to_pointcloud2 -> PointCloud2 with float32 x, y, z and float32-packed rgb
    (the PCL/RViz convention), little-endian, dense, one point per voxel centre
trajectory_markers -> MarkerArray: [DELETEALL, LINE_STRIP "trajectory" through all camera centres,
    ARROW "chosen" per chosen camera (from its centre along its optical axis)]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from ros2_spatial_mllm.viz.frames import ns_to_stamp

__all__ = ["voxel_centers", "coverage_markers", "voxel_cloud", "points_to_pointcloud2", "trajectory_markers",
           "MAX_MARKER_POINTS"]

MAX_MARKER_POINTS = 200_000   # more voxels than this are subsampled (evenly) for the markers


def voxel_centers(voxel_sets: Sequence, factor: int = 1) -> tuple[np.ndarray, float]:
    """Union of the voxel sets -> (centres [M, 3] float64 sorted by key, voxel side in metres).

    ``factor`` coarsens the base grid (voxel side = factor * base_voxel). None entries are skipped.
    """
    from ros2_spatial_mllm.sampling.voxels import sorted_unique, unpack_keys

    sets = [v for v in voxel_sets if v is not None and len(v.keys)]
    if not sets:
        return np.zeros((0, 3)), 0.0
    base = float(sets[0].base_voxel)
    if any(abs(float(v.base_voxel) - base) > 1e-12 for v in sets):
        raise ValueError("voxel sets use different base grids")
    keys = sorted_unique(np.concatenate([v.keys_at(factor) for v in sets]))
    side = base * factor
    return (unpack_keys(keys).astype(np.float64) + 0.5) * side, side


def _subsample(points: np.ndarray, limit: int) -> np.ndarray:
    if len(points) <= limit:
        return points
    return points[np.linspace(0, len(points) - 1, limit).round().astype(int)]


def _marker(kind: int, ns: str, marker_id: int, frame_id: str, stamp_ns: int, rgba) -> Marker:
    marker = Marker(type=kind, ns=ns, id=marker_id, action=Marker.ADD)
    marker.header.frame_id, marker.header.stamp = frame_id, ns_to_stamp(stamp_ns)
    marker.pose.orientation.w = 1.0
    marker.color = ColorRGBA(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))
    return marker


def _delete_all(frame_id: str, stamp_ns: int, ns: str) -> Marker:
    marker = Marker(action=Marker.DELETEALL, ns=ns)
    marker.header.frame_id, marker.header.stamp = frame_id, ns_to_stamp(stamp_ns)
    return marker


def _points(xyz: np.ndarray) -> list[Point]:
    return [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in xyz]


def coverage_markers(voxel_sets: Sequence, chosen: Sequence[int], frame_id: str, stamp_ns: int,
                     factor: int = 1, ns: str = "coverage") -> MarkerArray:
    """Observed voxels of the window (grey) and those the chosen frames cover (green)."""
    observed, side = voxel_centers(voxel_sets, factor)
    covered, _ = voxel_centers([voxel_sets[i] for i in chosen], factor) if len(chosen) else (np.zeros((0, 3)), side)
    array = MarkerArray(markers=[_delete_all(frame_id, stamp_ns, ns)])
    for marker_id, (name, xyz, rgba) in enumerate((("observed", observed, (0.6, 0.6, 0.6, 0.25)),
                                                   ("covered", covered, (0.1, 0.8, 0.2, 0.9)))):
        marker = _marker(Marker.CUBE_LIST, f"{ns}/{name}", marker_id, frame_id, stamp_ns, rgba)
        marker.scale.x = marker.scale.y = marker.scale.z = float(side) if side else 0.05
        marker.points = _points(_subsample(xyz, MAX_MARKER_POINTS))
        array.markers.append(marker)
    return array


def points_to_pointcloud2(points: np.ndarray, frame_id: str, stamp_ns: int,
                          colors: np.ndarray | None = None) -> PointCloud2:
    """points [N, 3] (+ colors [N, 3] uint8 RGB) -> PointCloud2 (x, y, z float32 [, rgb float32])."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors, np.uint8).reshape(-1, 3)
        if len(colors) != len(points):
            raise ValueError(f"{len(colors)} colours for {len(points)} points")
        fields.append(PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1))
        dtype.append(("rgb", "<u4"))
    cloud = np.zeros(len(points), dtype=dtype)
    cloud["x"], cloud["y"], cloud["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colors is not None:
        c = colors.astype(np.uint32)
        cloud["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    msg = PointCloud2(height=1, width=len(points), fields=fields, is_bigendian=False,
                      point_step=cloud.dtype.itemsize, row_step=cloud.dtype.itemsize * len(points), is_dense=True)
    msg.data = cloud.tobytes()
    msg.header.frame_id, msg.header.stamp = frame_id, ns_to_stamp(stamp_ns)
    return msg


def voxel_cloud(voxel_sets: Sequence, chosen: Sequence[int], frame_id: str, stamp_ns: int,
                factor: int = 1) -> PointCloud2:
    """Observed voxel centres as a cloud: green where a chosen frame sees them, grey elsewhere."""
    observed, _ = voxel_centers(voxel_sets, factor)
    covered, _ = voxel_centers([voxel_sets[i] for i in chosen], factor) if len(chosen) else (np.zeros((0, 3)), 0)
    colors = np.full((len(observed), 3), 150, np.uint8)
    if len(covered):
        view = np.ascontiguousarray(observed).view([("", observed.dtype)] * 3).ravel()
        hit = np.isin(view, np.ascontiguousarray(covered).view([("", covered.dtype)] * 3).ravel())
        colors[hit] = (30, 200, 50)
    return points_to_pointcloud2(observed, frame_id, stamp_ns, colors)


def trajectory_markers(world_from_camera: np.ndarray, chosen: Sequence[int], frame_id: str, stamp_ns: int,
                       arrow_length: float = 0.3, ns: str = "trajectory") -> MarkerArray:
    """Camera path (LINE_STRIP through the N centres) and an ARROW per chosen camera.

    world_from_camera: [N, 4, 4] (or [N, 3, 4]) poses, time order; entries with NaN are skipped.
    """
    poses = np.asarray(world_from_camera, np.float64)
    if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"expected poses [N, 4, 4], got {poses.shape}")
    valid = np.isfinite(poses.reshape(len(poses), -1)).all(axis=1)
    centres = poses[:, :3, 3]
    array = MarkerArray(markers=[_delete_all(frame_id, stamp_ns, ns)])
    path = _marker(Marker.LINE_STRIP, f"{ns}/path", 0, frame_id, stamp_ns, (0.2, 0.4, 1.0, 1.0))
    path.scale.x = 0.02
    path.points = _points(centres[valid])
    array.markers.append(path)
    for i in chosen:
        if not valid[i]:
            continue
        arrow = _marker(Marker.ARROW, f"{ns}/chosen", int(i) + 1, frame_id, stamp_ns, (1.0, 0.5, 0.0, 1.0))
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.03, 0.06, 0.08   # shaft d, head d, head length
        tip = centres[i] + arrow_length * poses[i, :3, 2]                 # optical axis (z) in world
        arrow.points = _points(np.stack([centres[i], tip]))
        array.markers.append(arrow)
    return array
