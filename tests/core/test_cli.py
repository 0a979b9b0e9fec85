"""`spatial-mllm ask` end to end through a subprocess, on generated clips and PNG folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ros2_spatial_mllm.sampling.synthetic import room_scan


def run_cli(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run([sys.executable, "-m", "ros2_spatial_mllm.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def assert_clean_error(proc, *fragments):
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def room_video(tmp_path_factory):
    """A 24-frame 10 fps clip of a camera turning in a synthetic room (colour = depth)."""
    path = tmp_path_factory.mktemp("clips") / "room.mp4"
    depth, _, _, _ = room_scan(24, 56, 84)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (84, 56))
    for d in depth:
        writer.write(cv2.applyColorMap((np.clip(d / 4, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET))
    writer.release()
    return path


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((56, 84, 3), 40 * i, np.uint8))
    return folder


def test_ask_video_space_aware_prints_one_json_object(room_video):
    proc = run_cli("ask", "--video", room_video, "--question", "How many chairs are in the room?",
                   "--num-frames", 4, "--max-candidates", 12, "--max-new-tokens", 4, "--unit", "m")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert out["sampling"]["method"] == "space_aware" and out["sampling"]["confidence"] == "frame"
    frames = out["frames"]
    assert len(frames["indices"]) == 4 and frames["indices"] == sorted(frames["indices"])
    assert frames["candidates"] == 12 and frames["total"] == 24 and frames["fps"] == 10.0
    candidates = np.linspace(0, 23, 12).astype(int).tolist()
    assert set(frames["indices"]) <= set(candidates)
    assert frames["timestamps_s"] == pytest.approx([i / 10.0 for i in frames["indices"]])
    assert 0.0 < out["sampling"]["coverage"] <= 1.0 and len(out["sampling"]["gains"]) == 4
    assert out["parsed"]["kind"] in {"number", "text", "choice"}
    timings = out["timings_ms"]
    for key in ("read_video", "load_model", "geometry", "voxelize", "pick", "sampling", "model_total", "total"):
        assert timings[key] >= 0.0, key
    assert timings["sampling"] == pytest.approx(timings["geometry"] + timings["voxelize"] + timings["pick"], abs=0.01)
    assert out["model"]["preset"] == "tiny" and out["num_tokens"] <= 4


def test_ask_folder_uniform_with_options_and_clamp(png_folder):
    proc = run_cli("ask", "--video", png_folder, "--question", "Which is closer?", "--options", "chair", "table",
                   "--sampling", "uniform", "--num-frames", 8, "--allow-fewer-frames", "--fps", 2,
                   "--max-new-tokens", 2)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["frames"]["indices"] == [0, 1, 2] and out["frames"]["timestamps_s"] == [0.0, 0.5, 1.0]
    assert out["sampling"] == {"method": "uniform", "geometry": None, "confidence": None, "coverage": None, "voxel_size": None,
                               "num_voxels": 0, "gains": []}
    assert out["options"] == ["chair", "table"]


@pytest.fixture(scope="module")
def sensor_scan(tmp_path_factory):
    """Video + uint16 mm depth PNGs + camera JSON: 16 frames, the camera stares at one wall for
    the first 13 and turns once (space-aware must pick one of those and the three turns)."""
    root = tmp_path_factory.mktemp("sensor")
    yaws = np.concatenate([np.zeros(12), np.radians([0, 90, 180, 270])])
    depth, k, poses, _ = room_scan(len(yaws), 48, 64, yaws_rad=yaws)
    writer = cv2.VideoWriter(str(root / "scan.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (64, 48))
    (root / "depth").mkdir()
    for i, d in enumerate(depth):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
        cv2.imwrite(str(root / "depth" / f"{i}.png"), np.round(d * 1000).astype(np.uint16))
    writer.release()
    (root / "camera.json").write_text(json.dumps({"intrinsics": k.tolist(), "world_from_camera": poses.tolist()}))
    return root


def test_ask_with_sensor_depth_and_poses(sensor_scan):
    proc = run_cli("ask", "--video", sensor_scan / "scan.avi", "--question", "How big is the room?",
                   "--num-frames", 4, "--depth", sensor_scan / "depth", "--camera", sensor_scan / "camera.json",
                   "--max-new-tokens", 2)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["sampling"]["geometry"] == "sensor" and out["timings_ms"]["geometry"] == 0.0
    # the four walls; frames 0-12 all see the first wall, the tie goes to the earliest
    assert out["frames"]["indices"] == [0, 13, 14, 15]
    assert out["sampling"]["coverage"] == pytest.approx(1.0)


def test_sensor_inputs_must_match_the_video(sensor_scan, tmp_path):
    short = tmp_path / "depth"
    short.mkdir()
    cv2.imwrite(str(short / "0.png"), np.full((48, 64), 1000, np.uint16))
    assert_clean_error(run_cli("ask", "--video", sensor_scan / "scan.avi", "--question", "q?", "--num-frames", 2,
                               "--depth", short, "--camera", sensor_scan / "camera.json"), "must match")
    assert_clean_error(run_cli("ask", "--video", sensor_scan / "scan.avi", "--question", "q?", "--num-frames", 2,
                               "--depth", sensor_scan / "depth"), "--depth and --camera go together")
    broken = tmp_path / "camera.json"
    broken.write_text("{not json")
    assert_clean_error(run_cli("ask", "--video", sensor_scan / "scan.avi", "--question", "q?", "--num-frames", 2,
                               "--depth", sensor_scan / "depth", "--camera", broken), "not valid JSON")


def test_fewer_frames_than_asked_is_an_error_by_default(png_folder):
    assert_clean_error(run_cli("ask", "--video", png_folder, "--question", "q?", "--num-frames", 8),
                       "fewer than --num-frames 8", "--allow-fewer-frames")


@pytest.mark.parametrize("args, fragment", [
    (["ask", "--video", "/nonexistent/clip.mp4", "--question", "q?"], "no such file"),
    (["ask", "--video", "{video}", "--question", "   "], "question is empty"),
    (["ask", "--video", "{video}", "--question", "q?", "--options", "only-one"], "at least 2 options"),
    (["ask", "--video", "{video}", "--question", "q?", "--num-frames", "0"], "positive integer"),
    (["ask", "--video", "{video}", "--question", "q?", "--sampling", "random"], "invalid choice"),
    (["ask", "--video", "{video}", "--question", "q?", "--model", "/nonexistent/model"], "local checkpoint"),
    (["ask", "--video", "{video}", "--question", "q?", "--unit", "furlong"], "unknown unit"),
    (["ask", "--video", "{video}", "--question", "q?", "--backend", "onnxruntime"], "needs --onnx-dir"),
    (["ask", "--video", "{video}", "--question", "q?", "--backend", "onnxruntime", "--onnx-dir", "/nonexistent"],
     "/nonexistent"),
    (["ask", "--video", "{video}", "--question", "q?", "--decode-mode", "turbo"], "invalid choice: 'turbo'"),
    (["ask", "--video", "{video}", "--question", "q?", "--decode-mode", "compiled", "--device", "cpu"],
     "--decode-mode compiled needs a CUDA --device"),
    (["ask", "--question", "q?"], "--video"),
    ([], "missing command"),
])
def test_bad_input_one_line_no_traceback(room_video, args, fragment):
    args = [str(room_video) if a == "{video}" else a for a in args]
    assert_clean_error(run_cli(*args), fragment)


def test_bad_decode_mode_exits_2(room_video):
    proc = run_cli("ask", "--video", room_video, "--question", "q?", "--decode-mode", "turbo")
    assert proc.returncode == 2
    assert_clean_error(proc, "--decode-mode")


def test_ask_with_static_decode_mode(png_folder):
    proc = run_cli("ask", "--video", png_folder, "--question", "How many chairs?", "--sampling", "uniform",
                   "--num-frames", 3, "--max-new-tokens", 4, "--decode-mode", "static")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"]["decode_mode"] == "static" and 0 < out["num_tokens"] <= 4
    assert out["timings_ms"]["model_decode"] >= 0.0 and out["timings_ms"]["model_prefill"] > 0.0


def test_numeric_answers_option(png_folder, room_video):
    answers = {}
    for mode in ("expected_mra", "greedy"):
        proc = run_cli("ask", "--video", png_folder, "--question", "How big is this room in square meters?",
                       "--sampling", "uniform", "--num-frames", 3, "--numeric-answers", mode)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["model"]["numeric_answers"] == mode
        answers[mode] = out["parsed"]
    assert answers["expected_mra"]["kind"] == answers["greedy"]["kind"] == "number"
    proc = run_cli("ask", "--video", room_video, "--question", "q?", "--numeric-answers", "mean")
    assert proc.returncode == 2
    assert_clean_error(proc, "--numeric-answers")


def test_unreadable_and_empty_inputs(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video at all")
    assert_clean_error(run_cli("ask", "--video", bad, "--question", "q?"), "cannot open video")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli("ask", "--video", empty, "--question", "q?"), "no images")


def test_debug_flag_prints_traceback(tmp_path):
    proc = run_cli("ask", "--video", tmp_path / "missing.mp4", "--question", "q?", "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no such file")


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("spatial-mllm")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e .)")
    proc = subprocess.run([str(script), "ask", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--num-frames" in proc.stdout


def test_report_writes_html_and_png_with_one_tile_per_chosen_frame(room_video, tmp_path):
    from ros2_spatial_mllm.report import LABEL_H, LINE_H, MAX_COLS, PAD, TILE_H, TILE_W

    question = "How far is the sofa from the door?"
    proc = run_cli("ask", "--video", room_video, "--question", question, "--num-frames", 3,
                   "--max-candidates", 8, "--max-new-tokens", 2, "--report", tmp_path / "rep" / "q1.json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    report = out["report"]
    html_path, png_path = Path(report["html"]), Path(report["png"])
    assert html_path == tmp_path / "rep" / "q1.html" and png_path == tmp_path / "rep" / "q1.png"
    assert report["tiles"] == len(out["frames"]["indices"]) == 3
    text = html_path.read_text(encoding="utf-8")
    assert question in text and text.count("<figure>") == 3
    for stamp in out["frames"]["timestamps_s"]:  # captions carry the chosen frames' stamps
        assert f"t={stamp:.3f}s" in text
    image = cv2.imread(str(png_path), cv2.IMREAD_COLOR)
    assert image is not None
    cols = min(MAX_COLS, 3)
    assert image.shape[1] == PAD + cols * (TILE_W + PAD)  # one tile per chosen frame, in one row
    header_h = image.shape[0] - (TILE_H + LABEL_H + PAD) - PAD  # exactly one row of tiles under the text
    assert header_h > 2 * PAD and (header_h - 2 * PAD) % LINE_H == 0
    tile_row = image[header_h:header_h + TILE_H]
    for c in range(cols):  # each tile area holds a frame (not the white page background)
        x = PAD + c * (TILE_W + PAD)
        assert tile_row[:, x:x + TILE_W].mean() < 200
    assert image[header_h:header_h + TILE_H, cols * (TILE_W + PAD) + 1:].mean() > 250  # white right margin


def test_report_to_an_unwritable_place_is_a_clean_error(png_folder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("ask", "--video", png_folder, "--question", "How many chairs?", "--sampling", "uniform",
                   "--num-frames", 2, "--max-new-tokens", 1, "--report", blocker / "sub" / "q.html")
    assert_clean_error(proc, "--report")
