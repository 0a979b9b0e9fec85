"""Bounded property-based runs against a real node process (small max_examples, < ~60 s).

Pinned behaviour: every AskSpatial service request (and action goal) a client can serialise (any valid-unicode question
and options, any window stamps incl. negative seconds and nanosec >= 1e9, any uint32 frame count
and token budget, any sampling string) is answered with a documented error code (never INTERNAL,
never silence); OK answers only use buffered stamps inside the window. Every malformed image
message published on the camera topic is counted (received grows by exactly what was sent,
decode errors by the undecodable ones) and the node keeps answering.
"""
from __future__ import annotations

import math
import time

import pytest
from builtin_interfaces.msg import Time
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from harness import STAMPS, wait_for
from ros2_spatial_mllm.query_engine import ErrorCode

# No shrinking: every example runs against one long-lived node, so a failure is about the node's
# state, and shrinking would re-run a stuck node for minutes (a post-mortem is attached instead).
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(max_examples=25, deadline=None, database=None, phases=PHASES,
                suppress_health_check=list(HealthCheck))
# text without lone surrogates (rclpy cannot serialise them)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
times = st.one_of(st.builds(Time, sec=st.integers(-2**31, 2**31 - 1), nanosec=st.integers(0, 2**32 - 1)),
                  st.sampled_from([Time(), Time(sec=STAMPS[2] // 10**9, nanosec=STAMPS[2] % 10**9),
                                   Time(sec=STAMPS[9] // 10**9, nanosec=STAMPS[9] % 10**9)]))


VALID = dict(question=st.one_of(st.sampled_from(["How many boxes?", "Wie weit ist die Tür? 🙂", "x" * 1990]),
                                TEXT.filter(lambda t: t.strip() and "<|" not in t and "\x00" not in t)),
             options=st.one_of(st.just([]), st.just(["red box", "blue box"]), st.just(["A. near", "B. far", "C. same"])),
             window_start=st.sampled_from([Time(), Time(sec=STAMPS[2] // 10**9, nanosec=STAMPS[2] % 10**9)]),
             window_end=st.sampled_from([Time(), Time(sec=STAMPS[9] // 10**9, nanosec=STAMPS[9] % 10**9)]),
             num_frames=st.integers(0, 6), sampling=st.sampled_from(["", "uniform", "latest", "space_aware"]),
             max_new_tokens=st.integers(0, 3))
ANY = dict(question=st.one_of(TEXT, st.sampled_from(["", " ", "x" * 3000, "é" * 6000, "<|im_end|><|video_pad|>"])),
           options=st.one_of(st.lists(TEXT, max_size=6), st.lists(st.sampled_from(["A. red", "B. blue", "red"]),
                                                                  max_size=4)),
           window_start=times, window_end=times, num_frames=st.one_of(st.integers(0, 6), st.integers(65, 2**32 - 1)),
           sampling=st.one_of(st.sampled_from(["bogus", "Space Aware"]), TEXT),
           max_new_tokens=st.one_of(st.integers(0, 3), st.integers(513, 2**32 - 1)))


@st.composite
def ask_fields(draw):
    """Each field 3:1 from the valid strategy, else from the anything one (~45 % of requests answer OK)."""
    return {name: draw(VALID[name] if draw(st.integers(0, 3)) else ANY[name]) for name in VALID}


@FUZZ
@given(fields=ask_fields())
def test_service_requests_always_get_a_documented_code(ros_client, shared_node, fields):
    proc, _, _, _ = shared_node
    try:
        reply = ros_client.ask(proc.fqn, timeout=60.0, **fields)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{proc.post_mortem()}") from None
    window_start, window_end = fields["window_start"], fields["window_end"]
    code = ErrorCode(reply.error_code)
    event(code.name)
    assert code in (ErrorCode.OK, ErrorCode.BAD_REQUEST, ErrorCode.EMPTY_WINDOW), (code, reply.error_message)
    assert reply.success == (code == ErrorCode.OK)
    if code == ErrorCode.OK:
        got = [s.sec * 10**9 + s.nanosec for s in reply.frame_stamps]
        lo = window_start.sec * 10**9 + window_start.nanosec or -math.inf
        hi = window_end.sec * 10**9 + window_end.nanosec or math.inf
        assert got == sorted(got) and all(lo <= s <= hi and s in STAMPS for s in got)
    else:
        assert reply.error_message and not reply.frame_stamps


@pytest.fixture(scope="module")
def action_client(ros_client, shared_node):
    """One action client for every example: creating and destroying one per example raced with
    the client executor still processing the destroyed client's status/feedback."""
    from rclpy.action import ActionClient

    from ros2_spatial_mllm.action import AskSpatial as AskAction
    client = ActionClient(ros_client.node, AskAction, f"{shared_node[0].fqn}/ask")
    assert client.wait_for_server(timeout_sec=30.0), shared_node[0].post_mortem()
    yield client
    client.destroy()


@settings(max_examples=10, deadline=None, database=None, phases=PHASES, suppress_health_check=list(HealthCheck))
@given(fields=ask_fields())
def test_action_goals_always_get_a_documented_code(ros_client, shared_node, action_client, fields):
    from ros2_spatial_mllm.action import AskSpatial as AskAction
    proc, _, _, _ = shared_node
    sent = action_client.send_goal_async(AskAction.Goal(**fields))
    assert wait_for(sent.done, 30.0) and sent.result().accepted, proc.post_mortem()
    done = sent.result().get_result_async()
    assert wait_for(done.done, 60.0), proc.post_mortem()
    result = done.result().result
    code = ErrorCode(result.error_code)
    event(code.name)
    assert code in (ErrorCode.OK, ErrorCode.BAD_REQUEST, ErrorCode.EMPTY_WINDOW), (code, result.error_message)
    assert result.success == (code == ErrorCode.OK) and (code == ErrorCode.OK or result.error_message)


def _bad_images():
    from sensor_msgs.msg import Image

    @st.composite
    def build(draw):
        encoding = draw(st.one_of(st.sampled_from(["rgb8", "bgr8", "mono8", "16UC1", "32FC1", "yuv422", ""]),
                                  st.text(max_size=8)))
        msg = Image(encoding=encoding, height=draw(st.integers(0, 2**32 - 1) | st.integers(0, 50)),
                    width=draw(st.integers(0, 2**32 - 1) | st.integers(0, 50)),
                    step=draw(st.integers(0, 2**32 - 1) | st.integers(0, 200)),
                    is_bigendian=draw(st.integers(0, 255)), data=draw(st.binary(max_size=4000)))
        stamp = STAMPS[0] - draw(st.integers(1, 10**9))          # older than the buffer: never replaces a frame
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        return msg
    return build()


@settings(max_examples=8, deadline=None, database=None, phases=PHASES, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(_bad_images(), min_size=1, max_size=6))
def test_malformed_image_messages_are_counted_and_survived(ros_client, shared_node, batch):
    from ros2_spatial_mllm.image_codec import ImageDecodeError, decode_rgb
    proc, diag, _, pub = shared_node
    received0 = int(diag.get("input", "received"))
    decode0 = int(diag.get("input", "dropped_decode_error"))
    undecodable = 0
    for msg in batch:
        try:
            decode_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)
        except ImageDecodeError:
            undecodable += 1
        pub.publish(msg)
    assert wait_for(lambda: int(diag.get("input", "received")) == received0 + len(batch), 10.0), \
        (received0, len(batch), diag.latest["input"], proc.post_mortem())
    time.sleep(0.15)
    assert int(diag.get("input", "dropped_decode_error")) == decode0 + undecodable
    assert diag.get("input", "frames") == str(len(STAMPS)) and proc.alive()


def test_node_still_serves_after_fuzzing(ros_client, shared_node):
    proc, diag, _, _ = shared_node
    try:
        reply = ros_client.ask(proc.fqn, "How many boxes are there?", sampling="uniform")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{proc.post_mortem()}") from None
    assert reply.error_code == ErrorCode.OK and len(reply.frame_stamps) == 4
    assert diag.get("model", "queries_INTERNAL") == "0" and proc.alive()
