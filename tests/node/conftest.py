"""Fixtures for the ROS node tests: real rclpy over Fast DDS, the node in its own process.

Isolation: one ROS_DOMAIN_ID per test session (derived from the pid) and localhost-only
discovery, set before rclpy is initialised here and inherited by every process started.
The generated interfaces are built first (scripts/build_interfaces.sh, a no-op when up to date).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 200)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")


def _build_interfaces() -> str | None:
    script = ROOT / "scripts" / "build_interfaces.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["unknown error"]
    return None


_BUILD_ERROR = _build_interfaces()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/node" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.ros)
            if _BUILD_ERROR:
                item.add_marker(pytest.mark.skip(
                    reason=f"ROS interfaces could not be built: {_BUILD_ERROR}"))


@pytest.fixture(scope="session")
def ros_context():
    """rclpy initialised once for the test process (the client side)."""
    import rclpy
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="session")
def client_node(ros_context):
    import rclpy
    node = rclpy.create_node(f"spatial_mllm_test_client_{os.getpid()}")
    yield node
    node.destroy_node()


def _factory(log_dir: Path):
    from ros_util import NodeProcess
    started: list = []

    def start(name: str = "spatial_mllm_node", params: dict | None = None,
              params_file: str | None = None, extra_args: list[str] | None = None):
        proc = NodeProcess(name, params or {}, log_dir / f"{name}.log", params_file, extra_args or [])
        started.append(proc)
        return proc

    return start, started


@pytest.fixture
def node_factory(tmp_path):
    """Start `spatial_mllm_node` processes; all are stopped (SIGINT, then kill) at teardown."""
    start, started = _factory(tmp_path)
    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def module_node_factory(tmp_path_factory):
    """Like node_factory, for node processes shared by the tests of one module."""
    start, started = _factory(tmp_path_factory.mktemp("nodes"))
    yield start
    for proc in started:
        proc.stop()
