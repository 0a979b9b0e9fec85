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

from harness import N_FRAMES, STAMPS, image_messages, publish  # noqa: E402


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
