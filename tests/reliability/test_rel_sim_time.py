"""Simulated time (`use_sim_time:=true`) and a clock that jumps backwards, like a bag replayed
in a loop (`ros2 bag play --loop --clock`), against the real node process.

The test publishes /clock (rosgraph_msgs/Clock) and camera frames stamped with it:
  1. timeline A (10 frames, 0.1 s apart): answers use them; the ~/answers header stamp is the
     simulated time (a year away from the wall clock), so the node really runs on /clock;
  2. a late frame 0.5 s older than the newest (under the 1 s jump threshold) is dropped as
     `out_of_order`: no reset;
  3. /clock pauses for 1.5 s (bag paused): /diagnostics keeps coming at its period (its timer runs
     on the steady clock), stamped with the frozen simulated time;
  4. the clock jumps back 30 s (the loop restarts) and frames with older stamps arrive: the
     buffer is cleared once (`time_jumps` 1, the 10 old frames in `dropped_time_jump_cleared`),
     the node keeps serving, answers use only frames from after the jump, a window on the old
     timeline is EMPTY_WINDOW, and /diagnostics and ~/answers are stamped on the new timeline.
"""
from __future__ import annotations

import os
import threading
import time

from harness import Diagnostics, image_messages, wait_for
from ros2_spatial_mllm.query_engine import ErrorCode

SEC = 10**9
TA = 1_760_000_000 * SEC              # timeline A (the wall clock is far from it)
TB = TA - 30 * SEC                    # the loop restarts 30 s earlier
STEP = SEC // 10


class SimClock:
    """Publishes /clock at 50 Hz from `now_ns` (None = paused) in a background thread."""

    def __init__(self, node, start_ns: int) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        self._msg_type = Clock
        self.now_ns: int | None = start_ns
        self.pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = self.now_ns
            if now is not None:
                msg = self._msg_type()
                msg.clock.sec, msg.clock.nanosec = divmod(now, SEC)
                self.pub.publish(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def _ns(stamp) -> int:
    return stamp.sec * SEC + stamp.nanosec


def test_sim_time_and_backward_clock_jump(ros_client, node_factory):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from ros2_spatial_mllm.msg import SpatialAnswer

    node = ros_client.node
    clock = SimClock(node, TA - SEC)
    topic = f"/sim_time_{os.getpid()}/image"
    proc = node_factory("sim_time", autostart=True, use_sim_time=True, image_topic=topic, num_frames=4,
                        max_new_tokens=2, sampling="uniform", geometry_source="none", qos_reliability="reliable",
                        qos_depth=50, diagnostics_period_s=0.2, publish_views=False)
    diag = Diagnostics(ros_client, proc.fqn)
    diag_stamps: list[tuple[float, int]] = []          # (arrival monotonic, header stamp ns)
    diag_sub = node.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda m: diag_stamps.append((time.monotonic(), _ns(m.header.stamp)))
        if any(s.name.startswith(proc.fqn + ":") for s in m.status) else None, 50)
    answers: list = []
    answer_sub = node.create_subscription(SpatialAnswer, f"{proc.fqn}/answers", answers.append, 10)
    pub = node.create_publisher(Image, topic, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    try:
        assert ros_client.wait_active(proc.fqn, 120.0), proc.post_mortem()
        assert wait_for(lambda: pub.get_subscription_count() > 0 and answer_sub.get_publisher_count() > 0, 30.0)
        time.sleep(0.3)

        def stream(stamps) -> None:     # the clock follows the frames, like a bag played with --clock
            for msg, stamp in zip(image_messages(stamps), stamps):
                clock.now_ns = stamp
                pub.publish(msg)
                time.sleep(0.02)

        # 1. timeline A
        stamps_a = [TA + i * STEP for i in range(10)]
        stream(stamps_a)
        assert wait_for(lambda: diag.get("input", "frames") == "10", 20.0), str(diag.latest["input"])
        reply = ros_client.ask(proc.fqn)
        assert reply.error_code == ErrorCode.OK, reply.error_message
        assert set(map(_ns, reply.frame_stamps)) <= set(stamps_a) and len(reply.frame_stamps) == 4
        assert wait_for(lambda: answers, 10.0)
        assert abs(_ns(answers[-1].header.stamp) - stamps_a[-1]) < 5 * SEC, answers[-1].header.stamp
        assert abs(time.time_ns() - _ns(answers[-1].header.stamp)) > 3600 * SEC   # not the wall clock

        # 2. a late frame under the jump threshold: dropped, no reset
        stream([stamps_a[-1] - 5 * STEP])
        assert wait_for(lambda: diag.get("input", "dropped_out_of_order") == "1", 10.0), diag.latest["input"]
        assert diag.get("input", "time_jumps") == "0" and diag.get("input", "frames") == "10"

        # 3. /clock paused: diagnostics keep their period, stamped with the frozen sim time
        frozen = clock.now_ns
        clock.now_ns = None
        time.sleep(0.3)
        paused_from = time.monotonic()
        time.sleep(1.5)
        during = [s for t, s in list(diag_stamps) if t >= paused_from]
        assert len(during) >= 4, f"{len(during)} /diagnostics in 1.5 s of paused /clock"
        assert all(abs(s - frozen) < SEC for s in during), (during, frozen)

        # 4. the loop restarts: clock and stamps 30 s back
        answers.clear()
        stamps_b = [TB + i * STEP for i in range(6)]
        jump_at = time.monotonic()
        stream(stamps_b)
        assert wait_for(lambda: diag.get("input", "time_jumps") == "1" and diag.get("input", "frames") == "6",
                        20.0), diag.latest["input"]
        assert diag.get("input", "dropped_time_jump_cleared") == "10"
        assert int(diag.get("input", "kept")) == 10 + 6 and int(diag.get("input", "received")) == 10 + 1 + 6
        reply = ros_client.ask(proc.fqn)
        assert reply.error_code == ErrorCode.OK, reply.error_message
        got = list(map(_ns, reply.frame_stamps))
        assert len(got) == 4 and set(got) <= set(stamps_b), got
        old = ros_client.ask(proc.fqn, window_start=_time(stamps_a[0]),
                             window_end=_time(stamps_a[-1]))
        assert old.error_code == ErrorCode.EMPTY_WINDOW, (old.error_code, old.error_message)
        assert wait_for(lambda: len(answers) >= 2, 10.0)
        assert all(abs(_ns(a.header.stamp) - stamps_b[-1]) < 5 * SEC for a in answers), \
            [a.header.stamp for a in answers]
        assert wait_for(lambda: any(t > jump_at + 0.5 and abs(s - stamps_b[-1]) < 5 * SEC
                                    for t, s in list(diag_stamps)), 5.0), diag_stamps[-5:]
        assert proc.alive()
    finally:
        clock.close()
        node.destroy_subscription(diag_sub)
        node.destroy_subscription(answer_sub)
        node.destroy_publisher(pub)
        node.destroy_publisher(clock.pub)


def _time(stamp_ns: int):
    from builtin_interfaces.msg import Time
    sec, nanosec = divmod(stamp_ns, SEC)
    return Time(sec=sec, nanosec=nanosec)
