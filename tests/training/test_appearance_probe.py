"""training.appearance_probe: the four sighting statuses, category visibility from instance masks
(the data engine's 0.2 % rule), accuracy split per status, one-line errors."""
import json

import cv2
import numpy as np
import pytest

from training.appearance_probe import category_visibility, main, probe, sighting_status

# a: frames 1 and 5; b: frame 3; c: frame 6. True order over the whole video: a, b, c.
VISIBLE = {"a": {1, 5}, "b": {3}, "c": {6}}


@pytest.mark.parametrize("picked, status", [
    ([1, 3, 6], "recoverable"),     # a@1, b@3, c@6
    ([6, 3, 1], "recoverable"),     # picks are read in time order
    ([1, 6], "unseen"),             # b in neither
    ([3, 5, 6], "reversed"),        # b@3 before a@5
    ([5, 6], "unseen"),
])
def test_sighting_status(picked, status):
    assert sighting_status(VISIBLE, picked, ["a", "b", "c"]) == status


def test_two_first_sightings_in_one_frame_are_a_tie():
    visible = {"a": {1, 4}, "b": {4}, "c": {7}}
    assert sighting_status(visible, [4, 7], ["a", "b", "c"]) == "tie"
    assert sighting_status(visible, [1, 4, 7], ["a", "b", "c"]) == "recoverable"


def _scene(root):
    """Two frames 40x50: instance 1 (chair) fills 30 px in frame 0 and 3 px in frame 1; instance 2
    (table) fills 10 px (below the 20-pixel floor) in frame 0 and 200 px in frame 1."""
    scene = root / "scenes" / "test" / "s0"
    (scene / "instance").mkdir(parents=True)
    masks = np.zeros((2, 40, 50), np.uint16)
    masks[0].flat[:30] = 1
    masks[0].flat[100:110] = 2
    masks[1].flat[:3] = 1
    masks[1].flat[100:300] = 2
    for i, m in enumerate(masks):
        cv2.imwrite(str(scene / "instance" / f"{i:06d}.png"), m)
    box = {"centroid": [0, 0, 0], "axesLengths": [1, 1, 1]}
    meta = {"object_bbox": {"chair": [dict(box, instance_id=1)], "table": [dict(box, instance_id=2)]}}
    (scene / "meta.json").write_text(json.dumps({"s0": meta}))
    return scene


def test_category_visibility_uses_the_data_engine_rule(tmp_path):
    assert category_visibility(_scene(tmp_path), [0, 1]) == {"chair": {0}, "table": {1}}


def test_probe_splits_accuracy_by_status(tmp_path):
    _scene(tmp_path)
    row = {"id": "q1", "task_type": "obj_appearance_order", "family": "vsibench", "frame_indices": [0, 1],
           "frames_path": "scenes/test/s0/frames", "ground_truth": "chair, table"}
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(dict(row, id="q2")) + "\n")
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "q1", "task_type": "obj_appearance_order", "frames": [0, 1], "score": 1.0})
                     + "\n" + json.dumps({"id": "q2", "task_type": "obj_appearance_order", "frames": [1], "score": 0.0})
                     + "\n")
    out = probe(tmp_path, preds)
    assert out["questions"] == 2 and out["accuracy"] == 0.5
    assert out["picked"]["recoverable"] == {"share": 0.5, "accuracy": 1.0}
    assert out["picked"]["unseen"] == {"share": 0.5, "accuracy": 0.0}       # chair is not visible in frame 1
    assert out["all_frames"]["recoverable"]["share"] == 1.0


def test_missing_predictions_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--predictions", str(tmp_path / "none.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("appearance_probe: error:") and err.count("\n") == 1
