"""Visibility builders (ros2_spatial_mllm/viz) with the real ROS message classes: chosen frames keep
their source stamps/frame ids; voxel coverage and trajectory markers / point cloud carry the right
number of points, in the right frame, and survive CDR serialisation (what a publisher does)."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from ros2_spatial_mllm.buffer import Frame
from ros2_spatial_mllm.image_codec import decode_compressed, decode_image
from ros2_spatial_mllm.sampling import FrameVoxels
from ros2_spatial_mllm.viz import (chosen_frame_messages, coverage_markers, ns_to_stamp, points_to_pointcloud2,
                                   trajectory_markers, voxel_centers, voxel_cloud)

T0 = 1_760_000_123 * 10**9 + 456_789_000


def _roundtrip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def test_chosen_frames_keep_their_stamps_and_frame_ids():
    rng = np.random.default_rng(0)
    frames = [Frame(T0 + i * 33_333_333, f"cam{i % 2}", rng.integers(0, 256, (48, 64, 3), np.uint8)) for i in range(3)]
    frames[1] = Frame(frames[1].stamp_ns, "cam1", frames[1].rgb[:, ::-1])          # strided view, as from bgr8
    raw = [_roundtrip(m) for m in chosen_frame_messages(frames)]
    assert all(isinstance(m, Image) for m in raw)
    for frame, msg in zip(frames, raw):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == frame.stamp_ns
        assert msg.header.frame_id == frame.frame_id and msg.encoding == "rgb8"
        np.testing.assert_array_equal(decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data), frame.rgb)
    small = [_roundtrip(m) for m in chosen_frame_messages(frames, compressed=True, max_side=32)]
    assert all(isinstance(m, CompressedImage) and "jpeg" in m.format for m in small)
    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in small] == \
        [(s.sec, s.nanosec) for s in (ns_to_stamp(f.stamp_ns) for f in frames)]
    assert decode_compressed(small[0].format, small[0].data).shape == (24, 32, 3)
    assert ns_to_stamp(-1).sec == -1 and ns_to_stamp(-1).nanosec == 999_999_999


def _voxels(points) -> FrameVoxels:
    return FrameVoxels.from_points(np.asarray(points, np.float64), None, base_voxel=0.1, conf_percentile=None)


@pytest.fixture
def voxel_sets():
    # frame 0 sees 3 voxels, frame 1 two (one shared), frame 2 none (no geometry yet)
    return [_voxels([[0.05, 0.05, 0.05], [0.15, 0.05, 0.05], [0.05, 0.25, 0.05], [0.06, 0.06, 0.06]]),
            _voxels([[0.15, 0.05, 0.05], [1.05, 1.05, 1.05]]), None]


def test_voxel_centres_and_coverage_markers(voxel_sets):
    centres, side = voxel_centers(voxel_sets)
    assert side == pytest.approx(0.1) and centres.shape == (4, 3)
    assert {tuple(np.round(c, 3)) for c in centres} == {(0.05, 0.05, 0.05), (0.15, 0.05, 0.05), (0.05, 0.25, 0.05),
                                                        (1.05, 1.05, 1.05)}
    array = _roundtrip(coverage_markers(voxel_sets, [1], "odom", T0))
    assert isinstance(array, MarkerArray) and len(array.markers) == 3
    clear, observed, covered = array.markers
    assert clear.action == Marker.DELETEALL
    assert observed.type == covered.type == Marker.CUBE_LIST
    assert len(observed.points) == 4 and len(covered.points) == 2
    assert observed.scale.x == pytest.approx(0.1) and observed.header.frame_id == "odom"
    assert observed.header.stamp.sec * 10**9 + observed.header.stamp.nanosec == T0
    assert observed.id != covered.id and covered.color.g > covered.color.r
    coarse = coverage_markers(voxel_sets, [0, 1], "odom", T0, factor=4).markers[1]
    assert coarse.scale.x == pytest.approx(0.4) and len(coarse.points) == 2


def test_voxel_point_cloud(voxel_sets):
    cloud = _roundtrip(voxel_cloud(voxel_sets, [1], "map", T0))
    assert isinstance(cloud, PointCloud2) and cloud.width == 4 and cloud.height == 1
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"] and cloud.point_step == 16
    assert len(cloud.data) == cloud.row_step == 16 * 4 and cloud.header.frame_id == "map"
    data = np.frombuffer(bytes(cloud.data), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    green = {(round(float(p["x"]), 2), round(float(p["y"]), 2)) for p in data if p["rgb"] == (30 << 16 | 200 << 8 | 50)}
    assert green == {(0.15, 0.05), (1.05, 1.05)}
    plain = points_to_pointcloud2(np.zeros((0, 3)), "map", T0)
    assert plain.width == 0 and len(plain.fields) == 3
    with pytest.raises(ValueError, match="colours"):
        points_to_pointcloud2(np.zeros((2, 3)), "map", T0, np.zeros((3, 3), np.uint8))


def test_trajectory_markers():
    n = 5
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n) * 0.5                  # moving along +x, looking along +z
    poses[3, :, :] = np.nan                              # a frame without a pose
    array = _roundtrip(trajectory_markers(poses, [0, 3, 4], "odom", T0, arrow_length=0.3))
    path, arrows = array.markers[1], array.markers[2:]
    assert array.markers[0].action == Marker.DELETEALL
    assert path.type == Marker.LINE_STRIP and len(path.points) == 4
    assert [a.type for a in arrows] == [Marker.ARROW, Marker.ARROW]          # NaN pose skipped
    tail, tip = arrows[1].points
    assert (tail.x, tail.z, tip.x, tip.z) == pytest.approx((2.0, 0.0, 2.0, 0.3))
    assert len({a.id for a in arrows}) == 2
    with pytest.raises(ValueError, match="poses"):
        trajectory_markers(np.zeros((3, 3)), [], "odom", T0)
