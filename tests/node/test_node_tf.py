"""TF as the pose source: the node (tf_world_frame=odom) subscribes to /tf + /tf_static
(tf2_msgs; the stand-in built by scripts/build_interfaces.sh on dev machines), and each colour
frame's world_from_camera = lookup(odom, <image frame_id>, stamp), interpolated between TF stamps.
With geometry_source=sensor and no odometry topic, sensor geometry for every frame proves that the
TF poses were used."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ros2_spatial_mllm.query_engine import ErrorCode
from ros2_spatial_mllm.ros.params import NodeConfig
from ros_util import (FRAME_H, FRAME_W, DiagnosticsWatcher, ask, image_msg, lifecycle_state,
                      wait_until)

T0_NS = 1_750_000_000 * 10**9
STEP_NS = 250_000_000
N_FRAMES = 8
STAMPS = [T0_NS + i * STEP_NS for i in range(N_FRAMES)]
CAMERA = "camera_optical"


def _stamp(msg, stamp_ns: int):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def _transform(parent: str, child: str, stamp_ns: int, xyz, q_xyzw):
    from geometry_msgs.msg import TransformStamped
    tf = _stamp(TransformStamped(), stamp_ns)
    tf.header.frame_id, tf.child_frame_id = parent, child
    tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = map(float, xyz)
    r = tf.transform.rotation
    r.x, r.y, r.z, r.w = map(float, q_xyzw)
    return tf


def _depth_msg(stamp_ns: int):
    from sensor_msgs.msg import Image
    depth = np.full((FRAME_H, FRAME_W), 2.0, np.float32)
    msg = Image(height=FRAME_H, width=FRAME_W, encoding="32FC1", step=FRAME_W * 4, data=depth.tobytes())
    msg.header.frame_id = CAMERA
    return _stamp(msg, stamp_ns)


def _info_msg(stamp_ns: int):
    from sensor_msgs.msg import CameraInfo
    msg = CameraInfo(width=FRAME_W, height=FRAME_H, k=[50.0, 0, FRAME_W / 2, 0, 50.0, FRAME_H / 2, 0, 0, 1.0])
    msg.header.frame_id = CAMERA
    return _stamp(msg, stamp_ns)


def test_tf_and_odometry_are_exclusive_pose_sources():
    with pytest.raises(ValueError, match="either odom_topic or tf_world_frame"):
        NodeConfig.from_dict({"tf_world_frame": "odom", "odom_topic": "odom"})
    assert NodeConfig.from_dict({"tf_world_frame": "map", "camera_frame": "cam"}).tf_world_frame == "map"


def test_node_takes_camera_poses_from_tf(client_node, node_factory):
    import time

    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    proc = node_factory("tf_node", params={
        "autostart": True, "image_topic": "cam/image", "depth_topic": "cam/depth",
        "camera_info_topic": "cam/info", "tf_world_frame": "odom", "geometry_source": "sensor",
        "qos_reliability": "reliable", "qos_depth": 50, "num_frames": 4, "max_new_tokens": 4,
        "diagnostics_period_s": 0.2,
        "sync_max_wait_s": 10.0})  # TF may reach a loaded node after the images; every frame must pair
    assert wait_until(lambda: lifecycle_state(client_node, proc.fqn) == "active", 60.0), proc.log()
    assert "poses from TF odom <- <image frame_id>" in proc.log()
    diag = DiagnosticsWatcher(client_node, proc.fqn)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {name: client_node.create_publisher(t, topic, reliable) for name, t, topic in (
        ("image", Image, "/cam/image"), ("depth", Image, "/cam/depth"), ("info", CameraInfo, "/cam/info"))}
    tf_pub = client_node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
    static_pub = client_node.create_publisher(
        TFMessage, "/tf_static", QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        assert wait_until(lambda: all(p.get_subscription_count() for p in [*pubs.values(), tf_pub, static_pub]),
                          15.0, client_node), "the node never subscribed"
        # base_link -> camera_optical: static (body axes -> optical axes, 0.3 m up)
        static_pub.publish(TFMessage(transforms=[
            _transform("base_link", CAMERA, 0, (0, 0, 0.3), (-0.5, 0.5, -0.5, 0.5))]))
        # odom -> base_link: the robot drives along x and turns; TF stamps sit between the frames
        for i in range(N_FRAMES + 1):
            yaw = math.radians(10.0 * i)
            tf_pub.publish(TFMessage(transforms=[_transform(
                "odom", "base_link", T0_NS + i * STEP_NS - STEP_NS // 2, (0.2 * i, 0, 0),
                (0, 0, math.sin(yaw / 2), math.cos(yaw / 2)))]))
        for i, stamp in enumerate(STAMPS):
            pubs["info"].publish(_info_msg(stamp))
            pubs["depth"].publish(_depth_msg(stamp))
            pubs["image"].publish(image_msg(i, stamp, frame_id=CAMERA))
            time.sleep(0.02)
        assert wait_until(lambda: diag.value("input", "frames") == str(N_FRAMES), 15.0, client_node), diag.latest
        assert wait_until(lambda: diag.value("input", "geometry_sensor") == str(N_FRAMES), 40.0, client_node), \
            {k: v for k, v in diag.latest["input"].items() if "geom" in k or "intake" in k}
        assert diag.value("input", "intake_unpaired_pose") is None  # every frame had its TF pose
        reply = ask(client_node, proc.fqn, "How many boxes are there?", sampling="space_aware", num_frames=4)
        assert reply.success and reply.error_code == ErrorCode.OK, reply.error_message
        assert len(reply.frame_stamps) == 4 and 0 < reply.coverage <= 1.0
        assert {s.sec * 10**9 + s.nanosec for s in reply.frame_stamps} <= set(STAMPS)
    finally:
        diag.close()
        for pub in [*pubs.values(), tf_pub, static_pub]:
            client_node.destroy_publisher(pub)
    assert proc.alive(), proc.log()
