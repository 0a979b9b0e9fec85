"""Helpers for the node-level reliability tests and benchmarks/bench_soak.py: start the real
`spatial_mllm_node` console script, talk to it from a private rclpy Context (never the global
one, so these tests coexist with tests/node in one pytest process), read its RSS from /proc.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared node_process
from node_process import NODE_EXE, ROOT, NodeProcess  # noqa: E402,F401 - NODE_EXE/ROOT used by callers
PUBLISHER = Path(__file__).resolve().parent / "stream_publisher.py"


def ros_env() -> dict:
    """Environment for child processes: same domain/discovery as this process, 1 BLAS thread."""
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def rss_mb(pid: int) -> float | None:
    """Resident memory (VmRSS) of a process in MiB, None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class NodeProc(NodeProcess):
    """The node as a child process with this harness's environment (ros_env) and RSS reading."""

    def __init__(self, name: str, params: dict, log_path: Path) -> None:
        super().__init__(name, params, log_path, env=ros_env())

    def rss_mb(self) -> float | None:
        return rss_mb(self.proc.pid)

    def stop(self, timeout: float = 15.0) -> int:
        return super().stop(timeout)

    def post_mortem(self, tail: int = 4000) -> str:
        """For a failing assertion: whether the node lives, and its log tail with every thread's
        stack (the node dumps them on SIGUSR1) when it does."""
        import signal
        alive = self.alive()
        if alive:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        return f"node alive={alive} rc={self.proc.poll()}\n" + self.log()[-tail:]


class RosClient:
    """A client node in its own rclpy Context, spun by a background thread."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        """Spin like the node does: an exception out of a callback (rclpy's action client can
        raise one when a client is destroyed mid-goal) is logged and counted, and spinning goes on;
        a silently dead spin thread made every later call of the session time out."""
        from ros2_spatial_mllm.ros.process import CallbackErrors, spin_until_shutdown
        self.callback_errors = CallbackErrors()
        try:
            spin_until_shutdown(self.executor, self.node.get_logger(), self.callback_errors,
                                self.context.ok)
        except Exception:  # noqa: BLE001 - context shut down while spinning
            pass

    def close(self) -> None:
        import rclpy
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ---------------------------------------------------------------- calls
    def call(self, srv_type, name: str, request, timeout: float = 60.0, wait: float = 60.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=wait):
                raise TimeoutError(f"service {name} not available after {wait} s")
            future = client.call_async(request)
            if not wait_for(future.done, timeout):
                raise TimeoutError(f"no reply from {name} within {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def ask(self, fqn: str, question: str = "How many boxes are there?", timeout: float = 90.0, **fields):
        from ros2_spatial_mllm.srv import AskSpatial
        return self.call(AskSpatial, f"{fqn}/ask", AskSpatial.Request(question=question, **fields), timeout)

    def state(self, fqn: str) -> str:
        from lifecycle_msgs.srv import GetState
        return self.call(GetState, f"{fqn}/get_state", GetState.Request()).current_state.label

    def transition(self, fqn: str, label: str, timeout: float = 120.0) -> bool:
        from lifecycle_msgs.srv import ChangeState
        request = ChangeState.Request()
        request.transition.label = label
        return self.call(ChangeState, f"{fqn}/change_state", request, timeout).success

    def set_params(self, fqn: str, **values) -> list[bool]:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return [r.successful for r in self.call(SetParameters, f"{fqn}/set_parameters", request).results]

    def wait_active(self, fqn: str, timeout: float = 120.0) -> bool:
        def active() -> bool:
            try:
                return self.state(fqn) == "active"
            except TimeoutError:
                return False
        return wait_for(active, timeout, interval=0.5)


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Diagnostics:
    """Latest key/values per status ("input", "model") of one node from /diagnostics."""

    def __init__(self, client: RosClient, fqn: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        self.fqn, self.latest, self.levels, self.messages = fqn, {}, {}, {}
        self._lock = threading.Lock()
        self.sub = client.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg) -> None:
        with self._lock:
            for status in msg.status:
                if status.name.startswith(self.fqn + ":"):
                    key = status.name.split(": ", 1)[1]
                    self.latest[key] = {kv.key: kv.value for kv in status.values}
                    self.levels[key] = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) \
                        else int(status.level)
                    self.messages[key] = status.message

    def get(self, status: str, key: str, default=None):
        with self._lock:
            return self.latest.get(status, {}).get(key, default)

    def snapshot(self, status: str) -> dict:
        """A copy of the latest key/values of one status (one message's, never a mix of two)."""
        with self._lock:
            return dict(self.latest.get(status, {}))

    def number(self, status: str, key: str, default: float = 0.0) -> float:
        value = self.get(status, key)
        return float(value) if value is not None else default


def start_publisher(topic: str, duration_s: float, rate_hz: float = 30.0, width: int = 1920, height: int = 1080,
                    t0_ns: int | None = None, loops_back_at: float | None = None) -> subprocess.Popen:
    """`stream_publisher.py` in a child process; its stdout's last line is a JSON summary."""
    cmd = [sys.executable, str(PUBLISHER), "--topic", topic, "--duration", str(duration_s), "--rate", str(rate_hz),
           "--size", f"{width}x{height}"]
    if t0_ns is not None:
        cmd += ["--t0-ns", str(t0_ns)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ros_env())


def publisher_summary(proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"publisher failed (rc {proc.returncode}): {err[-1500:]}")
    return json.loads(lines[-1])


def percentile(values, q: float) -> float:
    import numpy as np
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


# The frames the fixtures publish (shared by conftest.py and the tests, which import them from
# here: `from conftest import` would pick whichever conftest module pytest loaded first).
T0_NS = 1_760_000_000 * 10**9          # stamps of the frames the fixtures publish
STEP_NS = 100_000_000
N_FRAMES = 12
STAMPS = [T0_NS + i * STEP_NS for i in range(N_FRAMES)]


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
    kind = type(messages[0]) if messages else Image
    pub = client.node.create_publisher(kind if kind in (Image, CompressedImage) else Image, topic,
                                       QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    assert wait_for(lambda: pub.get_subscription_count() > 0, wait), f"nobody subscribed to {topic}"
    time.sleep(0.3)
    for msg in messages:
        pub.publish(msg)
        time.sleep(gap)
    return pub
