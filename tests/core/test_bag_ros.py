"""Bag replay and answer recording over a real ROS 2 graph (rclpy + Fast DDS, separate processes).

The CLI runs in a child process; this process subscribes/publishes with its own rclpy Context.
Isolation: a ROS_DOMAIN_ID derived from the pid and localhost-only discovery (inherited by the
child), unless the session already set them.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

pytestmark = pytest.mark.ros
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "bags" / "synthetic_room"
CLI = [sys.executable, "-m", "ros2_spatial_mllm.bag.cli"]


@pytest.fixture
def ros():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"test_bag_ros_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def spin_while(executor, proc, timeout):
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    for _ in range(20):                         # drain what arrived just before the exit
        executor.spin_once(timeout_sec=0.02)


def test_replay_publishes_bag_messages_with_their_header_stamps(ros):
    import json
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from nav_msgs.msg import Odometry
    node, executor = ros
    got = {"image": [], "compressed": [], "depth": [], "info": [], "odom": []}

    # every frame is asserted below: reliable readers, so a loaded machine cannot drop one
    # (the replay's writers are reliable and wait for acknowledgements before exiting)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)

    def stamp(msg):
        return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

    node.create_subscription(Image, "/camera/image_raw", lambda m: got["image"].append((stamp(m), m.encoding, m.width)),
                             reliable)
    node.create_subscription(CompressedImage, "/camera/image_raw/compressed",
                             lambda m: got["compressed"].append(stamp(m)), reliable)
    node.create_subscription(Image, "/camera/depth/image_raw", lambda m: got["depth"].append(m.encoding), 10)
    node.create_subscription(CameraInfo, "/camera/camera_info", lambda m: got["info"].append(m.k[0]), 10)
    node.create_subscription(Odometry, "/odom", lambda m: got["odom"].append(m.child_frame_id), 10)
    start = time.monotonic()
    proc = subprocess.Popen(CLI + ["replay", str(SHIPPED), "--rate", "4", "--wait-for-subscribers", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    spin_while(executor, proc, 60)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "published 80 messages" in out
    stamps = json.loads((SHIPPED / "answers.json").read_text())["stamps_ns"]
    assert [s for s, _, _ in got["image"]] == stamps            # every frame, stamps from the bag
    assert {(e, w) for _, e, w in got["image"]} == {("rgb8", 128)}
    assert got["compressed"] == stamps and set(got["depth"]) == {"32FC1"}
    assert len(got["info"]) == 16 and set(got["odom"]) == {"camera_optical_frame"}
    assert time.monotonic() - start > 3.75 / 4                  # paced at 4x real time, not instant


def test_replay_rejects_unknown_topics_with_one_line(tmp_path):
    proc = subprocess.run(CLI + ["replay", str(SHIPPED), "--topics", "/nope"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "topics not in the bag: /nope" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_record_answers_writes_a_bag_any_reader_can_decode(ros, tmp_path):
    from ros2_spatial_mllm.bag.io import read_messages
    try:
        from ros2_spatial_mllm.msg import SpatialAnswer
    except ImportError:
        pytest.skip("interfaces not built (scripts/build_interfaces.sh)")
    node, executor = ros
    pub = node.create_publisher(SpatialAnswer, "/spatial_mllm/answers", 10)
    out_bag = tmp_path / "answers_bag"
    proc = subprocess.Popen(CLI + ["record-answers", str(out_bag), "--max-messages", "3", "--duration", "60",
                                   "--storage", "mcap"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    assert pub.get_subscription_count() == 1, "recorder did not subscribe"
    for i in range(3):
        msg = SpatialAnswer()
        msg.question, msg.answer, msg.value, msg.error_code = f"q{i}", "2", 2.0, 0
        msg.header.stamp.sec = 1_700_000_000 + i
        msg.latency.total_ms = 10.0 + i
        pub.publish(msg)
    spin_while(executor, proc, 30)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "recorded 3 messages" in out
    records = list(read_messages(out_bag))
    assert [m.question for _, _, _, m in records] == ["q0", "q1", "q2"]
    assert records[2][1] == "ros2_spatial_mllm/msg/SpatialAnswer" and records[2][3].latency.total_ms == 12.0
    assert records[0][3].header.stamp.sec == 1_700_000_000


def test_looping_replay_stops_cleanly_on_ctrl_c():
    import signal
    proc = subprocess.Popen(CLI + ["replay", str(SHIPPED), "--loop", "--max"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(10.0)                                 # rclpy start-up (slow on a loaded machine) + passes
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "interrupted" in out and "Traceback" not in err
    assert int(out.split("published ")[1].split()[0]) > 80     # looped past the first pass
