"""Conformance of our ground truth with the published VSI-Bench answers (ScanNet part)."""
import json
from pathlib import Path

import pytest

from training.data.categories import category_key, match_category
from training.data.cli import main as data_main
from training.data.conformance import run_conformance

DATA = Path(__file__).resolve().parents[1] / "data" / "vsibench"
META = DATA / "scannet_meta_info_val.json"
QUESTIONS = DATA / "scannet_questions.json"


@pytest.fixture(scope="module")
def report():
    return run_conformance(META, QUESTIONS)


def test_targets_on_scannet(report):
    tasks = report["tasks"]
    for task in ("object_size_estimation", "room_size_estimation", "object_rel_distance",
                 "object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard"):
        assert tasks[task]["checked"] > 0
        assert tasks[task]["agree_rate"] == 1.0, (task, tasks[task]["disagree_examples"])
    assert tasks["object_counting"]["agree_rate"] >= 0.99
    assert tasks["object_abs_distance"]["within_0.1m_rate"] >= 0.97
    # every box-determined question is checked, none silently dropped
    assert report["total"]["unresolved"] == 0
    assert report["total"]["checked"] == 2071 - 390 - 64
    assert report["skipped_video_only"] == {"obj_appearance_order": 390, "route_planning": 64}


def test_numeric_mra_close_to_one(report):
    for task in ("object_counting", "object_size_estimation", "room_size_estimation", "object_abs_distance"):
        assert report["tasks"][task]["mra"] > 0.99


def test_category_matching_is_robust():
    assert category_key("Trash_Bins") == category_key("trash bin")
    assert match_category("washing machine", ["Washing_Machine", "table"]) == "Washing_Machine"
    assert match_category("shelves", ["shelf"]) == "shelf"
    assert match_category("glass", ["glas"]) is None
    assert match_category("trashbin", ["trash bin"]) == "trash bin"


def test_renamed_categories_give_the_same_answers(tmp_path, report):
    """ScanNet++/ARKitScenes spell categories differently: underscores, capitals, plurals."""
    meta = json.loads(META.read_text())
    def respell(name):
        return name.replace(" ", "_").title() + ("s" if not name.endswith("s") else "")
    renamed = {}
    for scene, d in meta.items():
        d = dict(d)
        d["object_counts"] = {respell(k): v for k, v in d["object_counts"].items()}
        d["object_bbox"] = {respell(k): v for k, v in d["object_bbox"].items()}
        renamed[scene] = d
    path = tmp_path / "meta_renamed.json"
    path.write_text(json.dumps(renamed))
    other = run_conformance(path, QUESTIONS)
    for task, row in report["tasks"].items():
        assert other["tasks"][task]["agree"] == row["agree"], task
        assert other["tasks"][task]["unresolved"] == 0


def test_unresolved_questions_are_reported(tmp_path):
    questions = json.loads(QUESTIONS.read_text())[:40]
    questions.append({"problem_id": -1, "problem": "How many unicorn(s) are in this room?",
                      "original_question_type": "object_counting", "solution": "<answer>1</answer>",
                      "path": "./scannet/scene0251_00.mp4"})
    questions.append({"problem_id": -2, "problem": "How many chair(s) are in this room?",
                      "original_question_type": "object_counting", "solution": "<answer>1</answer>",
                      "path": "./scannet/no_such_scene.mp4"})
    qpath = tmp_path / "q.json"
    qpath.write_text(json.dumps(questions))
    rep = run_conformance(META, qpath)
    unresolved = rep["tasks"]["object_counting"]["unresolved_examples"]
    reasons = {u["id"]: u["reason"] for u in unresolved}
    assert "unicorn" in reasons[-1] and "no_such_scene" in reasons[-2]


def test_cli_writes_report(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert data_main(["conformance", "--meta", str(META), "--questions", str(QUESTIONS), "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["tasks"]["object_size_estimation"]["agree_rate"] == 1.0
    capsys.readouterr()
    assert data_main(["conformance", "--meta", str(tmp_path / "missing.json"), "--questions", str(QUESTIONS)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.json" in err[0]


def test_pruned_box_distance_equals_brute_force():
    import numpy as np
    from training.data.meta_info import ObjectBox
    from training.data.spatial_gt import box_distance, box_grid_points
    rng = np.random.default_rng(0)
    for _ in range(25):
        boxes = []
        for _ in range(2):
            q, _r = np.linalg.qr(rng.normal(size=(3, 3)))
            q *= np.sign(np.linalg.det(q))
            ext = rng.uniform(0.02, 0.5, 3)              # includes thin boxes (one sample per axis)
            boxes.append(ObjectBox("x", rng.uniform(-1, 1, 3), ext, q))
        pa, pb = box_grid_points(boxes[0]), box_grid_points(boxes[1])
        brute = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1).min())
        assert abs(box_distance(*boxes) - brute) < 1e-9
