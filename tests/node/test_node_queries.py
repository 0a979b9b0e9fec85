"""Queries against one real, autostarted node process (raw rgb8 input, model-head geometry):
service, ~/answers, windows, bad requests, action feedback + cancel, BUSY, bad images."""
from __future__ import annotations

import math
import threading

import pytest

from ros2_spatial_mllm.query_engine import ErrorCode
from ros_util import (DiagnosticsWatcher, ask, image_msg, lifecycle_state, publish_and_wait, wait_until)

T0_NS = 1_760_000_000 * 10**9
STEP_NS = 100_000_000
N_FRAMES = 12
STAMPS = [T0_NS + i * STEP_NS for i in range(N_FRAMES)]


def _ns(stamps) -> list[int]:
    return [s.sec * 10**9 + s.nanosec for s in stamps]


@pytest.fixture(scope="module")
def live_node(client_node, module_node_factory):
    """Autostarted node with 12 frames (rgb8 and bgr8) buffered, plus a few bad images sent."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    proc = module_node_factory("query_node", params={
        "autostart": True, "image_topic": "camera/image", "geometry_source": "auto",
        "num_frames": 4, "max_new_tokens": 6, "query_queue_size": 1, "diagnostics_period_s": 0.2,
        # exact counts below need every message delivered: the default sensor-data QoS is best effort
        "qos_reliability": "reliable", "qos_depth": 50})
    assert wait_until(lambda: lifecycle_state(client_node, proc.fqn) == "active", 60.0), proc.log()
    diag = DiagnosticsWatcher(client_node, proc.fqn)
    pub = client_node.create_publisher(Image, "/camera/image", QoSProfile(depth=50))
    good = [image_msg(i, s, "rgb8" if i % 2 else "bgr8") for i, s in enumerate(STAMPS)]
    unsupported = image_msg(0, T0_NS - 5 * STEP_NS)
    unsupported.encoding = "yuv422"
    zero = image_msg(0, T0_NS - 4 * STEP_NS)
    zero.height, zero.width, zero.step, zero.data = 0, 0, 0, b""
    short = image_msg(0, T0_NS - 3 * STEP_NS)
    short.data = bytes(short.data)[:100]
    publish_and_wait(client_node, pub, [unsupported, zero, short] + good)
    assert wait_until(lambda: diag.value("input", "frames") == str(N_FRAMES), 15.0, client_node), diag.latest
    yield proc, diag
    diag.close()
    client_node.destroy_publisher(pub)
    assert proc.alive(), proc.log()


@pytest.fixture(scope="module")
def long_node(client_node, module_node_factory, tmp_path_factory):
    """A second node (own topic) on the tiny preset's seeded random weights, loaded by
    `model_path`: they never emit end-of-sequence, so "Describe the room." runs to its 512-token
    budget and the cancel and queue tests have a long goal to act on (the trained default
    answers in a few tokens)."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from ros2_spatial_mllm.model.presets import write_tiny_assets

    weights = write_tiny_assets(tmp_path_factory.mktemp("tiny_random"))
    proc = module_node_factory("long_node", params={
        "model_path": str(weights), "autostart": True, "image_topic": "long/image", "geometry_source": "auto",
        "num_frames": 4, "max_new_tokens": 6, "query_queue_size": 1, "diagnostics_period_s": 0.2,
        "qos_reliability": "reliable", "qos_depth": 50})
    assert wait_until(lambda: lifecycle_state(client_node, proc.fqn) == "active", 60.0), proc.log()
    diag = DiagnosticsWatcher(client_node, proc.fqn)
    pub = client_node.create_publisher(Image, "/long/image", QoSProfile(depth=50))
    publish_and_wait(client_node, pub, [image_msg(i, s) for i, s in enumerate(STAMPS)])
    assert wait_until(lambda: diag.value("input", "frames") == str(N_FRAMES), 15.0, client_node), diag.latest
    yield proc
    diag.close()
    client_node.destroy_publisher(pub)
    assert proc.alive(), proc.log()


def test_bad_images_are_counted_and_survived(live_node):
    proc, diag = live_node
    assert diag.value("input", "dropped_decode_error") == "3"
    assert int(diag.value("input", "received")) == N_FRAMES + 3
    assert float(diag.value("input", "input_rate_hz")) > 0
    assert float(diag.value("input", "span_s")) == pytest.approx((N_FRAMES - 1) * STEP_NS * 1e-9)
    log = proc.log()
    assert "unsupported encoding 'yuv422'" in log and "zero-size image" in log
    assert proc.alive()


def test_service_answer_uses_published_stamps_and_is_published(client_node, live_node):
    from ros2_spatial_mllm.msg import SpatialAnswer
    proc, diag = live_node
    answers = []
    sub = client_node.create_subscription(SpatialAnswer, f"{proc.fqn}/answers", answers.append, 10)
    try:
        wait_until(lambda: sub.get_publisher_count() > 0, 5.0, client_node)
        reply = ask(client_node, proc.fqn, "How many boxes are there?", sampling="uniform")
        assert reply.success and reply.error_code == ErrorCode.OK, reply.error_message
        got = _ns(reply.frame_stamps)
        assert len(got) == 4 and set(got) <= set(STAMPS) and got == sorted(got)
        assert reply.answer_kind in ("number", "text", "choice")
        assert reply.num_tokens >= 1 and 0 < reply.coverage <= 1.0
        lat = reply.latency
        assert lat.total_ms >= lat.decode_ms > 0 and lat.prefill_ms > 0 and lat.spatial_encoder_ms > 0
        assert (reply.answer_kind == "number") != math.isnan(reply.value)
        assert wait_until(lambda: answers, 5.0, client_node)
        msg = answers[-1]
        assert msg.question == "How many boxes are there?" and msg.interface == "service"
        assert _ns(msg.frame_stamps) == got and msg.answer == reply.answer and msg.success
        assert msg.header.frame_id == "camera" and msg.header.stamp.sec > 0
    finally:
        client_node.destroy_subscription(sub)
    assert wait_until(lambda: float(diag.value("model", "last_query_latency_ms", 0)) > 0, 3.0, client_node)


def test_space_aware_and_window(client_node, live_node):
    proc, _ = live_node
    reply = ask(client_node, proc.fqn, "Which box is closer?", options=["red box", "blue box"],
                sampling="space_aware", num_frames=3)
    assert reply.success, reply.error_message
    assert len(reply.frame_stamps) == 3 and set(_ns(reply.frame_stamps)) <= set(STAMPS)
    window = {"window_start": _time(STAMPS[3]), "window_end": _time(STAMPS[6])}
    reply = ask(client_node, proc.fqn, "What is in view?", num_frames=8, **window)
    assert reply.success, reply.error_message
    assert _ns(reply.frame_stamps) == STAMPS[3:7]
    future = {"window_start": _time(STAMPS[-1] + 10**9), "window_end": _time(STAMPS[-1] + 2 * 10**9)}
    assert ask(client_node, proc.fqn, "anything?", **future).error_code == ErrorCode.EMPTY_WINDOW


def _time(ns: int):
    from builtin_interfaces.msg import Time
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


@pytest.mark.parametrize("fields", [
    {"question": ""},
    {"question": "   "},
    {"question": "x" * 10_000},
    {"question": "Which?", "options": ["only one"]},
    {"question": "Which?", "options": ["chair", ""]},
    {"question": "Which?", "options": ["chair", "Chair"]},
    {"question": "Which?", "sampling": "random_walk"},
    {"question": "Which?", "num_frames": 100_000},
], ids=["empty", "blank", "10kB", "one_option", "empty_option", "duplicate_options", "bad_sampling",
        "too_many_frames"])
def test_bad_requests_get_bad_request_and_node_keeps_serving(client_node, live_node, fields):
    proc, _ = live_node
    reply = ask(client_node, proc.fqn, **fields)
    assert (reply.success, reply.error_code) == (False, ErrorCode.BAD_REQUEST)
    assert reply.error_message and not reply.frame_stamps
    assert ask(client_node, proc.fqn, "How far is the door?").success
    assert proc.alive()


def _send_goal(client_node, fqn, feedback: list, **fields):
    import rclpy
    from rclpy.action import ActionClient
    from ros2_spatial_mllm.action import AskSpatial
    from rclpy.qos import QoSProfile
    # feedback is counted exactly: a deep queue so a slow test process loses none of it
    client = ActionClient(client_node, AskSpatial, f"{fqn}/ask", feedback_sub_qos_profile=QoSProfile(depth=100))
    assert client.wait_for_server(timeout_sec=30.0)
    future = client.send_goal_async(AskSpatial.Goal(**fields), feedback_callback=lambda m: feedback.append(m.feedback))
    rclpy.spin_until_future_complete(client_node, future, timeout_sec=30.0)
    handle = future.result()
    assert handle is not None and handle.accepted
    return client, handle


def _result(client_node, handle, timeout=60.0):
    import rclpy
    future = handle.get_result_async()
    rclpy.spin_until_future_complete(client_node, future, timeout_sec=timeout)
    assert future.done(), "no action result in time"
    return future.result()


def test_action_streams_feedback_and_returns_result(client_node, live_node):
    from action_msgs.msg import GoalStatus
    from rclpy.qos import QoSProfile
    from ros2_spatial_mllm.action import AskSpatial
    proc, _ = live_node
    # The token pieces are counted on the action's feedback topic itself: rclpy's ActionClient
    # drops a goal's feedback once it has taken the result response, and a lone number's pieces
    # (held for the number search) are published in one burst just before the result, so under
    # load some of them can reach the client after it.
    topic = f"{proc.fqn}/ask/_action/feedback"
    published: list = []
    sub = client_node.create_subscription(AskSpatial.Impl.FeedbackMessage, topic, published.append,
                                          QoSProfile(depth=100))
    assert wait_until(lambda: client_node.count_publishers(topic) >= 1, 10.0, client_node)
    feedback: list = []
    client, handle = _send_goal(client_node, proc.fqn, feedback, question="How many boxes?",
                                max_new_tokens=5, sampling="latest", num_frames=2)
    res = _result(client_node, handle)
    assert res.status == GoalStatus.STATUS_SUCCEEDED
    assert res.result.success and _ns(res.result.frame_stamps) == STAMPS[-2:]

    def tokens():
        goal = bytes(handle.goal_id.uuid)
        return [m.feedback for m in published if bytes(m.goal_id.uuid) == goal and m.feedback.new_text]

    assert wait_until(lambda: len(tokens()) >= res.result.num_tokens, 10.0, client_node)
    assert len(tokens()) == res.result.num_tokens >= 1, [(m.feedback.stage, m.feedback.new_text) for m in published]
    assert [f.num_tokens for f in tokens()] == list(range(1, len(tokens()) + 1))
    assert "".join(f.new_text for f in tokens()).strip() == res.result.answer
    assert {"queued", "encoding", "decoding"} <= {m.feedback.stage for m in published}
    # The client's callback and the topic subscription are two readers of one topic; DDS does not
    # order delivery across readers, so a late stage ("parsing") can reach the client first.
    stages = lambda: {m.feedback.stage for m in published}  # noqa: E731
    assert feedback and wait_until(lambda: {f.stage for f in feedback} <= stages(), 10.0, client_node), \
        ({f.stage for f in feedback}, stages())
    client_node.destroy_subscription(sub)
    client.destroy()


def test_action_cancel_between_tokens(client_node, long_node):
    """Cancel right after the first token: the goal ends CANCELED long before 512 tokens."""
    import rclpy
    from action_msgs.msg import GoalStatus
    proc = long_node
    feedback: list = []
    client, handle = _send_goal(client_node, proc.fqn, feedback, question="Describe the room.",
                                max_new_tokens=512, num_frames=4)
    assert wait_until(lambda: any(f.new_text for f in feedback), 30.0, client_node), "no token feedback"
    cancel_future = handle.cancel_goal_async()
    rclpy.spin_until_future_complete(client_node, cancel_future, timeout_sec=10.0)
    assert cancel_future.result().return_code == 0  # CancelGoal.Response.ERROR_NONE
    res = _result(client_node, handle)
    assert res.status == GoalStatus.STATUS_CANCELED
    assert res.result.error_code == ErrorCode.CANCELLED and not res.result.success
    assert len([f for f in feedback if f.new_text]) < 512
    client.destroy()
    assert ask(client_node, proc.fqn, "Still there?").success  # the node keeps serving


def test_busy_when_queue_full(client_node, long_node):
    """A long goal runs; of four concurrent service calls one waits (queue size 1) and is answered,
    the others are answered BUSY at once."""
    from ros2_spatial_mllm.srv import AskSpatial
    proc = long_node
    feedback: list = []
    client, handle = _send_goal(client_node, proc.fqn, feedback, question="Describe the room.",
                                max_new_tokens=512, num_frames=4)
    assert wait_until(lambda: any(f.new_text for f in feedback), 30.0, client_node), "no token feedback"
    srv = client_node.create_client(AskSpatial, f"{proc.fqn}/ask")
    futures = [srv.call_async(AskSpatial.Request(question=f"Call {i}?")) for i in range(4)]
    assert wait_until(lambda: all(f.done() for f in futures), 60.0, client_node)
    codes = sorted(int(f.result().error_code) for f in futures)
    assert codes.count(ErrorCode.BUSY) >= 2 and set(codes) <= {ErrorCode.OK, ErrorCode.BUSY}, codes
    busy = next(f.result() for f in futures if f.result().error_code == ErrorCode.BUSY)
    assert "queue is full" in busy.error_message and not busy.frame_stamps
    _result(client_node, handle)
    client_node.destroy_client(srv)
    client.destroy()


def test_concurrent_service_calls_never_hang(client_node, live_node):
    """Three clients at once with queue size 1: each gets OK or BUSY, none hangs."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from ros2_spatial_mllm.srv import AskSpatial
    proc, _ = live_node
    nodes = [rclpy.create_node(f"concurrent_client_{i}") for i in range(3)]
    codes: list[int] = []
    lock = threading.Lock()

    def run(node):
        client = node.create_client(AskSpatial, f"{proc.fqn}/ask")
        client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(AskSpatial.Request(question="How big is the room?", max_new_tokens=32))
        executor = SingleThreadedExecutor()  # one executor per thread (the global one is not shared)
        executor.add_node(node)
        executor.spin_until_future_complete(future, timeout_sec=60.0)
        executor.shutdown()
        with lock:
            codes.append(future.result().error_code if future.done() else -1)

    threads = [threading.Thread(target=run, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for n in nodes:
        n.destroy_node()
    assert len(codes) == 3 and -1 not in codes
    assert set(codes) <= {ErrorCode.OK, ErrorCode.BUSY} and ErrorCode.OK in codes
