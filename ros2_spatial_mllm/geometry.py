"""Camera geometry shared by the whole project (pure numpy / torch, no ROS).

Conventions (VGGT's, used everywhere in this project):
- Extrinsics are OpenCV camera-from-world [R | t] (3x4): x_cam = R @ x_world + t, camera
  looking down +z, x right, y down. VGGT's world frame is its first camera.
- Intrinsics are pinhole [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]; pixel (u, v) = (column, row)
  index, so pixel u sees the ray through x/z = (u - cx) / fx.
- Quaternions are XYZW (scalar last), standardised to w >= 0 by matrix_to_quaternion.
- Pose encoding "absT_quaR_FoV" [..., 9] = (t [3], quaternion XYZW of R [4], fov_h, fov_w) with
  fov_h = 2 atan(H / (2 fy)), fov_w = 2 atan(W / (2 fx)); decoding puts the principal point at
  the image centre (W/2, H/2).

Functions accept numpy arrays or torch tensors where noted ("array") and return the same kind.
"""

from __future__ import annotations

from typing import Sequence, Tuple, TypeVar, Union

import numpy as np
import torch

from ros2_spatial_mllm.transforms import slerp

Array = TypeVar("Array", np.ndarray, torch.Tensor)
ImageHW = Union[Sequence[int], Tuple[int, int]]


def _to_torch(x: Union[np.ndarray, torch.Tensor]) -> Tuple[torch.Tensor, bool]:
    """-> (tensor, was_numpy); numpy input becomes float64 for accuracy."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, dtype=np.float64)), True
    return x, False


def _back(x: torch.Tensor, was_numpy: bool, like: Union[np.ndarray, torch.Tensor]):
    if was_numpy:
        dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64
        return x.numpy().astype(dtype, copy=False)
    return x


def quaternion_to_matrix(quaternion_xyzw: Array) -> Array:
    """quaternion_xyzw [..., 4] (need not be unit; it is normalised) -> rotation [..., 3, 3]. array."""
    q, was_numpy = _to_torch(quaternion_xyzw)
    x, y, z, w = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    matrix = torch.stack(
        (
            1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
            two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
            two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
        ),
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))
    return _back(matrix, was_numpy, quaternion_xyzw)


def matrix_to_quaternion(rotation: Array) -> Array:
    """rotation [..., 3, 3] -> unit quaternion XYZW [..., 4] with w >= 0. array.

    Picks, per matrix, the best-conditioned of the four closed-form solutions (largest of
    1+trace, 1+2*R_ii - trace), so it is stable near 180-degree rotations.
    """
    m, was_numpy = _to_torch(rotation)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * component^2 for (w, x, y, z)
    squares = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    # candidate quaternions (x, y, z, w), each scaled by 4 * (its pivot component)
    candidates = torch.stack(
        [
            torch.stack([m21 - m12, m02 - m20, m10 - m01, squares[..., 0]], dim=-1),  # pivot w
            torch.stack([squares[..., 1], m10 + m01, m02 + m20, m21 - m12], dim=-1),  # pivot x
            torch.stack([m10 + m01, squares[..., 2], m12 + m21, m02 - m20], dim=-1),  # pivot y
            torch.stack([m02 + m20, m12 + m21, squares[..., 3], m10 - m01], dim=-1),  # pivot z
        ],
        dim=-2,
    )  # [..., 4, 4]
    best = squares.argmax(dim=-1)  # [...]
    chosen = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    quat = chosen / chosen.norm(dim=-1, keepdim=True)
    quat = torch.where(quat[..., 3:4] < 0, -quat, quat)
    return _back(quat, was_numpy, rotation)


def pose_encoding_to_extrinsics_intrinsics(
    pose_encoding: torch.Tensor, image_hw: ImageHW
) -> Tuple[torch.Tensor, torch.Tensor]:
    """pose_encoding [..., 9] absT_quaR_FoV (e.g. [B, S, 9]), image_hw (H, W) of the model input
    -> (extrinsics [..., 3, 4] OpenCV camera-from-world, intrinsics [..., 3, 3]). torch."""
    height, width = float(image_hw[0]), float(image_hw[1])
    translation = pose_encoding[..., :3]
    rotation = quaternion_to_matrix(pose_encoding[..., 3:7])
    extrinsics = torch.cat([rotation, translation[..., None]], dim=-1)
    fy = (height / 2.0) / torch.tan(pose_encoding[..., 7] / 2.0)
    fx = (width / 2.0) / torch.tan(pose_encoding[..., 8] / 2.0)
    zeros = torch.zeros_like(fx)
    ones = torch.ones_like(fx)
    intrinsics = torch.stack(
        [fx, zeros, zeros + width / 2.0, zeros, fy, zeros + height / 2.0, zeros, zeros, ones], dim=-1
    ).reshape(pose_encoding.shape[:-1] + (3, 3))
    return extrinsics, intrinsics


def extrinsics_intrinsics_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: ImageHW
) -> torch.Tensor:
    """extrinsics [..., 3, 4] camera-from-world, intrinsics [..., 3, 3], image_hw (H, W)
    -> pose encoding [..., 9] absT_quaR_FoV (float32). torch. The principal point is not
    encoded (decoding assumes the image centre)."""
    height, width = float(image_hw[0]), float(image_hw[1])
    quat = matrix_to_quaternion(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((height / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2.0) / intrinsics[..., 0, 0])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1).float()


def invert_extrinsics(transform: Array) -> Array:
    """Rigid transform [..., 3, 4] or [..., 4, 4] -> its inverse, same shape. array.

    camera-from-world <-> world-from-camera: [R | t] -> [R^T | -R^T t].
    """
    t, was_numpy = _to_torch(transform)
    rotation_t = t[..., :3, :3].transpose(-1, -2)
    translation = -(rotation_t @ t[..., :3, 3:4])
    out = torch.cat([rotation_t, translation], dim=-1)
    if t.shape[-2] == 4:
        bottom = torch.zeros_like(t[..., 3:4, :])
        bottom[..., 3] = 1
        out = torch.cat([out, bottom], dim=-2)
    return _back(out, was_numpy, transform)


def world_from_camera(extrinsics: Array) -> Array:
    """camera-from-world [..., 3|4, 4] -> world-from-camera (camera pose in the world). array."""
    return invert_extrinsics(extrinsics)


def camera_from_world(pose: Array) -> Array:
    """world-from-camera (a camera pose, e.g. from odometry/TF) [..., 3|4, 4] -> extrinsics. array."""
    return invert_extrinsics(pose)


def to_homogeneous(transform: Array) -> Array:
    """[..., 3, 4] -> [..., 4, 4] (appends [0, 0, 0, 1]); 4x4 input is returned as is. array."""
    if transform.shape[-2] == 4:
        return transform
    t, was_numpy = _to_torch(transform)
    bottom = torch.zeros_like(t[..., :1, :])
    bottom[..., 3] = 1
    return _back(torch.cat([t, bottom], dim=-2), was_numpy, transform)


def relative_to_first_camera(extrinsics: Array) -> Array:
    """extrinsics [S, 3|4, 4] camera-from-world in any world -> same cameras with the world
    frame moved to camera 0 (VGGT's convention; camera 0 becomes identity). array."""
    full = to_homogeneous(extrinsics)
    first_inverse = invert_extrinsics(full[:1])
    if isinstance(full, np.ndarray):
        out = full @ first_inverse
    else:
        out = full @ first_inverse.to(full.dtype)
    return out[..., : extrinsics.shape[-2], :]


def depth_to_camera_points(depth: Array, intrinsics: Array) -> Array:
    """depth [S, H, W] or [S, H, W, 1], intrinsics [S, 3, 3] (zero skew) -> points [S, H, W, 3]
    in each camera frame (OpenCV). array: numpy in -> float32 out; torch in -> torch out.

    numpy path: the per-column / per-row ray factors (u - cx) / fx, (v - cy) / fy are formed in
    float64 (W + H values per frame), the per-pixel products in float32.
    """
    if isinstance(depth, np.ndarray):
        depth_np = np.asarray(depth, dtype=np.float32)
        if depth_np.ndim == 4:
            depth_np = depth_np[..., 0]
        k = np.asarray(intrinsics, dtype=np.float64)
        frames, height, width = depth_np.shape
        u = np.arange(width, dtype=np.float64)[None, None, :]
        v = np.arange(height, dtype=np.float64)[None, :, None]
        ray_x = ((u - k[:, 0, 2, None, None]) / k[:, 0, 0, None, None]).astype(np.float32)  # [S, 1, W]
        ray_y = ((v - k[:, 1, 2, None, None]) / k[:, 1, 1, None, None]).astype(np.float32)  # [S, H, 1]
        points = np.empty((frames, height, width, 3), dtype=np.float32)
        np.multiply(ray_x, depth_np, out=points[..., 0])
        np.multiply(ray_y, depth_np, out=points[..., 1])
        points[..., 2] = depth_np
        return points
    if depth.dim() == 4:
        depth = depth[..., 0]
    _, height, width = depth.shape
    k = intrinsics.to(depth.dtype)
    u = torch.arange(width, dtype=depth.dtype, device=depth.device)[None, None, :]
    v = torch.arange(height, dtype=depth.dtype, device=depth.device)[None, :, None]
    x = (u - k[:, 0, 2, None, None]) / k[:, 0, 0, None, None] * depth
    y = (v - k[:, 1, 2, None, None]) / k[:, 1, 1, None, None] * depth
    return torch.stack([x, y, depth], dim=-1)


def depth_to_world_points(depth: Array, extrinsics: Array, intrinsics: Array) -> Array:
    """depth [S, H, W] (or [S, H, W, 1]), extrinsics [S, 3, 4] camera-from-world, intrinsics
    [S, 3, 3] -> world points [S, H, W, 3]. array: numpy -> float32; torch -> torch.

    x_world = R^T (x_cam - t), x_cam = depth * ((u - cx)/fx, (v - cy)/fy, 1).
    """
    cam = depth_to_camera_points(depth, intrinsics)
    if isinstance(cam, np.ndarray):  # float32 matmul: x_world^T = x_cam^T R - (R^T t)^T
        e = np.asarray(extrinsics, dtype=np.float64)
        rotation, translation = e[:, :3, :3], e[:, :3, 3]
        offset = np.einsum("sji,sj->si", rotation, translation).astype(np.float32)  # R^T t [S, 3]
        frames, height, width, _ = cam.shape
        world = np.matmul(cam.reshape(frames, height * width, 3), rotation.astype(np.float32))  # [S, H*W, 3]
        world -= offset[:, None, :]
        return world.reshape(frames, height, width, 3)
    e = extrinsics.to(cam.dtype)
    rotation, translation = e[:, :3, :3], e[:, :3, 3]
    return torch.einsum("sji,shwj->shwi", rotation, cam - translation[:, None, None, :])


def project_world_points(points: Array, extrinsics: Array, intrinsics: Array) -> Tuple[Array, Array]:
    """points [N, 3] world, extrinsics [S, 3, 4], intrinsics [S, 3, 3] -> (pixels [S, N, 2]
    (u, v), depth [S, N] along each camera's z). Points behind a camera get depth <= 0. array."""
    p, was_numpy = _to_torch(points)
    e, _ = _to_torch(extrinsics)
    k, _ = _to_torch(intrinsics)
    e, k = e.to(p.dtype), k.to(p.dtype)
    cam = torch.einsum("sij,nj->sni", e[:, :3, :3], p) + e[:, None, :3, 3]  # [S, N, 3]
    z = cam[..., 2]
    safe_z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    u = k[:, None, 0, 0] * cam[..., 0] / safe_z + k[:, None, 0, 2]
    v = k[:, None, 1, 1] * cam[..., 1] / safe_z + k[:, None, 1, 2]
    pixels = torch.stack([u, v], dim=-1)
    return _back(pixels, was_numpy, points), _back(z, was_numpy, points)


def interpolate_pose(pose_a: np.ndarray, pose_b: np.ndarray, fraction: float) -> np.ndarray:
    """Rigid [4, 4] poses a, b -> the pose `fraction` of the way from a to b (0: a, 1: b),
    translation linear and rotation by slerp along the shorter arc, as tf2 interpolates. numpy."""
    quaternions = matrix_to_quaternion(np.stack([pose_a[:3, :3], pose_b[:3, :3]]).astype(np.float64))  # [2, 4]
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(slerp(quaternions[0], quaternions[1], float(fraction)))
    out[:3, 3] = pose_a[:3, 3] + fraction * (pose_b[:3, 3] - pose_a[:3, 3])
    return out


def rotation_vector_to_matrix(rotation_vector: Array) -> Array:
    """Axis-angle [..., 3] (axis times angle in radians) -> rotation [..., 3, 3]. array;
    differentiable, exact at angle 0."""
    rv, was_numpy = _to_torch(rotation_vector)
    angle = rv.norm(dim=-1, keepdim=True)                                       # [..., 1]
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    scale = torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(safe / 2) / safe)  # sin(a/2)/a
    quaternion = torch.cat([rv * scale, torch.cos(angle / 2)], dim=-1)          # XYZW, unit
    return _back(quaternion_to_matrix(quaternion), was_numpy, rotation_vector)


def matrix_to_rotation_vector(rotation: Array) -> Array:
    """rotation [..., 3, 3] -> axis-angle [..., 3], angle in [0, pi]. array."""
    q, was_numpy = _to_torch(matrix_to_quaternion(rotation))
    sin_half = q[..., :3].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., 3:])
    safe = torch.where(sin_half < 1e-12, torch.ones_like(sin_half), sin_half)
    scale = torch.where(sin_half < 1e-12, torch.full_like(angle, 2.0), angle / safe)
    return _back(q[..., :3] * scale, was_numpy, rotation)


def pair_poses_to_extrinsics(pair_pose: Array) -> Array:
    """Chained relative poses [..., S-1, 6] (rotation vector, translation of camera k+1 in camera
    k, as `PairPoseHead` predicts) -> extrinsics [..., S, 3, 4] camera-from-world with the world
    at camera 0 (VGGT's convention; camera 0 is the identity). array."""
    rel, was_numpy = _to_torch(pair_pose)
    batch = rel.shape[:-2]
    step = torch.zeros(batch + (rel.shape[-2], 4, 4), dtype=rel.dtype, device=rel.device)  # cam_k_from_cam_k+1
    step[..., :3, :3] = rotation_vector_to_matrix(rel[..., :3])
    step[..., :3, 3] = rel[..., 3:]
    step[..., 3, 3] = 1
    pose = torch.eye(4, dtype=rel.dtype, device=rel.device).expand(batch + (4, 4))
    poses = [pose]                                                              # cam_0_from_cam_k
    for k in range(rel.shape[-2]):
        pose = pose @ step[..., k, :, :]
        poses.append(pose)
    extrinsics = invert_extrinsics(torch.stack(poses, dim=-3))[..., :3, :]
    return _back(extrinsics, was_numpy, pair_pose)


def frame_geometry_from_prediction(pred: dict, image_hw: ImageHW) -> dict:
    """The spatial encoder's predict_geometry output for one clip (batch 1: depth [1, S, h, w, 1],
    depth_conf [1, S, h, w], pose_enc [1, S, 9], optional pair_pose [1, S-1, 6]) -> numpy float32
    dict: depth [S, h, w], depth_conf [S, h, w], extrinsics [S, 3, 4] camera-from-world with the
    first camera as world, intrinsics [S, 3, 3] in pixels of image_hw = (h, w). With a pair-pose
    head the extrinsics chain its consecutive-frame poses; the camera head gives the intrinsics."""
    extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(pred["pose_enc"].float(), image_hw)
    extrinsics = relative_to_first_camera(extrinsics[0])
    if "pair_pose" in pred:  # [S-1, 6] consecutive relative poses -> [S, 3, 4], camera 0 = identity
        extrinsics = pair_poses_to_extrinsics(pred["pair_pose"][0].double()).float()

    def numpy32(x: torch.Tensor) -> np.ndarray:
        return x.float().cpu().numpy().astype(np.float32)

    return dict(depth=numpy32(pred["depth"][0, ..., 0]), depth_conf=numpy32(pred["depth_conf"][0]),
                extrinsics=numpy32(extrinsics), intrinsics=numpy32(intrinsics[0]))


__all__ = [
    "interpolate_pose",
    "camera_from_world",
    "depth_to_camera_points",
    "depth_to_world_points",
    "extrinsics_intrinsics_to_pose_encoding",
    "frame_geometry_from_prediction",
    "invert_extrinsics",
    "matrix_to_quaternion",
    "matrix_to_rotation_vector",
    "pair_poses_to_extrinsics",
    "pose_encoding_to_extrinsics_intrinsics",
    "project_world_points",
    "quaternion_to_matrix",
    "relative_to_first_camera",
    "rotation_vector_to_matrix",
    "to_homogeneous",
    "world_from_camera",
]
