"""Geometry conventions: quaternions (XYZW), pose encoding absT_quaR_FoV, unprojection."""

import math

import numpy as np
import pytest
import torch

from ros2_spatial_mllm import geometry as g


def random_rotations(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[:, 3:] < 0, -q, q)


def test_quaternion_matrix_round_trip_torch_and_numpy():
    q = random_rotations(500)
    rot = g.quaternion_to_matrix(q)
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(500, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(g.matrix_to_quaternion(rot), q, atol=1e-10)
    q_np = q.numpy().astype(np.float32)
    rot_np = g.quaternion_to_matrix(q_np)
    assert isinstance(rot_np, np.ndarray) and rot_np.dtype == np.float32 and rot_np.shape == (500, 3, 3)
    np.testing.assert_allclose(g.matrix_to_quaternion(rot_np), q_np, atol=1e-5)


def test_quaternion_is_xyzw_scalar_last():
    half = math.pi / 4  # 90 degrees about +z
    rot = g.quaternion_to_matrix(np.array([0.0, 0.0, math.sin(half), math.cos(half)]))
    np.testing.assert_allclose(rot, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(g.matrix_to_quaternion(np.eye(3)), [0, 0, 0, 1], atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_matrix_to_quaternion_stable_at_180_degrees(axis):
    rot = -np.eye(3)
    rot[axis, axis] = 1.0  # 180 degrees about `axis`: trace = -1
    q = g.matrix_to_quaternion(rot)
    expected = np.zeros(4)
    expected[axis] = 1.0
    np.testing.assert_allclose(np.abs(q), expected, atol=1e-12)
    np.testing.assert_allclose(g.quaternion_to_matrix(q), rot, atol=1e-12)


def test_pose_encoding_round_trip():
    batch, frames, hw = 2, 5, (294, 518)
    rot = g.quaternion_to_matrix(random_rotations(batch * frames, seed=1)).reshape(batch, frames, 3, 3).float()
    trans = torch.randn(batch, frames, 3, 1)
    extrinsics = torch.cat([rot, trans], dim=-1)
    intrinsics = torch.zeros(batch, frames, 3, 3)
    intrinsics[..., 0, 0] = torch.rand(batch, frames) * 400 + 200
    intrinsics[..., 1, 1] = torch.rand(batch, frames) * 400 + 200
    intrinsics[..., 0, 2], intrinsics[..., 1, 2], intrinsics[..., 2, 2] = hw[1] / 2, hw[0] / 2, 1.0
    enc = g.extrinsics_intrinsics_to_pose_encoding(extrinsics, intrinsics, hw)
    assert enc.shape == (batch, frames, 9) and enc.dtype == torch.float32
    assert (enc[..., 6] >= 0).all()  # w >= 0
    ext2, intr2 = g.pose_encoding_to_extrinsics_intrinsics(enc, hw)
    assert ext2.shape == (batch, frames, 3, 4) and intr2.shape == (batch, frames, 3, 3)
    assert torch.allclose(ext2, extrinsics, atol=1e-5)
    assert torch.allclose(intr2, intrinsics, rtol=1e-5, atol=1e-3)


def test_pose_encoding_decodes_known_camera():
    # identity pose, 90 degree vertical FoV, 60 degree horizontal FoV
    enc = torch.tensor([[[1.0, 2.0, 3.0, 0, 0, 0, 1, math.pi / 2, math.pi / 3]]])
    ext, intr = g.pose_encoding_to_extrinsics_intrinsics(enc, (100, 200))
    assert torch.allclose(ext[0, 0], torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3]]))
    fx = 100 / math.tan(math.pi / 6)
    assert torch.allclose(intr[0, 0], torch.tensor([[fx, 0, 100], [0, 50, 50], [0, 0, 1]]), atol=1e-4)


def test_depth_to_world_points_hand_computed_pinhole():
    # 2x3 image, fx=2, fy=4, principal point (1, 0.5); camera 0 at origin, camera 1 at world
    # position c=(1, 2, 3) rotated 90 degrees about +y (camera z axis = world +x).
    depth = np.array([[[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]]] * 2)
    k = np.array([[2.0, 0, 1.0], [0, 4.0, 0.5], [0, 0, 1]])
    intrinsics = np.stack([k, k])
    rot_wc = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # world-from-camera rotation
    center = np.array([1.0, 2.0, 3.0])
    pose1 = np.concatenate([rot_wc, center[:, None]], axis=1)
    extrinsics = np.stack([np.eye(3, 4), g.camera_from_world(pose1)])
    pts = g.depth_to_world_points(depth, extrinsics, intrinsics)
    assert pts.shape == (2, 2, 3, 3) and pts.dtype == np.float32
    # camera 0, pixel (u=2, v=1), depth 4: x = (2-1)/2*4 = 2, y = (1-0.5)/4*4 = 0.5
    np.testing.assert_allclose(pts[0, 1, 2], [2.0, 0.5, 4.0], atol=1e-6)
    # camera 0, pixel (u=0, v=0), depth 2: x = -1, y = -0.25
    np.testing.assert_allclose(pts[0, 0, 0], [-1.0, -0.25, 2.0], atol=1e-6)
    # camera 1: camera point (2, 0.5, 4) -> world = R_wc @ p + c = (4, 0.5, -2) + c
    np.testing.assert_allclose(pts[1, 1, 2], [5.0, 2.5, 1.0], atol=1e-6)
    # [S, H, W, 1] depth and torch inputs give the same
    pts_t = g.depth_to_world_points(
        torch.from_numpy(depth[..., None]), torch.from_numpy(extrinsics), torch.from_numpy(intrinsics)
    )
    assert isinstance(pts_t, torch.Tensor)
    np.testing.assert_allclose(pts_t.numpy(), pts, atol=1e-6)


def reference_world_points_float64(depth, extrinsics, intrinsics):
    """Straightforward float64 unprojection: x_world = R^T (depth * K^-1 [u, v, 1] - t)."""
    frames, height, width = depth.shape
    vv, uu = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pixels = np.stack([uu, vv, np.ones_like(uu)], -1).astype(np.float64)  # [H, W, 3]
    rays = np.einsum("sij,hwj->shwi", np.linalg.inv(intrinsics), pixels)  # [S, H, W, 3]
    cam = rays * depth[..., None]
    rotation, translation = extrinsics[:, :3, :3], extrinsics[:, :3, 3]
    world = np.einsum("sji,shwj->shwi", rotation, cam - translation[:, None, None, :])
    return cam, world


@pytest.mark.parametrize("depth_dtype", [np.float32, np.float64, np.uint16])
def test_numpy_unprojection_matches_float64_reference(depth_dtype):
    """The float32 numpy path agrees with a float64 reference to float32 precision, keeps NaN
    depth as NaN points, accepts [S, H, W, 1], and agrees with the torch path."""
    rng = np.random.default_rng(4)
    frames, height, width = 3, 48, 64
    rot = g.quaternion_to_matrix(random_rotations(frames, seed=5)).numpy()
    extrinsics = np.concatenate([rot, rng.normal(scale=5.0, size=(frames, 3, 1))], axis=2)
    intrinsics = np.stack([[[fx, 0, 31.5 + fx / 50], [0, fx * 1.1, 23.5], [0, 0, 1]] for fx in (40.0, 55.0, 70.0)])
    depth = rng.uniform(0.2, 10.0, size=(frames, height, width))
    if depth_dtype == np.uint16:
        depth = (depth * 1000).astype(np.uint16)  # millimetres, as a sensor publishes
    else:
        depth = depth.astype(depth_dtype)
        depth[1, 5, 7] = np.nan
    cam_ref, world_ref = reference_world_points_float64(depth.astype(np.float64), extrinsics, intrinsics)
    scale = 1e4 if depth_dtype == np.uint16 else 1.0
    cam = g.depth_to_camera_points(depth, intrinsics)
    world = g.depth_to_world_points(depth[..., None], extrinsics, intrinsics)
    assert cam.dtype == world.dtype == np.float32 and world.shape == (frames, height, width, 3)
    np.testing.assert_allclose(cam, cam_ref, rtol=1e-6, atol=2e-6 * scale)
    np.testing.assert_allclose(world, world_ref, rtol=1e-6, atol=5e-6 * scale)  # |x| up to ~15 (x1000 for mm)
    assert np.isnan(world[1, 5, 7]).all() == (depth_dtype != np.uint16)
    world_torch = g.depth_to_world_points(
        torch.from_numpy(depth.astype(np.float64)), torch.from_numpy(extrinsics), torch.from_numpy(intrinsics)
    )
    np.testing.assert_allclose(world, world_torch.numpy(), rtol=1e-6, atol=5e-6 * scale)


def test_projection_inverts_unprojection():
    rot = g.quaternion_to_matrix(random_rotations(3, seed=2)).numpy()
    extrinsics = np.concatenate([rot, np.random.default_rng(0).normal(size=(3, 3, 1))], axis=2)
    k = np.array([[50.0, 0, 16], [0, 60.0, 12], [0, 0, 1]])
    intrinsics = np.stack([k] * 3)
    depth = np.random.default_rng(1).uniform(1, 5, size=(3, 24, 32))
    pts = g.depth_to_world_points(depth, extrinsics, intrinsics)
    pixels, z = g.project_world_points(pts[1].reshape(-1, 3).astype(np.float64), extrinsics, intrinsics)
    np.testing.assert_allclose(z[1], depth[1].reshape(-1), rtol=1e-5)
    vv, uu = np.meshgrid(np.arange(24), np.arange(32), indexing="ij")
    np.testing.assert_allclose(pixels[1], np.stack([uu, vv], -1).reshape(-1, 2), atol=1e-3)


def test_invert_extrinsics_and_first_camera_frame():
    rot = g.quaternion_to_matrix(random_rotations(4, seed=3))
    ext = torch.cat([rot, torch.randn(4, 3, 1, dtype=torch.float64)], dim=-1)
    inv = g.invert_extrinsics(ext)
    assert inv.shape == (4, 3, 4)
    eye = torch.eye(4, dtype=torch.float64).expand(4, 4, 4)
    assert torch.allclose(g.to_homogeneous(ext) @ g.to_homogeneous(inv), eye, atol=1e-12)
    assert torch.allclose(g.invert_extrinsics(g.to_homogeneous(ext)), g.to_homogeneous(inv), atol=1e-12)
    assert torch.allclose(g.world_from_camera(g.camera_from_world(ext)), ext, atol=1e-12)
    rel = g.relative_to_first_camera(ext)
    assert torch.allclose(rel[0], torch.eye(3, 4, dtype=torch.float64), atol=1e-12)
    # relative pose between cameras 1 and 2 is unchanged by the world change
    before = g.to_homogeneous(ext[2]) @ g.invert_extrinsics(g.to_homogeneous(ext[1]))
    after = g.to_homogeneous(rel[2]) @ g.invert_extrinsics(g.to_homogeneous(rel[1]))
    assert torch.allclose(before, after, atol=1e-12)


def test_interpolate_pose_linear_translation_slerp_rotation_shorter_arc():
    def pose(yaw_deg, x):
        out = np.eye(4)
        half = math.radians(yaw_deg) / 2
        out[:3, :3] = g.quaternion_to_matrix(np.array([0.0, 0.0, math.sin(half), math.cos(half)]))
        out[:3, 3] = (x, 2.0 * x, 0.0)
        return out

    a, b = pose(170.0, 0.0), pose(-170.0, 1.0)     # 20 degrees apart across +-180
    np.testing.assert_allclose(g.interpolate_pose(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(g.interpolate_pose(a, b, 1.0), b, atol=1e-12)
    np.testing.assert_allclose(g.interpolate_pose(a, b, 0.5), pose(180.0, 0.5), atol=1e-12)
    quarter = g.interpolate_pose(a, b, 0.25)
    assert math.isclose(math.degrees(math.atan2(quarter[1, 0], quarter[0, 0])), 175.0, abs_tol=1e-9)
    np.testing.assert_allclose(quarter[:3, 3], (0.25, 0.5, 0.0), atol=1e-12)


def _clip_prediction(translation_x: float, pair_pose=None) -> dict:
    """A two-camera predict_geometry output [1, S=2, ...]: camera 1 moved sideways by translation_x
    (camera-from-world t = -x for a pure translation), 90 degree fields of view."""
    ext = torch.zeros(1, 2, 3, 4)
    ext[..., :3, :3] = torch.eye(3)
    ext[0, 1, 0, 3] = -translation_x
    intr = torch.tensor([[[[4.0, 0, 4.0], [0, 3.0, 3.0], [0, 0, 1]]] * 2])  # w 8 h 6: fx 4 fy 3
    pred = {"pose_enc": g.extrinsics_intrinsics_to_pose_encoding(ext, intr, (6, 8)),
            "depth": torch.full((1, 2, 6, 8, 1), 2.5), "depth_conf": torch.ones(1, 2, 6, 8)}
    if pair_pose is not None:
        pred["pair_pose"] = torch.tensor([pair_pose])
    return pred


def test_frame_geometry_from_prediction_camera_head_and_pair_pose():
    out = g.frame_geometry_from_prediction(_clip_prediction(0.5), (6, 8))
    assert {k: v.shape for k, v in out.items()} == {"depth": (2, 6, 8), "depth_conf": (2, 6, 8),
                                                     "extrinsics": (2, 3, 4), "intrinsics": (2, 3, 3)}
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["extrinsics"][0], np.eye(4)[:3], atol=1e-6)       # world = first camera
    np.testing.assert_allclose(out["extrinsics"][1, 0, 3], -0.5, atol=1e-5)          # the camera head's motion
    np.testing.assert_allclose(out["intrinsics"][0], [[4, 0, 4], [0, 3, 3], [0, 0, 1]], atol=1e-4)
    # with a pair-pose head its chained motion (camera 1 at x = +2 in camera 0) replaces the head's
    out = g.frame_geometry_from_prediction(_clip_prediction(0.5, pair_pose=[[0, 0, 0, 2.0, 0, 0]]), (6, 8))
    np.testing.assert_allclose(out["extrinsics"][1, :, 3], [-2.0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(out["intrinsics"][1], [[4, 0, 4], [0, 3, 3], [0, 0, 1]], atol=1e-4)
    np.testing.assert_allclose(out["depth"], 2.5)
