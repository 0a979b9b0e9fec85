"""Fixtures for the reliability tests. Node-level tests (test_rel_*.py) run the real
`spatial_mllm_node` in child processes over Fast DDS; this process talks to them from a private
rclpy Context (harness.RosClient), so it coexists with tests/node's global rclpy in one session.

Isolation: ROS_DOMAIN_ID derived from the pid (same rule as tests/node, so a shared session uses
one domain), localhost-only discovery, node and topic names carrying the pid.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ.setdefault("OMP_NUM_THREADS", "1")
PID = os.getpid()

T0_NS = 1_760_000_000 * 10**9          # stamps of the frames the fixtures publish
STEP_NS = 100_000_000
N_FRAMES = 12
STAMPS = [T0_NS + i * STEP_NS for i in range(N_FRAMES)]


def _build_error() -> str | None:
    from harness import NODE_EXE
    if not NODE_EXE.exists():
        return f"{NODE_EXE} not installed (pip install -e .)"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_interfaces.sh")], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        return ((proc.stderr or proc.stdout).strip().splitlines() or ["unknown error"])[-1]
    return None


_NEEDS_NODE: list = []


def pytest_collection_modifyitems(config, items):
    node_items = [i for i in items if Path(str(i.fspath)).parent == HERE and Path(str(i.fspath)).name.startswith("test_rel_")]
    if not node_items:
        return
    error = _build_error()
    for item in node_items:
        item.add_marker(pytest.mark.ros)
        if error:
            item.add_marker(pytest.mark.skip(reason=f"ROS interfaces/node unavailable: {error}"))


@pytest.fixture(scope="session")
def ros_client():
    from harness import RosClient
    client = RosClient(f"reliability_client_{PID}")
    yield client
    client.close()


@pytest.fixture
def node_factory(tmp_path):
    """Start node processes (unique names); all are stopped at teardown."""
    from harness import NodeProc
    started = []

    def start(tag: str, **params):
        proc = NodeProc(f"rel_{tag}_{PID}", params, tmp_path / f"{tag}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def image_messages(stamps, width: int = 64, height: int = 48, frame_id: str = "camera"):
    """Distinct rgb8 sensor_msgs/Image per stamp."""
    import numpy as np
    from sensor_msgs.msg import Image
    out = []
    for i, stamp in enumerate(stamps):
        yy, xx = np.mgrid[0:height, 0:width]
        rgb = np.stack([(xx * 4 + i * 9) % 256, (yy * 5) % 256, np.full_like(xx, (i * 37) % 256)], -1).astype(np.uint8)
        rgb[10:22, (i * 5) % (width - 12):(i * 5) % (width - 12) + 12] = 255
        msg = Image(height=height, width=width, encoding="rgb8", step=3 * width, data=rgb.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 1_000_000_000)
        msg.header.frame_id = frame_id
        out.append(msg)
    return out


def publish(client, topic: str, messages, gap: float = 0.01, wait: float = 30.0):
    """Publish on a reliable depth-100 publisher once the node subscribed; returns the publisher."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from harness import wait_for
    kind = type(messages[0]) if messages else Image
    pub = client.node.create_publisher(kind if kind in (Image, CompressedImage) else Image, topic,
                                       QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    assert wait_for(lambda: pub.get_subscription_count() > 0, wait), f"nobody subscribed to {topic}"
    time.sleep(0.3)
    for msg in messages:
        pub.publish(msg)
        time.sleep(gap)
    return pub


@pytest.fixture(scope="session")
def shared_node(tmp_path_factory, ros_client):
    """One autostarted node with 12 frames (64x48 rgb8) buffered, shared by the load and fuzz
    tests: query_queue_size 4, 4 frames per answer, reliable image QoS (depth 50)."""
    from harness import Diagnostics, NodeProc, wait_for
    name = f"rel_shared_{PID}"
    topic = f"/{name}/camera/image"
    proc = NodeProc(name, {"autostart": True, "image_topic": topic, "num_frames": 4, "max_new_tokens": 16,
                           "query_queue_size": 4, "query_timeout_s": 60.0, "qos_reliability": "reliable",
                           "qos_depth": 50, "diagnostics_period_s": 0.1, "geometry_source": "auto"},
                    tmp_path_factory.mktemp("shared") / "node.log")
    try:
        assert ros_client.wait_active(proc.fqn, 180.0), proc.log()[-3000:]
        diag = Diagnostics(ros_client, proc.fqn)
        pub = publish(ros_client, topic, image_messages(STAMPS))
        assert wait_for(lambda: diag.get("input", "frames") == str(N_FRAMES), 20.0), diag.latest
        yield proc, diag, topic, pub
    finally:
        proc.stop()
