"""Bag tools without a ROS graph: synthetic bag writing (sqlite3 + MCAP) read back with rosbags,
the shipped test bag, answers.json, frames_from_bag geometry, and CLI error behaviour."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from ros2_spatial_mllm.bag import synthetic
from ros2_spatial_mllm.bag.cli import main
from ros2_spatial_mllm.bag.io import TOPICS, frames_from_bag, read_messages, typestore, write_synthetic_bag
from ros2_spatial_mllm.geometry_worker import unproject_depth

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "bags" / "synthetic_room"


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_synthetic_bag_reads_back_with_rosbags(tmp_path, storage):
    out = tmp_path / "bag"
    answers = write_synthetic_bag(out, storage, frames=5, size=(40, 30), rate_hz=10.0)
    with Reader(out) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        assert reader.message_count == 25 and reader.duration == 4 * 10**8 + 1
    assert topics == {TOPICS["image"]: ("sensor_msgs/msg/Image", 5),
                      TOPICS["compressed"]: ("sensor_msgs/msg/CompressedImage", 5),
                      TOPICS["depth"]: ("sensor_msgs/msg/Image", 5),
                      TOPICS["camera_info"]: ("sensor_msgs/msg/CameraInfo", 5),
                      TOPICS["odom"]: ("nav_msgs/msg/Odometry", 5)}
    seen = {}
    for topic, _, bag_time, msg in read_messages(out):
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert stamp == bag_time                       # header stamps == bag receive times
        seen.setdefault(topic, []).append((stamp, msg))
    image = seen[TOPICS["image"]][2][1]
    assert (image.encoding, image.width, image.height, image.step) == ("rgb8", 40, 30, 120)
    depth = seen[TOPICS["depth"]][2][1]
    assert depth.encoding == "32FC1" and depth.step == 160
    assert seen[TOPICS["compressed"]][0][1].format.startswith("rgb8; jpeg")
    assert [s for s, _ in seen[TOPICS["image"]]] == answers["stamps_ns"]
    stored = json.loads((out / "answers.json").read_text())
    assert stored["facts"]["counts"] == {"red": 2, "green": 1, "blue": 1} and stored["storage"] == storage


def test_frames_from_bag_carry_consistent_depth_pose_and_intrinsics(tmp_path):
    out = tmp_path / "bag"
    write_synthetic_bag(out, "mcap", frames=3, size=(64, 48), compressed=False)
    frames = frames_from_bag(out)
    assert len(frames) == 3 and frames[0].rgb.shape == (48, 64, 3) and frames[0].frame_id == "camera_optical_frame"
    truth = synthetic.orbit_poses(3)
    for f, pose in zip(frames, truth):
        np.testing.assert_allclose(f.world_from_camera, pose, atol=1e-9)   # odom quaternion round trip
        points = unproject_depth(f.depth, f.intrinsics, f.world_from_camera)
        assert np.nanmin(points[..., 2]) > -1e-3            # every point on or above the floor
    rgb_only = tmp_path / "jpeg_only"
    write_synthetic_bag(rgb_only, "sqlite3", frames=2, size=(32, 24), raw=False, depth=False)
    jpeg_frames = frames_from_bag(rgb_only)
    assert len(jpeg_frames) == 2 and jpeg_frames[0].depth is None and jpeg_frames[0].rgb.shape == (24, 32, 3)


def _bag_messages(path: Path) -> list:
    with Reader(path) as reader:
        return [(c.topic, c.msgtype, stamp, bytes(raw)) for c, stamp, raw in reader.messages()]


def _pose_vector(pose) -> list:
    p, q = pose.position, pose.orientation
    return [p.x, p.y, p.z, q.x, q.y, q.z, q.w]


def test_shipped_bag_is_reproducible_and_answers_match_the_scene(tmp_path):
    made = tmp_path / "synthetic_room"
    assert main(["make-synthetic", str(made), "--storage", "mcap", "--frames", "16", "--size", "128x96",
                 "--rate", "4", "--chunk-compression"]) == 0
    # Same messages in the same order, images and depth byte for byte; pose floats may differ in
    # the last bit between CPUs (libm), and zstd's chunk bytes between library builds.
    made_msgs, shipped_msgs = _bag_messages(made), _bag_messages(SHIPPED)
    assert [m[:3] for m in made_msgs] == [m[:3] for m in shipped_msgs]
    for (topic, msgtype, _, raw_a), (_, _, _, raw_b) in zip(made_msgs, shipped_msgs):
        if msgtype != "nav_msgs/msg/Odometry":
            assert raw_a == raw_b, topic
            continue
        a, b = (typestore().deserialize_cdr(r, msgtype).pose.pose for r in (raw_a, raw_b))
        np.testing.assert_allclose(_pose_vector(a), _pose_vector(b), rtol=0, atol=1e-12)
    for name in ("metadata.yaml", "answers.json"):
        assert (made / name).read_bytes() == (SHIPPED / name).read_bytes(), name
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 500_000
    answers = json.loads((SHIPPED / "answers.json").read_text())
    by_question = {q["question"]: q["answer"] for q in answers["questions"]}
    assert by_question["How many red boxes are in the room?"] == 2
    assert by_question["How many boxes are in the room in total?"] == 4
    assert by_question["What colour is the tallest box?"] == "C"          # blue, 1.2 m
    assert answers["facts"]["camera_path_length_m"] == pytest.approx(2 * np.pi * 2.6 * 300 / 360, rel=0.02)


def test_answer_message_type_is_registered_from_msg_files():
    store = typestore()
    cls = store.types["ros2_spatial_mllm/msg/SpatialAnswer"]
    latency = store.types["ros2_spatial_mllm/msg/Latency"](*([1.5] * 10))
    fields = {name for name, _ in store.fielddefs["ros2_spatial_mllm/msg/SpatialAnswer"][1]}
    assert {"question", "answer", "frame_stamps", "latency", "error_code"} <= fields
    assert latency.total_ms == 1.5 and cls is not None


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    cmd = [sys.executable, "-m", "ros2_spatial_mllm.bag.cli"]
    out = subprocess.run(cmd + ["info", str(tmp_path / "missing")], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "no metadata.yaml" in out.stderr
    (tmp_path / "exists").mkdir()
    out = subprocess.run(cmd + ["make-synthetic", str(tmp_path / "exists")], capture_output=True, text=True)
    assert out.returncode == 1 and "exists already" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(cmd + ["make-synthetic", str(tmp_path / "x"), "--size", "12by4"], capture_output=True, text=True)
    assert out.returncode == 2 and "WIDTHxHEIGHT" in out.stderr
    assert main(["info", str(SHIPPED)]) == 0


def test_procedural_scene_uses_the_data_engine_renderer_and_questions(tmp_path):
    pytest.importorskip("embreex")
    pytest.importorskip("training.data.render")
    out = tmp_path / "procedural"
    answers = write_synthetic_bag(out, "sqlite3", frames=4, size=(64, 48), scene="procedural", seed=1)
    assert answers["scene"] == "procedural" and "--scene procedural --seed 1" in answers["command"]
    assert answers["facts"]["total_objects"] == sum(answers["facts"]["counts"].values()) > 0
    kinds = {q["kind"] for q in answers["questions"]}
    assert kinds <= {"choice", "number"} and answers["questions"]
    assert all(q["answer"] in "ABCD" for q in answers["questions"] if q["kind"] == "choice")
    frames = frames_from_bag(out)
    assert len(frames) == 4 and frames[0].rgb.shape == (48, 64, 3)
    assert np.isfinite(frames[0].depth).any() and (np.nan_to_num(frames[0].depth) >= 0).all()
