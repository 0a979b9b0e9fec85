"""Lifecycle of the real node process: transitions, MODEL_NOT_READY/NO_FRAMES, compressed input
with corrupt JPEGs counted and survived, diagnostics reflecting it all."""
from __future__ import annotations

from ros2_spatial_mllm.query_engine import ErrorCode
from ros_util import (DiagnosticsWatcher, ask, change_state, compressed_msg, lifecycle_state,
                      publish_and_wait, wait_until)

T0_NS = 1_750_000_000 * 10**9


def test_lifecycle_and_compressed_input(client_node, node_factory):
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage

    proc = node_factory("lifecycle_node", params={
        "autostart": False, "image_transport": "compressed", "image_topic": "cam",
        "geometry_source": "none", "num_frames": 3, "max_new_tokens": 4,
        "diagnostics_period_s": 0.2,
        # exact frame counts below: a best-effort reader may lose a JPEG on a loaded machine
        "qos_reliability": "reliable", "qos_depth": 20})
    fqn = proc.fqn
    diag = DiagnosticsWatcher(client_node, fqn)
    try:
        # unconfigured: queries are refused with MODEL_NOT_READY, the node keeps serving
        assert lifecycle_state(client_node, fqn) == "unconfigured"
        reply = ask(client_node, fqn)
        assert (reply.success, reply.error_code) == (False, ErrorCode.MODEL_NOT_READY)
        assert "unconfigured" in reply.error_message

        assert change_state(client_node, fqn, "configure")
        assert lifecycle_state(client_node, fqn) == "inactive"
        assert ask(client_node, fqn).error_code == ErrorCode.MODEL_NOT_READY

        assert change_state(client_node, fqn, "activate")
        assert lifecycle_state(client_node, fqn) == "active"
        assert wait_until(lambda: diag.value("model", "model_state") == "ready", 5.0, client_node)
        reply = ask(client_node, fqn)
        assert reply.error_code == ErrorCode.NO_FRAMES, reply.error_message

        # compressed input: 2 corrupt payloads among 5 good JPEGs
        pub = client_node.create_publisher(CompressedImage, "/cam/compressed", QoSProfile(depth=20))
        good = [compressed_msg(i, T0_NS + i * 100_000_000) for i in range(5)]
        truncated = compressed_msg(9, T0_NS + 50_000_000)
        truncated.data = bytes(truncated.data)[: len(truncated.data) // 2]
        garbage = compressed_msg(9, T0_NS + 60_000_000, data=b"\x00\x01not an image at all")
        publish_and_wait(client_node, pub, [good[0], truncated, garbage] + good[1:])
        assert wait_until(lambda: diag.value("input", "frames") == "5"
                          and diag.value("input", "dropped_decode_error") == "2", 10.0, client_node), diag.latest
        assert proc.alive()

        reply = ask(client_node, fqn, num_frames=3)
        assert reply.success, reply.error_message
        good_stamps = {T0_NS + i * 100_000_000 for i in range(5)}
        got = [s.sec * 10**9 + s.nanosec for s in reply.frame_stamps]
        assert len(got) == 3 and set(got) <= good_stamps and got == sorted(got)
        assert reply.num_tokens >= 1 and reply.latency.total_ms > 0

        assert change_state(client_node, fqn, "deactivate")
        assert ask(client_node, fqn).error_code == ErrorCode.MODEL_NOT_READY
        assert change_state(client_node, fqn, "cleanup")
        assert lifecycle_state(client_node, fqn) == "unconfigured"
        assert proc.alive()
        client_node.destroy_publisher(pub)
    finally:
        diag.close()
    log = proc.log()
    for line in ("configured: input compressed 'cam/compressed'", "activated: model", "deactivated",
                 "cleaned up", "dropped image"):
        assert line in log, f"missing log line {line!r}:\n{log}"
    assert proc.stop() == 0
    assert "Traceback" not in proc.log()
