"""The embedded tiny default is the trained model: on scenes it never saw (held-out test-split
seeds of the data engine, rendered here as training/configs/tiny_frames.yaml renders them) it
answers the frame-dependent questions far better than any answer prior could.

~30 s: twenty scenes rendered, ~130 questions answered by SpatialMLLM.load() (uniform, 8 frames).
The same scenes' depth and poses score the frames each sampler picks (training/sampling_coverage.py).
"""
import json
import statistics
from collections import Counter
from dataclasses import asdict

import pytest

from training.data.generate import GenerateConfig, process_scene
from training.data.splits import SPLIT_SEED_BASE
from training.evaluate import _parser, evaluate

TASKS = ("obj_appearance_order", "object_size_estimation")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("held_out")
    gcfg = GenerateConfig(num_scenes=20, questions_per_scene=40, num_frames=32, width=112, height=84,
                          multispa_fraction=0.2, save_depth=True)
    rows = []
    for k in range(20):
        seed = SPLIT_SEED_BASE["test"] + k
        sid = f"test_{seed:08d}"
        process_scene((str(root), "test", seed, sid, asdict(gcfg)))
        rows += [json.loads(line) for line in (root / "scenes" / "test" / sid / "qa.jsonl").read_text().splitlines()]
    (root / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = [r for r in rows if r["task_type"] in TASKS]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, rows


def _prior_score(rows):
    """The best answer prior fitted on these very questions (most frequent option; median
    number scored by MRA), a stronger baseline than the train-split prior."""
    from training.data.dataset import record_extra
    from training.eval.scorer import score_record

    if rows[0].get("options"):
        guess = Counter(str(r["answer"]) for r in rows).most_common(1)[0][0]
    else:
        guess = f"{statistics.median(float(r['answer']) for r in rows):g}"
    return statistics.mean(score_record(dict(r, extra=record_extra(r)), guess) for r in rows)


def test_trained_default_beats_the_answer_prior_on_unseen_scenes(held_out, tmp_path):
    root, rows = held_out
    args = _parser().parse_args(["--preset", "tiny", "--data", str(root), "--split", "test", "--num-frames", "8",
                                 "--sampling", "uniform", "--out", str(tmp_path / "eval"), "--no-progress"])
    summary = evaluate(args)["summary"]
    for task in TASKS:
        task_rows = [r for r in rows if r["task_type"] == task]
        assert len(task_rows) >= 10, task
        model, prior = summary["tasks"][task]["score"], _prior_score(task_rows)
        # measured on these twenty rooms (2026-12-07, the weights after the polish stage): appearance
        # order 63.8 vs 29.3 (58 questions), object size 75.1 vs 33.5 (74). Ten rooms were too few:
        # on the first ten these weights scored 54.2 vs 37.5 on appearance order (24 questions, one
        # answer from the margin), the weights before the polish 62.5; the random init scored 0 on both
        assert model >= prior + 0.15, (task, model, prior)


def test_sampling_coverage_scores_each_sampler_against_the_true_geometry(held_out):
    from ros2_spatial_mllm.inference import SpatialMLLM
    from ros2_spatial_mllm.sampling import space_aware_sample
    from training.data.dataset import sensor_frame_voxels
    from training.sampling_coverage import coverage_of, measure

    root, rows = held_out
    ids = [int(i) for i in rows[0]["frame_indices"]]
    truth = sensor_frame_voxels((root / rows[0]["frames_path"]).parent, ids)
    assert coverage_of(truth, list(range(len(ids)))) == 1.0 and coverage_of(truth, []) == 0.0
    assert 0.0 < coverage_of(truth, [0]) < coverage_of(truth, space_aware_sample(truth, 8).indices) < 1.0
    model = SpatialMLLM.load()
    try:
        got = measure(model, root, split="all", scenes=10, k=8, candidates=16)
    finally:
        model.close()
    assert got["scenes"] == 10
    for name in ("uniform", "space_aware_sensor", "space_aware_model"):
        assert 0.0 < got[name] < 1.0, (name, got)
    # greedy max-coverage on the true voxels covers more than evenly spaced frames
    assert got["space_aware_sensor"] > got["uniform"], got
    assert got["camera_position_error_m"] > 0.0 and got["depth_abs_error_m"] > 0.0, got
    # the shipped pair-pose head reads each frame's turn off the images (measured 2026-12-05 on 30
    # test rooms, 32 candidates: heading correlation 0.99, rotation error 25 deg against 92 deg for
    # "no motion"); the camera head it replaced scored 0.28 and 92 deg
    assert got["camera_heading_correlation"] > 0.9, got
    assert got["camera_rotation_error_deg"] < 0.5 * got["camera_rotation_error_no_motion_deg"], got
    assert got["camera_position_error_m"] < got["camera_position_error_no_motion_m"], got


def test_geometry_errors_are_zero_for_the_true_geometry(held_out):
    import cv2
    import numpy as np

    from training.sampling_coverage import geometry_errors

    root, rows = held_out
    scene = (root / rows[0]["frames_path"]).parent
    ids = [int(i) for i in rows[0]["frame_indices"]][::4]
    cams = json.loads((scene / "cameras.json").read_text())
    cam_from_world = [np.asarray(cams["camera_from_world"][f], np.float64) for f in ids]
    first_inv = np.linalg.inv(cam_from_world[0])
    depth = np.stack([cv2.imread(str(scene / "depth" / f"{f:06d}.png"), cv2.IMREAD_UNCHANGED) for f in ids]) * 1e-3
    truth = {"extrinsics": np.stack([(c @ first_inv)[:3] for c in cam_from_world]), "depth": depth}
    got = geometry_errors(truth, scene, ids)
    assert got["camera_position_error_m"] < 1e-4 and got["depth_abs_error_m"] < 1e-3, got
    assert got["camera_rotation_error_deg"] < 1e-3 < got["camera_rotation_error_no_motion_deg"], got
    assert got["camera_heading_correlation"] > 0.999, got
    # the "no motion" guess is off by each true camera centre's distance from the first one
    centres = [np.linalg.inv(c @ first_inv)[:3, 3] for c in cam_from_world]
    assert abs(got["camera_position_error_no_motion_m"] - np.mean([np.linalg.norm(c) for c in centres])) < 1e-6, got
    identity = dict(truth, extrinsics=np.broadcast_to(np.eye(4)[:3], truth["extrinsics"].shape).copy())
    got_identity = geometry_errors(identity, scene, ids)
    assert abs(got_identity["camera_position_error_m"] - got["camera_position_error_no_motion_m"]) < 1e-6
    assert abs(got_identity["camera_rotation_error_deg"] - got["camera_rotation_error_no_motion_deg"]) < 1e-6
    assert got_identity["camera_heading_correlation"] == 0.0
    # headings read backwards (each turn mirrored) correlate negatively
    mirror = np.diag([-1.0, 1.0, 1.0])
    mirrored = dict(truth, extrinsics=truth["extrinsics"].copy())
    mirrored["extrinsics"][:, :, :3] = mirror @ truth["extrinsics"][:, :, :3] @ mirror
    assert geometry_errors(mirrored, scene, ids)["camera_heading_correlation"] < -0.999
    # a trajectory shifted by 1 m (camera centres move by +1 m along x) is 1 m off on every frame but the first
    shifted = dict(truth, extrinsics=truth["extrinsics"].copy())
    shifted["extrinsics"][1:, :, 3] -= shifted["extrinsics"][1:, :, :3] @ np.array([1.0, 0.0, 0.0])
    got = geometry_errors(shifted, scene, ids)
    assert abs(got["camera_position_error_m"] - (len(ids) - 1) / len(ids)) < 1e-4, got
