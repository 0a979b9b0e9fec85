"""End to end over ROS with the project's bag: node process up -> `spatial-mllm-bag replay` process
-> a separate client process asks through the service and the action (and the answers are
recorded into a bag by `spatial-mllm-bag record-answers`) -> stamps come from the bag."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ros2_spatial_mllm.query_engine import ErrorCode
from ros_util import DiagnosticsWatcher, lifecycle_state, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_BAG = ROOT / "tests" / "data" / "bags" / "synthetic_room"
BIN = Path(sys.executable).parent


def _bag(tmp_path: Path) -> Path:
    if (SHIPPED_BAG / "metadata.yaml").is_file():
        return SHIPPED_BAG
    from ros2_spatial_mllm.bag.io import write_synthetic_bag
    write_synthetic_bag(tmp_path / "bag", storage="mcap", frames=16)
    return tmp_path / "bag"


def test_bag_replay_end_to_end(client_node, node_factory, tmp_path):
    bag = _bag(tmp_path)
    facts = json.loads((bag / "answers.json").read_text())
    stamps = set(facts["stamps_ns"])
    topics = facts["topics"]
    proc = node_factory("bag_node", params={
        "autostart": True, "image_topic": topics["image"], "depth_topic": topics["depth"],
        "camera_info_topic": topics["camera_info"], "odom_topic": topics["odom"],
        "odom_child_is_optical": True, "geometry_source": "sensor", "sync_tolerance_s": 0.01,
        "sync_late_pairing_s": 30.0,  # odom/camera_info may arrive seconds late on a loaded machine
        "qos_reliability": "reliable", "qos_depth": 50, "num_frames": 4, "max_new_tokens": 8,
        "diagnostics_period_s": 0.2})
    assert wait_until(lambda: lifecycle_state(client_node, proc.fqn) == "active", 60.0), proc.log()
    diag = DiagnosticsWatcher(client_node, proc.fqn)
    recorded = tmp_path / "answers_bag"
    recorder = subprocess.Popen(
        [str(BIN / "spatial-mllm-bag"), "record-answers", str(recorded), "--topic", f"{proc.fqn}/answers",
         "--max-messages", "2", "--duration", "90"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        replay = subprocess.run(
            [str(BIN / "spatial-mllm-bag"), "replay", str(bag), "--rate", "4", "--wait-for-subscribers", "10"],
            capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stderr
        # replay drains reliable publishers (wait_for_all_acked) before exiting: nothing is lost
        assert wait_until(lambda: int(diag.value("input", "frames", "0")) >= len(stamps), 15.0,
                          client_node), (diag.latest["input"], replay.stdout)
        # sensor geometry (depth + camera_info + odometry from the bag) computed by the worker
        assert wait_until(lambda: diag.value("input", "geometry_sensor") == diag.value("input", "frames"),
                          40.0, client_node), {k: v for k, v in diag.latest["input"].items() if "geom" in k}
        # the recorder's subscription (volatile) must be matched before the answers go out
        assert wait_until(lambda: client_node.count_subscribers(f"{proc.fqn}/answers") >= 1, 30.0, client_node)
        question = facts["questions"][2]
        ask = subprocess.run(
            [sys.executable, "-m", "ros2_spatial_mllm.ros.ask_client", question["question"],
             "--options", *question["options"], "--via", "both", "--node", proc.fqn,
             "--sampling", "space_aware", "--timeout", "60"],
            capture_output=True, text=True, timeout=120)
        assert ask.returncode == 0, ask.stderr
        replies = [json.loads(line) for line in ask.stdout.splitlines() if line.startswith("{")]
        assert [r["via"] for r in replies] == ["service", "action"]
        for reply in replies:
            assert reply["success"] and reply["error_code"] == ErrorCode.OK, reply
            got = reply["frame_stamps_ns"]
            assert len(got) == 4 and set(got) <= stamps and got == sorted(got)
            assert 0 < reply["coverage"] <= 1.0
            assert reply["answer_kind"] in ("choice", "number", "text")
            assert reply["latency_ms"]["total_ms"] > 0
        assert replies[1]["status"] == 4  # GoalStatus.STATUS_SUCCEEDED
        assert any(f["new_text"] for f in replies[1]["feedback"])
        # what the answers were based on, for RViz/Foxglove (latched, so a late viewer gets it)
        from sensor_msgs.msg import CompressedImage
        from visualization_msgs.msg import MarkerArray
        from ros2_spatial_mllm.ros.answer_views import VIEW_QOS
        views = {"frames": [], "coverage": [], "trajectory": []}
        subs = [client_node.create_subscription(CompressedImage, f"{proc.fqn}/chosen_frames/compressed",
                                                views["frames"].append, VIEW_QOS),
                client_node.create_subscription(MarkerArray, f"{proc.fqn}/coverage", views["coverage"].append, VIEW_QOS),
                client_node.create_subscription(MarkerArray, f"{proc.fqn}/trajectory",
                                                views["trajectory"].append, VIEW_QOS)]
        assert wait_until(lambda: len(views["frames"]) >= 4 and views["coverage"] and views["trajectory"],
                          10.0, client_node), {k: len(v) for k, v in views.items()}
        shown = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in views["frames"]}
        assert set(replies[-1]["frame_stamps_ns"]) <= shown <= stamps
        covered = [m for m in views["coverage"][-1].markers if m.ns.endswith("covered")]
        assert covered and len(covered[0].points) > 0
        assert views["coverage"][-1].markers[-1].header.frame_id == "odom"
        for sub in subs:
            client_node.destroy_subscription(sub)
        out, _ = recorder.communicate(timeout=30)
        assert recorder.returncode == 0, out
    finally:
        diag.close()
        if recorder.poll() is None:
            recorder.kill()
    from ros2_spatial_mllm.bag.io import read_messages
    answers = [msg for _, _, _, msg in read_messages(recorded)]
    assert len(answers) == 2 and {a.interface for a in answers} == {"service", "action"}
    for msg in answers:
        assert msg.question == question["question"] and list(msg.options) == question["options"]
        assert {s.sec * 10**9 + s.nanosec for s in msg.frame_stamps} <= stamps
        assert msg.header.frame_id == facts["frame_id"]
    assert proc.alive()


@pytest.mark.parametrize("via", ["service"])
def test_ask_client_reports_unreachable_node(via):
    """The client CLI: one line on stderr and exit 2 when nobody answers."""
    out = subprocess.run([sys.executable, "-m", "ros2_spatial_mllm.ros.ask_client", "hello?", "--via", via,
                          "--node", "/nobody_here", "--wait", "0.5"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no answer" in out.stderr
