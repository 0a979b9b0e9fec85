"""Model identity in answers: the service response, the action result, the ~/answers message and
/diagnostics ("<node>: model") all carry the same non-empty `config_hash` / `model_revision`,
equal to `safety.config_hash()` / `safety.model_revision()` of the directory the node loaded;
both are empty while no model is loaded; a different model directory (its own `revision` file,
another config.json) changes them after cleanup -> configure -> activate.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ros2_spatial_mllm.query_engine import ErrorCode
from ros2_spatial_mllm.safety import config_hash, model_revision
from ros_util import (DiagnosticsWatcher, ROOT, ask, change_state, image_msg, lifecycle_state,
                      publish_and_wait, wait_until)

TINY = ROOT / "ros2_spatial_mllm" / "assets" / "tiny"
T0_NS = 1_760_000_000 * 10**9
STAMPS = [T0_NS + i * 100_000_000 for i in range(6)]


def _other_model_dir(tmp_path: Path) -> Path:
    """A copy of the tiny checkpoint with a `revision` file and one more config key."""
    other = Path(shutil.copytree(TINY, tmp_path / "tiny_rev"))
    (other / "revision").write_text("v1.1-identity-test\n")
    config = json.loads((other / "config.json").read_text())
    config["identity_test_note"] = "a config change changes config_hash"
    (other / "config.json").write_text(json.dumps(config, indent=1))
    return other


def _action_result(client_node, fqn: str):
    import rclpy
    from rclpy.action import ActionClient
    from ros2_spatial_mllm.action import AskSpatial
    client = ActionClient(client_node, AskSpatial, f"{fqn}/ask")
    try:
        assert client.wait_for_server(timeout_sec=10.0)
        sent = client.send_goal_async(AskSpatial.Goal(question="How many boxes?", max_new_tokens=2,
                                                      num_frames=2, sampling="latest"))
        rclpy.spin_until_future_complete(client_node, sent, timeout_sec=20.0)
        result = sent.result().get_result_async()
        rclpy.spin_until_future_complete(client_node, result, timeout_sec=60.0)
        assert result.done(), "no action result"
        return result.result().result
    finally:
        client.destroy()


def test_identity_in_answers_matches_diagnostics_and_model_dir(client_node, node_factory, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from ros2_spatial_mllm.msg import SpatialAnswer

    proc = node_factory("identity_node", params={
        "autostart": True, "image_topic": "identity/image", "num_frames": 2, "max_new_tokens": 2,
        "sampling": "latest", "geometry_source": "none", "qos_reliability": "reliable", "qos_depth": 20,
        "diagnostics_period_s": 0.2, "publish_views": False})
    assert wait_until(lambda: lifecycle_state(client_node, proc.fqn) == "active", 90.0), proc.log()[-2000:]
    diag = DiagnosticsWatcher(client_node, proc.fqn)
    answers: list = []
    sub = client_node.create_subscription(SpatialAnswer, f"{proc.fqn}/answers", answers.append, 10)
    pub = client_node.create_publisher(Image, "/identity/image",
                                       QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
    other = _other_model_dir(tmp_path)
    try:
        for model_dir in (TINY, other):
            want_hash, want_rev = config_hash(model_dir), model_revision(model_dir)
            assert want_hash and want_rev
            wait_until(lambda: False, 0.5, client_node)       # drain /diagnostics from before a reconfigure
            diag.latest.clear()
            frames = [image_msg(i, s) for i, s in enumerate(STAMPS)]
            publish_and_wait(client_node, pub, frames)

            def buffered() -> bool:   # re-sent frames are dropped as duplicates; covers a late match
                if diag.value("input", "frames") == str(len(STAMPS)):
                    return True
                for msg in frames:
                    pub.publish(msg)
                return False
            assert wait_until(buffered, 20.0, client_node, interval=0.5), diag.latest
            assert wait_until(lambda: sub.get_publisher_count() > 0, 5.0, client_node)
            answers.clear()
            reply = ask(client_node, proc.fqn)
            assert reply.error_code == ErrorCode.OK, reply.error_message
            assert (reply.config_hash, reply.model_revision) == (want_hash, want_rev)
            assert wait_until(lambda: answers, 10.0, client_node), "nothing on ~/answers"
            assert (answers[-1].config_hash, answers[-1].model_revision) == (want_hash, want_rev)
            assert wait_until(lambda: diag.value("model", "config_hash") == want_hash, 5.0, client_node), \
                diag.latest.get("model")
            assert diag.value("model", "revision") == want_rev
            result = _action_result(client_node, proc.fqn)
            assert result.success and (result.config_hash, result.model_revision) == (want_hash, want_rev)

            # no model loaded -> empty identity (never the previous model's)
            assert change_state(client_node, proc.fqn, "deactivate")
            idle = ask(client_node, proc.fqn)
            assert idle.error_code == ErrorCode.MODEL_NOT_READY
            assert (idle.config_hash, idle.model_revision) == ("", "")
            if model_dir is TINY:   # switch to the other directory
                from rcl_interfaces.srv import SetParameters
                from rclpy.parameter import Parameter
                from ros_util import call_service
                request = SetParameters.Request(parameters=[Parameter("model_path", value=str(other))
                                                            .to_parameter_msg()])
                assert call_service(client_node, SetParameters, f"{proc.fqn}/set_parameters",
                                    request).results[0].successful
                assert change_state(client_node, proc.fqn, "cleanup")
                assert change_state(client_node, proc.fqn, "configure")
                assert change_state(client_node, proc.fqn, "activate"), proc.log()[-2000:]
        assert config_hash(other) != config_hash(TINY) and model_revision(other) == "v1.1-identity-test"
        assert proc.alive()
    finally:
        diag.close()
        client_node.destroy_subscription(sub)
        client_node.destroy_publisher(pub)
