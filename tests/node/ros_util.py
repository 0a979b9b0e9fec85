"""Helpers for the node tests: start the node process, call its service/action, publish frames."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared node_process
from node_process import ROOT, NodeProcess  # noqa: E402,F401 - re-exported for the tests

# Small test frames: 64x48 so decode/encode stay in the microseconds.
FRAME_H, FRAME_W = 48, 64


# ---------------------------------------------------------------------------- calls
class NoReply(AssertionError):
    """A service call that got no reply in time."""


def call_service(node, srv_type, name: str, request, timeout: float = 60.0, wait: float = 60.0,
                 attempts: int = 1):
    """Call once, or for read-only services up to `attempts` times within `timeout`.

    Fast DDS drops a reply when the server has not yet matched the client's reply reader
    ("failed to send response (timeout)" in the server's log): `wait_for_service` only sees
    the graph, not that match, and on a loaded 2-core machine discovery can lag. Resending is
    safe only where the call changes nothing (get_parameters, get_state).
    """
    import rclpy
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=wait), f"service {name} not available"
        for _ in range(attempts):
            future = client.call_async(request)
            rclpy.spin_until_future_complete(node, future, timeout_sec=timeout / attempts)
            if future.done():
                return future.result()
            client.remove_pending_request(future)
        raise NoReply(f"no reply within {timeout} s ({attempts} attempt(s))")
    finally:
        node.destroy_client(client)


def ask(node, fqn: str, question: str = "How many boxes are there?", timeout: float = 90.0, **fields):
    from ros2_spatial_mllm.srv import AskSpatial
    return call_service(node, AskSpatial, f"{fqn}/ask", AskSpatial.Request(question=question, **fields),
                        timeout=timeout)


def lifecycle_state(node, fqn: str) -> str:
    from lifecycle_msgs.srv import GetState
    return call_service(node, GetState, f"{fqn}/get_state", GetState.Request(),
                        attempts=4).current_state.label


# The primary state each transition ends in when it succeeds.
TRANSITION_TARGET = {"configure": "inactive", "activate": "active", "deactivate": "inactive",
                     "cleanup": "unconfigured", "shutdown": "finalized"}
PRIMARY_STATES = {"unconfigured", "inactive", "active", "finalized"}


def change_state(node, fqn: str, label: str, timeout: float = 120.0) -> bool:
    """Request one transition; True when it succeeded.

    A transition must not be resent, so a dropped reply (see `call_service`) is resolved by
    reading the state back once the node is in a primary state again: it succeeded iff the node
    moved into the transition's target state.
    """
    from lifecycle_msgs.srv import ChangeState
    if label not in TRANSITION_TARGET:
        raise ValueError(f"unknown transition {label!r} (one of {sorted(TRANSITION_TARGET)})")
    req = ChangeState.Request()
    req.transition.label = label
    before = lifecycle_state(node, fqn)
    try:
        return call_service(node, ChangeState, f"{fqn}/change_state", req, timeout=timeout).success
    except NoReply:
        state, end = lifecycle_state(node, fqn), time.monotonic() + 60.0
        while state not in PRIMARY_STATES and time.monotonic() < end:  # still mid-transition
            time.sleep(0.5)
            state = lifecycle_state(node, fqn)
        return state != before and state == TRANSITION_TARGET[label]


def get_parameters(node, fqn: str, names: list[str]) -> dict:
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    reply = call_service(node, GetParameters, f"{fqn}/get_parameters", GetParameters.Request(names=names),
                         attempts=4)
    return {n: parameter_value_to_python(v) for n, v in zip(names, reply.values)}


def wait_until(predicate, timeout: float, node=None, interval: float = 0.05) -> bool:
    import rclpy
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if node is not None:
            rclpy.spin_once(node, timeout_sec=interval)
        else:
            time.sleep(interval)
        if predicate():
            return True
    return bool(predicate())


# ---------------------------------------------------------------------------- frames
def make_frame(index: int) -> np.ndarray:
    """A distinct [H, W, 3] uint8 RGB frame per index (coloured gradient + moving block)."""
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
    frame = np.stack([(xx * 4 + index * 9) % 256, (yy * 5) % 256,
                      np.full_like(xx, (index * 37) % 256)], axis=-1).astype(np.uint8)
    x0 = (index * 5) % (FRAME_W - 12)
    frame[10:22, x0:x0 + 12] = (255, 255, 255)
    return frame


def image_msg(index: int, stamp_ns: int, encoding: str = "rgb8", frame_id: str = "camera"):
    from sensor_msgs.msg import Image
    from ros2_spatial_mllm.image_codec import encode_image
    h, w, step, data = encode_image(make_frame(index), encoding)
    msg = Image(height=h, width=w, encoding=encoding, step=step, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def compressed_msg(index: int, stamp_ns: int, data: bytes | None = None):
    from sensor_msgs.msg import CompressedImage
    from ros2_spatial_mllm.image_codec import encode_compressed
    fmt, payload = encode_compressed(make_frame(index), "jpeg")
    msg = CompressedImage(format=fmt, data=payload if data is None else data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "camera"
    return msg


def publish_and_wait(node, publisher, messages, fqn_subscribers: int = 1, wait: float = 15.0,
                     gap: float = 0.02) -> None:
    """Publish `messages` once the node's subscription is matched (reliable QoS publisher)."""
    assert wait_until(lambda: publisher.get_subscription_count() >= fqn_subscribers, wait, node), \
        "the node never subscribed"
    for msg in messages:
        publisher.publish(msg)
        time.sleep(gap)


class DiagnosticsWatcher:
    """Latest /diagnostics key/values per status name of one node."""

    def __init__(self, node, fqn: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        self.node, self.fqn, self.latest = node, fqn, {}
        self.sub = node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(self.fqn + ":"):
                self.latest[status.name.split(": ", 1)[1]] = {kv.key: kv.value for kv in status.values}

    def value(self, status: str, key: str, default=None):
        return self.latest.get(status, {}).get(key, default)

    def close(self) -> None:
        self.node.destroy_subscription(self.sub)
