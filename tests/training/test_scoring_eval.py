"""spatial-mllm-eval end to end with the embedded tiny model on a 2-question split."""
import json

import pytest

from ros2_spatial_mllm.model.processing import grid_times
from ros2_spatial_mllm.sampling import space_aware_sample, window_slots
from training.data.cli import main as data_main
from training.data.dataset import sensor_frame_voxels
from training.evaluate import main as eval_main


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    assert data_main(["generate", "--scenes", "3", "--questions-per-scene", "2", "--out", str(out), "--workers", "1",
                      "--frames", "6", "--width", "112", "--height", "84", "--save-depth", "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("sampling", ["uniform", "space_aware", "space_aware_sensor"])
def test_eval_two_questions(tiny_dataset, tmp_path, sampling, capsys):
    out = tmp_path / sampling
    rc = eval_main(["--preset", "tiny", "--data", str(tiny_dataset), "--split", "test", "--num-frames", "4",
                    "--sampling", sampling, "--max-new-tokens", "4", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2
    rows = [json.loads(l) for l in (tiny_dataset / "test.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in rows]
    for p, r in zip(preds, rows):
        assert 0.0 <= p["score"] <= 1.0
        if r["family"] == "vsibench":
            assert len(p["frames"]) == 4 and set(p["frames"]) <= set(r["frame_indices"])
            # where the picks lie among the question's frames (a frame_time_positions model reads it)
            places = [r["frame_indices"].index(f) for f in p["frames"]]
            assert p["frame_slots"] == [round(x, 4) for x in window_slots(places, 0, len(r["frame_indices"]) - 1)]
            if sampling == "uniform":  # truncated linspace picks still get the evenly spaced ids
                assert (grid_times(p["frame_slots"], 2, 2.0) * 2).round().tolist() == [0.0, 2.0]
            if sampling == "space_aware_sensor":  # the voxel max-coverage picks on the rendered depth + poses
                ids = r["frame_indices"]
                voxels = sensor_frame_voxels((tiny_dataset / r["frames_path"]).parent, ids)
                assert p["frames"] == [ids[i] for i in space_aware_sample(voxels, 4).indices]
        else:
            assert p["frame_slots"] is None
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 2 and results["run"]["sampling"] == sampling
    assert (out / "results.png").stat().st_size > 0 and "| task |" in (out / "results.md").read_text()


def test_eval_missing_split_is_one_line_error(tiny_dataset, tmp_path, capsys):
    rc = eval_main(["--preset", "tiny", "--data", str(tiny_dataset), "--split", "nope", "--out", str(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_eval_sensor_sampling_without_depth_is_one_line_error(tiny_dataset, tmp_path, capsys):
    import shutil

    data = tmp_path / "no_depth"
    shutil.copytree(tiny_dataset, data)
    for depth_dir in data.glob("scenes/*/*/depth"):
        shutil.rmtree(depth_dir)
    rc = eval_main(["--preset", "tiny", "--data", str(data), "--split", "test", "--num-frames", "2",
                    "--sampling", "space_aware_sensor", "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "save_depth" in err[0], err
