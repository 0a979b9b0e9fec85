"""TransformTree (ros2_spatial_mllm/transforms.py): chains, interpolation, history, errors —
against transforms computed by hand."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from ros2_spatial_mllm.transforms import (ConnectivityError, ExtrapolationError, TransformTree,
                                          UnknownFrameError, slerp)

S = 1_000_000_000  # ns per second


def q_z(deg: float) -> tuple:
    """XYZW quaternion of a rotation by deg about +z."""
    h = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(h), math.cos(h))


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def T(rotation: np.ndarray, translation) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, translation
    return out


def test_chain_static_and_dynamic_matches_hand_computed():
    tree = TransformTree()
    # odom -> base_link: at t=1 s, base at (1, 2, 0) turned 90 deg left
    tree.add("odom", "base_link", 1 * S, (1, 2, 0), q_z(90))
    # base_link -> camera_link: static, 0.5 m ahead, 0.3 m up
    tree.add("base_link", "camera_link", 0, (0.5, 0, 0.3), (0, 0, 0, 1), static=True)
    # camera_link -> camera_optical: the usual body->optical rotation (x right, y down, z forward)
    optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]])  # columns: optical axes in body
    from ros2_spatial_mllm.geometry import matrix_to_quaternion
    tree.add("camera_link", "camera_optical", 0, (0, 0, 0), matrix_to_quaternion(optical), static=True)

    got = tree.lookup("odom", "camera_optical", 1 * S)
    expected = T(rot_z(90), (1, 2, 0)) @ T(np.eye(3), (0.5, 0, 0.3)) @ T(optical, (0, 0, 0))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # by hand: the camera sits at (1, 2.5, 0.3) and looks along odom +y
    np.testing.assert_allclose(got[:3, 3], (1.0, 2.5, 0.3), atol=1e-12)
    np.testing.assert_allclose(got[:3, 2], (0.0, 1.0, 0.0), atol=1e-12)
    # the inverse direction and a lookup between siblings through the common ancestor
    np.testing.assert_allclose(tree.lookup("camera_optical", "odom", 1 * S), np.linalg.inv(expected), atol=1e-12)
    tree.add("base_link", "lidar", 0, (0, 0, 1.0), (0, 0, 0, 1), static=True)
    lidar_from_cam = tree.lookup("lidar", "camera_optical", 1 * S)
    np.testing.assert_allclose(lidar_from_cam[:3, 3], (0.5, 0.0, -0.7), atol=1e-12)
    np.testing.assert_allclose(tree.lookup("odom", "odom", 5 * S), np.eye(4))


def test_interpolates_translation_linearly_and_rotation_by_slerp():
    tree = TransformTree()
    tree.add("map", "base", 0, (0, 0, 0), q_z(0))
    tree.add("map", "base", 2 * S, (2, -4, 6), q_z(90))
    got = tree.lookup("map", "base", S // 2)  # a quarter of the way
    np.testing.assert_allclose(got[:3, 3], (0.5, -1.0, 1.5), atol=1e-12)
    np.testing.assert_allclose(got[:3, :3], rot_z(22.5), atol=1e-12)
    # exact stamps return the stored values; None = newest
    np.testing.assert_allclose(tree.lookup("map", "base", 2 * S)[:3, :3], rot_z(90), atol=1e-12)
    np.testing.assert_allclose(tree.lookup("map", "base", None)[:3, 3], (2, -4, 6))
    # slerp takes the short way round (q and -q are the same rotation)
    from ros2_spatial_mllm.geometry import quaternion_to_matrix
    from ros2_spatial_mllm.transforms import rotation_matrix
    some_q = np.array([0.3, -0.5, 0.1, 0.8]) / np.linalg.norm([0.3, -0.5, 0.1, 0.8])
    np.testing.assert_allclose(rotation_matrix(some_q), quaternion_to_matrix(some_q), atol=1e-12)
    q = slerp(np.array(q_z(170)), -np.array(q_z(-170)), 0.5)
    np.testing.assert_allclose(abs(q[3]), 0.0, atol=1e-12)  # 180 deg, not 0 deg


def test_out_of_order_inserts_and_per_edge_interpolation_in_a_chain():
    tree = TransformTree()
    for stamp, x in [(3, 3.0), (1, 1.0), (2, 2.0)]:  # arrival order is not stamp order
        tree.add("odom", "base", stamp * S, (x, 0, 0), q_z(0))
    tree.add("base", "arm", 0, (0, 0, 0), q_z(0))
    tree.add("base", "arm", 2 * S, (0, 1, 0), q_z(0))
    got = tree.lookup("odom", "arm", int(1.5 * S))
    np.testing.assert_allclose(got[:3, 3], (1.5, 0.75, 0.0), atol=1e-12)


def test_errors_unknown_disconnected_and_extrapolation():
    tree = TransformTree()
    tree.add("odom", "base", 10 * S, (0, 0, 0), q_z(0))
    tree.add("odom", "base", 11 * S, (1, 0, 0), q_z(0))
    tree.add("other_root", "thing", 0, (0, 0, 0), q_z(0), static=True)
    with pytest.raises(UnknownFrameError, match="'nowhere'"):
        tree.lookup("odom", "nowhere", 10 * S)
    with pytest.raises(ConnectivityError, match="not connected"):
        tree.lookup("odom", "thing", 10 * S)
    with pytest.raises(ExtrapolationError, match="after the newest") as future:
        tree.lookup("odom", "base", 12 * S)
    assert future.value.direction == "future"
    with pytest.raises(ExtrapolationError, match="before the oldest") as past:
        tree.lookup("odom", "base", 9 * S)
    assert past.value.direction == "past"
    assert isinstance(past.value, LookupError)
    # within the tolerance the nearest end is used
    near = tree.lookup("odom", "base", 11 * S + 40_000_000, tolerance_ns=50_000_000)
    np.testing.assert_allclose(near[:3, 3], (1, 0, 0))
    assert not tree.can_transform("odom", "base", 12 * S)
    assert tree.can_transform("odom", "base", int(10.5 * S))


def test_bounded_history_and_cache_duration():
    tree = TransformTree(cache_duration_s=2.0, max_history=100)
    for i in range(50):
        tree.add("odom", "base", i * S // 4, (i, 0, 0), q_z(0))  # 0 .. 12.25 s
    # only the last 2 s are kept
    with pytest.raises(ExtrapolationError):
        tree.lookup("odom", "base", 10 * S)
    np.testing.assert_allclose(tree.lookup("odom", "base", 11 * S)[:3, 3], (44, 0, 0))
    assert tree.add("odom", "base", 1 * S, (0, 0, 0), q_z(0)) is False  # older than the cache
    assert tree.ignored_old == 1
    small = TransformTree(max_history=3)
    for i in range(10):
        small.add("a", "b", i * S, (i, 0, 0), q_z(0))
    assert not small.can_transform("a", "b", 6 * S) and small.can_transform("a", "b", 7 * S)


def test_bad_input_is_rejected_and_static_holds_at_any_time():
    tree = TransformTree()
    with pytest.raises(ValueError, match="loop"):
        tree.add("a", "b", 0, (0, 0, 0), q_z(0), static=True)
        tree.add("b", "a", 0, (0, 0, 0), q_z(0), static=True)
    with pytest.raises(ValueError):
        tree.add("a", "c", 0, (0, 0, float("nan")), q_z(0))
    with pytest.raises(ValueError):
        tree.add("a", "c", 0, (0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(ValueError):
        tree.add("a", "a", 0, (0, 0, 0), q_z(0))
    tree.add("/a", "d", 5 * S, (0, 0, 2), (0, 0, 0, 2.0), static=True)  # leading '/', unnormalised q
    np.testing.assert_allclose(tree.lookup("a", "d", 0)[:3, 3], (0, 0, 2))
    np.testing.assert_allclose(tree.lookup("a", "d", 10**6 * S)[:3, :3], np.eye(3))
    # re-parenting replaces the edge
    tree.add("b", "d", 0, (1, 0, 0), q_z(0), static=True)
    assert tree.parent_of("d") == "b"


def test_concurrent_writers_and_readers():
    tree = TransformTree(cache_duration_s=100.0)
    tree.add("odom", "base", 0, (0, 0, 0), q_z(0))
    errors: list = []

    def writer():
        for i in range(1, 400):
            tree.add("odom", "base", i * S // 100, (i / 100, 0, 0), q_z(0))

    def reader():
        for _ in range(200):
            try:
                m = tree.lookup("odom", "base", None)
                assert 0.0 <= m[0, 3] <= 4.0
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_allclose(tree.lookup("odom", "base", int(2.005 * S))[:3, 3], (2.005, 0, 0), atol=1e-9)
