"""Faults against real node processes. Each test pins one documented behaviour:

1. model directory missing / half-written (truncated safetensors shard): activate FAILS cleanly,
   the process stays up in `inactive`, /diagnostics "model" is ERROR with the reason, queries get
   MODEL_NOT_READY; after pointing `model_path` at a good copy, cleanup -> configure -> activate
   succeeds and the node serves (not wedged).
2. camera stall and resume: during a stall > 5 s the "input" status turns WARN ("no camera frame
   for N s") while queries keep being answered from the buffered frames; when frames resume the
   status is OK again and answers can use the new frames.
3. time jumps backwards (bag loop): replaying D2's bag (stamps 1.7e9 s) after live frames
   (1.76e9 s), twice, makes the buffer reset each time (time_jumps +1, the old frames counted as
   time_jump_cleared); answers then use only the new timeline's stamps.
4. deactivation mid-query: an action goal in its decoding stage is answered CANCELLED when the
   node is deactivated; the node is inactive with the model freed, then re-activates and answers.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import STAMPS, STEP_NS, Diagnostics, image_messages, publish, ros_env, wait_for
from ros2_spatial_mllm.query_engine import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "ros2_spatial_mllm" / "assets" / "tiny"
BAG = ROOT / "tests" / "data" / "bags" / "synthetic_room"
ERROR_LEVEL, WARN_LEVEL, OK_LEVEL = 2, 1, 0


def _ns(stamps) -> list[int]:
    return [s.sec * 10**9 + s.nanosec for s in stamps]


def test_missing_then_half_written_then_good_model_dir(ros_client, node_factory, tmp_path):
    good = Path(shutil.copytree(TINY, tmp_path / "good"))
    half = Path(shutil.copytree(TINY, tmp_path / "half"))
    shard = next(half.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])      # an interrupted download
    missing = tmp_path / "not_downloaded"
    proc = node_factory("model_faults", autostart=True, model_path=str(missing), diagnostics_period_s=0.2)
    diag = Diagnostics(ros_client, proc.fqn)
    assert wait_for(lambda: diag.get("model", "model_state") == "error", 120.0), proc.log()[-2000:]
    assert ros_client.state(proc.fqn) == "inactive" and proc.alive()
    assert diag.levels["model"] == ERROR_LEVEL and str(missing) in diag.messages["model"]
    reply = ros_client.ask(proc.fqn)
    assert reply.error_code == ErrorCode.MODEL_NOT_READY and not reply.success

    for path, expect_active in ((half, False), (good, True)):
        assert ros_client.set_params(proc.fqn, model_path=str(path)) == [True]
        assert ros_client.transition(proc.fqn, "cleanup")
        assert ros_client.transition(proc.fqn, "configure")
        assert ros_client.transition(proc.fqn, "activate") is expect_active, proc.log()[-2000:]
        assert proc.alive()
        if not expect_active:
            assert ros_client.state(proc.fqn) == "inactive"
            assert wait_for(lambda: diag.get("model", "model_state") == "error"
                            and diag.levels["model"] == ERROR_LEVEL, 10.0)
            assert ros_client.ask(proc.fqn).error_code == ErrorCode.MODEL_NOT_READY
    assert ros_client.state(proc.fqn) == "active"
    assert wait_for(lambda: diag.get("model", "model_state") == "ready" and diag.levels["model"] == OK_LEVEL, 10.0)
    assert ros_client.ask(proc.fqn).error_code == ErrorCode.NO_FRAMES     # serving; no camera yet
    assert "activate failed" in proc.log()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """The tiny preset's seeded random weights: they never emit end-of-sequence, so a 512-token
    goal really decodes 512 tokens (the trained default answers in a few) and a deactivate can
    land mid-query."""
    from ros2_spatial_mllm.model.presets import write_tiny_assets

    return write_tiny_assets(tmp_path_factory.mktemp("tiny_random"))


@pytest.fixture
def camera_node(ros_client, node_factory, random_weights):
    """A node on /camera/image_raw (the bag's topic), reliable QoS, model-head geometry."""
    proc = node_factory("stream_faults", autostart=True, image_topic="/camera/image_raw", num_frames=4,
                        max_new_tokens=4, qos_reliability="reliable", qos_depth=50, diagnostics_period_s=0.2,
                        model_path=str(random_weights))
    assert ros_client.wait_active(proc.fqn, 180.0), proc.log()[-2000:]
    return proc, Diagnostics(ros_client, proc.fqn)


def test_camera_stall_resume_and_time_jumps(ros_client, camera_node):
    proc, diag = camera_node
    pub = publish(ros_client, "/camera/image_raw", image_messages(STAMPS[:8]))
    assert wait_for(lambda: diag.get("input", "frames") == "8", 20.0), diag.latest
    assert wait_for(lambda: diag.levels.get("input") == OK_LEVEL, 5.0)
    # --- stall: no frame for > 5 s -> WARN, queries still answered from the buffer
    assert wait_for(lambda: diag.levels.get("input") == WARN_LEVEL, 12.0), diag.messages
    assert "no camera frame for" in diag.messages["input"]
    reply = ros_client.ask(proc.fqn, sampling="uniform")
    assert reply.error_code == ErrorCode.OK and set(_ns(reply.frame_stamps)) <= set(STAMPS[:8])
    # --- resume: newer frames -> OK again, and they are used
    for msg in image_messages(STAMPS[8:]):
        pub.publish(msg)
        time.sleep(0.01)
    assert wait_for(lambda: diag.get("input", "frames") == str(len(STAMPS)) and diag.levels["input"] == OK_LEVEL, 10.0)
    reply = ros_client.ask(proc.fqn, sampling="latest", num_frames=2)
    assert _ns(reply.frame_stamps) == STAMPS[-2:]

    # --- time jumps backwards: the bag (older stamps) replayed twice, like `replay --loop`
    jumps0 = int(diag.get("input", "time_jumps"))
    for n in (1, 2):
        held = int(diag.get("input", "frames"))
        cleared0 = int(diag.get("input", "dropped_time_jump_cleared"))
        replay = subprocess.run([sys.executable, "-m", "ros2_spatial_mllm.bag.cli", "replay", str(BAG), "--rate", "8",
                                 "--topics", "/camera/image_raw", "--wait-for-subscribers", "10"],
                                capture_output=True, text=True, timeout=120, env=ros_env())
        assert replay.returncode == 0, replay.stderr[-1500:]
        assert wait_for(lambda: int(diag.get("input", "time_jumps")) == jumps0 + n
                        and diag.get("input", "frames") == "16", 15.0), diag.latest["input"]
        assert int(diag.get("input", "dropped_time_jump_cleared")) == cleared0 + held
        reply = ros_client.ask(proc.fqn, sampling="uniform", num_frames=4)
        got = _ns(reply.frame_stamps)
        assert reply.error_code == ErrorCode.OK and len(got) == 4
        assert all(1_700_000_000 * 10**9 <= s < 1_700_000_010 * 10**9 for s in got), got
    assert proc.alive()
    ros_client.node.destroy_publisher(pub)


def test_deactivate_mid_query_cancels_and_recovers(ros_client, camera_node):
    from rclpy.action import ActionClient

    from ros2_spatial_mllm.action import AskSpatial as AskAction
    proc, diag = camera_node
    pub = publish(ros_client, "/camera/image_raw", image_messages([STAMPS[0] + i * STEP_NS for i in range(16)],
                                                                  width=320, height=240))
    assert wait_for(lambda: diag.get("input", "frames") == "16", 20.0)
    action = ActionClient(ros_client.node, AskAction, f"{proc.fqn}/ask")
    assert action.wait_for_server(timeout_sec=30.0)
    stages, decoding = [], threading.Event()

    def on_feedback(msg):
        stages.append(msg.feedback.stage)
        if msg.feedback.stage == "decoding":
            decoding.set()

    # the ChangeState client is matched before the goal: the 512-token decode lasts only a few
    # seconds, and service discovery must not eat that window
    from lifecycle_msgs.srv import ChangeState
    change = ros_client.node.create_client(ChangeState, f"{proc.fqn}/change_state")
    assert change.wait_for_service(timeout_sec=30.0)
    goal = AskAction.Goal(question="Describe the room in detail.", num_frames=16, sampling="uniform",
                          max_new_tokens=512)
    sent = action.send_goal_async(goal, feedback_callback=on_feedback)
    assert wait_for(sent.done, 30.0) and sent.result().accepted
    assert decoding.wait(60.0), stages
    request = ChangeState.Request()
    request.transition.label = "deactivate"
    deactivated = change.call_async(request)
    assert wait_for(deactivated.done, 120.0) and deactivated.result().success
    ros_client.node.destroy_client(change)
    result_future = sent.result().get_result_async()
    assert wait_for(result_future.done, 30.0)
    result = result_future.result().result
    assert result.error_code == ErrorCode.CANCELLED and not result.success, (result.error_code, result.num_tokens)
    assert result.num_tokens < 512
    assert ros_client.state(proc.fqn) == "inactive" and proc.alive()
    assert wait_for(lambda: diag.get("model", "model_state") == "unloaded", 5.0)
    assert ros_client.ask(proc.fqn).error_code == ErrorCode.MODEL_NOT_READY
    assert ros_client.transition(proc.fqn, "activate")
    reply = ros_client.ask(proc.fqn, sampling="latest", num_frames=2)
    assert reply.error_code == ErrorCode.OK, reply.error_message
    action.destroy()
    ros_client.node.destroy_publisher(pub)
