"""Pairing under a burst: the shipped bag replayed with `--max` (all 80 messages at once: image,
compressed, depth, camera_info, odom per stamp) must still pair every colour frame with its depth,
camera_info and odometry by stamp, whatever order and delay the topics arrive with.

What this burst does over Fast DDS on one host: image and depth arrive interleaved within ~30 ms,
but odometry and camera_info are repaired by DDS reliability ~3 s later (the writer's heartbeat
period). The intake's queue (sync_max_wait_s) gives up on them, and the late pairing
(sync_late_pairing_s, GeometryWorker.sensor_lookup) attaches them by stamp when they come."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ros_util import DiagnosticsWatcher, lifecycle_state, wait_until
from test_bag_replay import _bag

BIN = Path(sys.executable).parent


def test_burst_replay_pairs_every_frame(client_node, node_factory, tmp_path):
    bag = _bag(tmp_path)
    facts = json.loads((bag / "answers.json").read_text())
    topics, n = facts["topics"], len(facts["stamps_ns"])
    proc = node_factory("burst_node", params={
        "autostart": True, "image_topic": topics["image"], "depth_topic": topics["depth"],
        "camera_info_topic": topics["camera_info"], "odom_topic": topics["odom"],
        "odom_child_is_optical": True, "geometry_source": "sensor", "sync_tolerance_s": 0.01,
        "sync_late_pairing_s": 30.0,  # odom/camera_info may arrive seconds late on a loaded machine
        "qos_reliability": "reliable", "qos_depth": 50, "diagnostics_period_s": 0.2})
    assert wait_until(lambda: lifecycle_state(client_node, proc.fqn) == "active", 60.0), proc.log()
    diag = DiagnosticsWatcher(client_node, proc.fqn)
    try:
        replay = subprocess.run(
            [str(BIN / "spatial-mllm-bag"), "replay", str(bag), "--max", "--wait-for-subscribers", "10"],
            capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stderr
        assert wait_until(lambda: int(diag.value("input", "frames", "0")) >= n, 15.0, client_node), \
            (diag.latest.get("input"), replay.stdout)
        assert wait_until(lambda: diag.value("input", "geometry_sensor") == str(n), 40.0, client_node), \
            ({k: v for k, v in diag.latest["input"].items() if "geom" in k or "intake" in k}, proc.log()[-3000:])
    finally:
        diag.close()
    assert proc.alive()
