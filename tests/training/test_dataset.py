"""Dataset generation: files, resume, disjoint splits, Hugging Face loading."""
import json

from training.data.cli import main as data_main
from training.data.splits import SPLIT_SEED_BASE, scene_jobs, split_counts


def test_split_seeds_are_disjoint():
    jobs = scene_jobs(1000)
    assert split_counts(1000) == [800, 100, 100]
    seeds = {}
    for split, seed, _ in jobs:
        seeds.setdefault(split, set()).add(seed)
    assert not (seeds["train"] & seeds["val"]) and not (seeds["val"] & seeds["test"]) and not (seeds["train"] & seeds["test"])
    assert min(seeds["test"]) == SPLIT_SEED_BASE["test"]


def test_generate_resume_and_load(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["generate", "--scenes", "3", "--questions-per-scene", "12", "--out", str(out), "--workers", "1",
            "--frames", "12", "--width", "96", "--height", "72", "--no-progress", "--save-depth"]
    assert data_main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["generated_now"] == 3 and first["questions"] == 36
    assert {s: v["scenes"] for s, v in first["splits"].items()} == {"train": 1, "val": 1, "test": 1}
    assert data_main(args) == 0                              # resume: nothing left to do
    again = json.loads(capsys.readouterr().out)
    assert again["generated_now"] == 0 and again["questions"] == 36
    rows = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    row = rows[0]
    for key in ("question", "options", "answer", "task_type", "scene_id", "frame_indices", "frames_path"):
        assert key in row
    for r in rows:
        for idx in r["frame_indices"]:
            assert (out / r["frames_path"] / f"{idx:06d}.jpg").is_file()
    assert {r["family"] for r in rows} == {"vsibench", "multispa"}
    assert (out / "scenes" / "test" / row["scene_id"] / "depth" / "000000.png").is_file()
    train_scenes = {json.loads(l)["scene_id"] for l in (out / "train.jsonl").read_text().splitlines()}
    assert not train_scenes & {r["scene_id"] for r in rows}
    from datasets import load_dataset
    ds = load_dataset("parquet", data_files={"test": str(out / "test.parquet")}, cache_dir=str(tmp_path / "hf"))["test"]
    assert len(ds) == 12 and ds[0]["question"] == row["question"]
    ds = load_dataset("json", data_files={"train": str(out / "train.jsonl")}, cache_dir=str(tmp_path / "hf"))["train"]
    assert len(ds) == 12


def test_generate_bad_arguments_one_line_error(tmp_path, capsys):
    assert data_main(["generate", "--scenes", "0", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scenes" in err[0]


def test_generate_with_two_workers_matches_one_worker(tmp_path, capsys):
    base = ["--scenes", "3", "--questions-per-scene", "5", "--frames", "6", "--width", "64", "--height", "48", "--no-progress"]
    assert data_main(["generate", "--out", str(tmp_path / "w1"), "--workers", "1"] + base) == 0
    assert data_main(["generate", "--out", str(tmp_path / "w2"), "--workers", "2"] + base) == 0
    capsys.readouterr()
    for split in ("train", "val", "test"):
        a = (tmp_path / "w1" / f"{split}.jsonl").read_text()
        b = (tmp_path / "w2" / f"{split}.jsonl").read_text()
        assert a == b                                    # deterministic from the seeds, whatever the workers


def test_a_failing_scene_is_recorded_not_fatal(tmp_path, capsys, monkeypatch):
    """One scene raising (here: its scene builder) leaves the others written and is listed."""
    import training.data.scenes as scenes
    from training.data.generate import GenerateConfig, generate_dataset

    real_make_scene = scenes.make_scene
    bad_seed = SPLIT_SEED_BASE["val"]

    def make_scene(seed, *args, **kwargs):
        if seed == bad_seed:
            raise ValueError("zero-size array to reduction operation minimum which has no identity")
        return real_make_scene(seed, *args, **kwargs)

    monkeypatch.setattr(scenes, "make_scene", make_scene)
    cfg = GenerateConfig(num_scenes=3, questions_per_scene=4, num_frames=6, width=64, height=48)
    summary = generate_dataset(tmp_path / "ds", cfg, workers=1, progress=False)
    assert summary["failures"] == [{"failed": True, "scene_id": f"val_{bad_seed:08d}", "split": "val", "seed": bad_seed,
                                    "error": "ValueError: zero-size array to reduction operation minimum which has no identity"}]
    assert json.loads((tmp_path / "ds" / "failures.json").read_text()) == summary["failures"]
    assert summary["generated_now"] == 2 and summary["questions"] == 8
    assert {s: v["scenes"] for s, v in summary["splits"].items()} == {"train": 1, "val": 0, "test": 1}
    assert (tmp_path / "ds" / "val.jsonl").read_text() == ""
    monkeypatch.setattr(scenes, "make_scene", real_make_scene)   # resume retries only the failed scene
    again = generate_dataset(tmp_path / "ds", cfg, workers=1, progress=False)
    assert again["failures"] == [] and again["generated_now"] == 1 and again["questions"] == 12


def test_generate_camera_pace_dwell_renders_the_dwell_walk(tmp_path, capsys):
    import numpy as np

    from training.data.scenes import make_scene

    out = tmp_path / "dwell"
    assert data_main(["generate", "--scenes", "1", "--questions-per-scene", "4", "--out", str(out), "--workers", "1",
                      "--frames", "12", "--width", "96", "--height", "72", "--split-fractions", "0,0,1",
                      "--camera-pace", "dwell", "--no-progress"]) == 0
    capsys.readouterr()
    seed = SPLIT_SEED_BASE["test"]
    cameras = json.loads((out / "scenes" / "test" / f"test_{seed:08d}" / "cameras.json").read_text())
    want = make_scene(seed, num_frames=12, pace="dwell").world_from_camera
    assert np.allclose(cameras["world_from_camera"], want, atol=1e-5)
    assert not np.allclose(cameras["world_from_camera"], make_scene(seed, num_frames=12).world_from_camera, atol=1e-3)
