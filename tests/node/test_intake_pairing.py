"""FrameIntake pairing by stamp, in process with real ROS messages (no node): any arrival order
across topics, TF poses interpolated and composed, late pairing through sensor_lookup."""
from __future__ import annotations

import logging
import math

import numpy as np

from ros2_spatial_mllm.buffer import FrameBuffer
from ros2_spatial_mllm.ros.intake import FrameIntake
from ros_util import image_msg
from test_node_tf import CAMERA, _depth_msg, _info_msg, _transform

S = 1_000_000_000
T0 = 1_700_000_000 * S
STAMPS = [T0 + i * S // 4 for i in range(16)]


def _odom(stamp_ns: int, x: float):
    from nav_msgs.msg import Odometry
    msg = Odometry()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, S)
    msg.pose.pose.position.x = x
    msg.pose.pose.orientation.w = 1.0
    return msg


def _intake(**kwargs) -> tuple[FrameIntake, FrameBuffer]:
    buffer = FrameBuffer(max_frames=64)
    intake = FrameIntake(buffer, logging.getLogger("test.intake"), sync_tolerance_s=0.01,
                         odom_child_is_optical=True, expect_depth=True, expect_info=True, **kwargs)
    intake.enabled = True
    return intake, buffer


def test_burst_in_any_topic_order_pairs_every_frame_by_stamp():
    intake, buffer = _intake(expect_pose=True, depth_wait_s=30.0)
    # the worst order a burst can produce: all images, then depth newest first, then odometry
    for i, stamp in enumerate(STAMPS):
        intake.on_image(image_msg(i, stamp))
    assert len(buffer) == 0 and intake.pending == 16  # nothing pushed half-paired
    intake.on_camera_info(_info_msg(STAMPS[0]))
    for stamp in reversed(STAMPS):
        intake.on_depth(_depth_msg(stamp))
    assert len(buffer) == 0   # still waiting for odometry
    for i, stamp in enumerate(STAMPS):
        intake.on_odometry(_odom(stamp, float(i)))
    frames = buffer.window()
    assert [f.stamp_ns for f in frames] == STAMPS
    for i, frame in enumerate(frames):
        assert frame.depth is not None and frame.intrinsics is not None
        assert frame.world_from_camera[0, 3] == float(i)  # its own pose, not a neighbour's
    assert intake.error_counts() == {}


def test_stream_past_the_frame_decides_and_queue_bound_pushes():
    intake, buffer = _intake(expect_pose=True, depth_wait_s=30.0, max_pending=3)
    intake.on_camera_info(_info_msg(STAMPS[0]))
    intake.on_image(image_msg(0, STAMPS[0]))
    intake.on_depth(_depth_msg(STAMPS[1]))      # depth for frame 0 never comes; stream moved on
    intake.on_odometry(_odom(STAMPS[0], 5.0))
    assert len(buffer) == 1 and buffer.latest().depth is None and buffer.latest().world_from_camera[0, 3] == 5.0
    for i in range(1, 6):   # no odometry any more: the bound pushes the oldest (frame 1 has depth)
        intake.on_image(image_msg(i, STAMPS[i]))
    assert len(buffer) == 3 and intake.pending == 3
    counts = intake.error_counts()
    assert counts["pair_overflow"] == 2 and counts["unpaired_depth"] == 2 and counts["unpaired_pose"] == 2


def test_tf_poses_interpolated_composed_and_late_paired():
    from tf2_msgs.msg import TFMessage
    intake, buffer = _intake(tf_world_frame="odom", depth_wait_s=30.0)
    intake.on_tf_static(TFMessage(transforms=[_transform("base_link", CAMERA, 0, (0, 0, 0.5), (0, 0, 0, 1))]))
    intake.on_camera_info(_info_msg(STAMPS[0]))
    intake.on_image(image_msg(0, STAMPS[0], frame_id=CAMERA))
    intake.on_depth(_depth_msg(STAMPS[0]))
    assert len(buffer) == 0  # no odom -> base_link yet
    yaw = math.radians(90)
    intake.on_tf(TFMessage(transforms=[_transform("odom", "base_link", STAMPS[0] - S // 10, (0, 0, 0), (0, 0, 0, 1))]))
    intake.on_tf(TFMessage(transforms=[_transform("odom", "base_link", STAMPS[0] + S // 10, (2, 0, 0),
                                                  (0, 0, math.sin(yaw / 2), math.cos(yaw / 2)))]))
    frame = buffer.latest()
    assert frame is not None
    c, s = math.cos(math.radians(45)), math.sin(math.radians(45))   # halfway: x = 1, yaw = 45 deg
    np.testing.assert_allclose(frame.world_from_camera[:3, 3], (1.0, 0.0, 0.5), atol=1e-9)
    np.testing.assert_allclose(frame.world_from_camera[:3, :3], [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-9)
    # late pairing: a frame that entered the buffer without its pose gets it from sensor_lookup
    late, late_buffer = _intake(tf_world_frame="odom", depth_wait_s=0.0)
    late.on_camera_info(_info_msg(STAMPS[0]))
    late.on_depth(_depth_msg(STAMPS[2]))
    late.on_image(image_msg(2, STAMPS[2], frame_id=CAMERA))
    late.flush_stale()
    pushed = late_buffer.latest()
    assert pushed.world_from_camera is None and late.sensor_lookup(pushed) is None
    late.on_tf_static(TFMessage(transforms=[_transform("odom", CAMERA, 0, (3, 0, 0), (0, 0, 0, 1))]))
    depth, k, pose = late.sensor_lookup(pushed)
    assert depth.shape == pushed.rgb.shape[:2] and k[0, 0] == 50.0 and pose[0, 3] == 3.0


def _odom_yaw(stamp_ns: int, x: float, yaw: float):
    msg = _odom(stamp_ns, x)
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return msg


def test_odometry_pose_interpolated_between_the_messages_around_the_frame():
    # tolerance 10 ms: odometry 20 ms apart is interpolated, 30 ms apart falls back to the nearest
    intake, buffer = _intake(expect_pose=True, depth_wait_s=30.0)
    intake.on_camera_info(_info_msg(STAMPS[0]))
    frame_at = STAMPS[0] + 5_000_000                 # a quarter of the way from the first to the second
    intake.on_image(image_msg(0, frame_at))
    intake.on_depth(_depth_msg(frame_at))
    intake.on_odometry(_odom_yaw(STAMPS[0], 0.0, 0.0))
    assert len(buffer) == 0                          # nothing at or after the frame yet: undecided
    intake.on_odometry(_odom_yaw(STAMPS[0] + 20_000_000, 4.0, math.radians(80)))
    pose = buffer.latest().world_from_camera
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    np.testing.assert_allclose(pose[:3, 3], (1.0, 0.0, 0.0), atol=1e-9)
    np.testing.assert_allclose(pose[:3, :3], [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-9)
    # sensor_lookup (late pairing) interpolates the same way
    np.testing.assert_allclose(intake.sensor_lookup(buffer.latest())[2], pose, atol=1e-12)

    sparse, sparse_buffer = _intake(expect_pose=True, depth_wait_s=30.0)
    sparse.on_camera_info(_info_msg(STAMPS[0]))
    sparse.on_image(image_msg(0, frame_at))
    sparse.on_depth(_depth_msg(frame_at))
    sparse.on_odometry(_odom_yaw(STAMPS[0], 0.0, 0.0))
    sparse.on_odometry(_odom_yaw(STAMPS[0] + 30_000_000, 4.0, math.radians(80)))
    held = sparse_buffer.latest().world_from_camera
    np.testing.assert_allclose(held, np.eye(4), atol=1e-12)  # nearest (5 ms), not a 30 ms blend
