"""Synthetic depth scans of a box-shaped room, with known answers (tests, benchmarks, demos).

World frame: x, y horizontal, z up, metres. Cameras are OpenCV (x right, y down, z forward),
looking horizontally with a yaw angle; depth is the z-distance to the first wall/floor/ceiling.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ["pinhole_intrinsics", "yaw_pose", "render_room_depth", "room_scan", "ellipse_walk"]


def pinhole_intrinsics(width: int, height: int, horizontal_fov_deg: float = 60.0) -> np.ndarray:
    """[3, 3] pinhole matrix with square pixels and the principal point at the image centre."""
    focal = (width / 2.0) / np.tan(np.radians(horizontal_fov_deg) / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def yaw_pose(position: Sequence[float], yaw_rad: float) -> np.ndarray:
    """world_from_camera [4, 4] of a level camera at ``position`` facing (cos yaw, sin yaw, 0)."""
    forward = np.array([np.cos(yaw_rad), np.sin(yaw_rad), 0.0])
    right = np.array([np.sin(yaw_rad), -np.cos(yaw_rad), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)  # columns = camera axes in the world
    pose[:3, 3] = position
    return pose


def render_room_depth(room_min: Sequence[float], room_max: Sequence[float], world_from_camera: np.ndarray,
                      intrinsics: np.ndarray, height: int, width: int) -> np.ndarray:
    """Depth [H, W] float32 seen from inside the axis-aligned box ``room_min``..``room_max``."""
    k = np.asarray(intrinsics, np.float64)
    u = (np.arange(width) - k[0, 2]) / k[0, 0]
    v = (np.arange(height) - k[1, 2]) / k[1, 1]
    rays_cam = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)  # [H,W,3]
    rays = rays_cam @ world_from_camera[:3, :3].T  # [H, W, 3] world directions with camera z = 1
    origin = world_from_camera[:3, 3]
    bound = np.where(rays > 0, np.asarray(room_max, np.float64), np.asarray(room_min, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(np.abs(rays) > 1e-12, (bound - origin) / rays, np.inf)  # [H, W, 3]
    return t.min(axis=-1).astype(np.float32)  # ray z-component is 1, so t is the depth


def room_scan(
    num_frames: int,
    height: int = 48,
    width: int = 64,
    yaws_rad: Sequence[float] | None = None,
    room_size: Tuple[float, float, float] = (5.0, 4.0, 2.5),
    room_origin: Tuple[float, float, float] = (0.37, 0.21, 0.13),
    position: Tuple[float, float, float] | None = None,
    horizontal_fov_deg: float = 60.0,
    positions: np.ndarray | None = None,
):
    """A camera turning inside a room (in place, or along ``positions``).

    Returns (depth [N, H, W] float32, intrinsics [3, 3], world_from_camera [N, 4, 4], yaws [N]).
    Default yaws: one full turn, evenly spaced; default position: room centre at 1.2 m above the
    floor; ``positions`` [N, 3] (world) moves the camera per frame instead. The room's corner
    ``room_origin`` is off any round grid so walls do not sit exactly on voxel boundaries (float
    noise would split them).
    """
    yaws = np.linspace(0, 2 * np.pi, num_frames, endpoint=False) if yaws_rad is None else np.asarray(yaws_rad)
    room_min = np.asarray(room_origin, np.float64)
    room_max = room_min + np.asarray(room_size, np.float64)
    if position is None:
        position = room_min + np.array([room_size[0] / 2, room_size[1] / 2, 1.2])
    k = pinhole_intrinsics(width, height, horizontal_fov_deg)
    centres = np.broadcast_to(position, (len(yaws), 3)) if positions is None else np.asarray(positions)
    poses = np.stack([yaw_pose(centre, yaw) for centre, yaw in zip(centres, yaws)])
    depth = np.stack([render_room_depth(room_min, room_max, pose, k, height, width) for pose in poses])
    return depth, k, poses, yaws


def ellipse_walk(num_frames: int, height: int, width: int, seed: int = 0):
    """A walkthrough of the default 5 x 4 x 2.5 m room: the camera circles an ellipse (1.5 x 1.1 m
    radii, bobbing 0.1 m) while turning 1.5 times, with 1 % depth noise (benchmarks).

    Returns depth [N, H, W] float32 m, intrinsics [3, 3], world_from_camera [N, 4, 4], and a
    synthetic confidence [N, H, W] float32 that falls with depth (as VGGT's depth_conf does)."""
    rng = np.random.default_rng(seed)
    phase = np.linspace(0, 2 * np.pi, num_frames, endpoint=False)
    origin = np.array([0.37, 0.21, 0.13])
    positions = origin + np.stack([2.5 + 1.5 * np.cos(phase), 2.0 + 1.1 * np.sin(phase),
                                   1.2 + 0.1 * np.sin(3 * phase)], axis=1)
    yaws = 1.5 * phase + 0.4 * np.sin(5 * phase)
    depth, k, poses, _ = room_scan(num_frames, height, width, yaws_rad=yaws, positions=positions)
    depth = depth * (1 + 0.01 * rng.standard_normal(depth.shape)).astype(np.float32)
    conf = (3.0 / (1.0 + depth) + 0.3 * rng.standard_normal(depth.shape)).astype(np.float32)
    return depth.astype(np.float32), k, poses, conf
