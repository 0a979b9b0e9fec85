"""training/eval/compare.py: paired per-task comparison of two evaluation runs, rooms bootstrapped."""
import json

import numpy as np
import pytest

from training.eval.compare import average_runs, compare, load_predictions, main, room_of
from training.eval.scorer import VSI_MAIN_TASKS, VSI_REL_DIRECTION, aggregate

VSI_TASKS = [t for t in VSI_MAIN_TASKS if t != "object_rel_direction"] + list(VSI_REL_DIRECTION)


def _run(seed: int, rooms: int = 30, per_task: int = 3, flip: float = 0.0, flip_task: str | None = None):
    """A synthetic run: rooms x tasks x questions with random 0/1 scores (seeded); `flip` of the
    wrong answers of `flip_task` turned right."""
    rng = np.random.default_rng(seed)
    rows = {}
    for r in range(rooms):
        for k, t in enumerate(VSI_TASKS + ["multispa_depth_compare"]):
            for q in range(per_task):
                qid = f"test_{r:08d}_{k * per_task + q:03d}"
                rows[qid] = {"id": qid, "task_type": t, "family": "multispa" if t.startswith("multispa") else "vsibench",
                             "score": float(rng.random() < 0.5)}
    if flip_task:
        flip_rng = np.random.default_rng(seed + 1)
        for row in rows.values():
            if row["task_type"] == flip_task and row["score"] == 0.0 and flip_rng.random() < flip:
                row["score"] = 1.0
    return rows


def _write_jsonl(path, run) -> None:
    """A run's rows as a predictions.jsonl (what spatial-mllm-eval writes)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in run.values()))


def test_room_of_strips_the_question_index():
    assert room_of("test_20000000_008") == "test_20000000"
    assert room_of("val_3_a_12") == "val_3_a"


def test_identical_runs_agree_exactly():
    a = _run(0)
    result = compare(a, {k: dict(v) for k, v in a.items()}, rounds=200)
    assert result["vsibench"]["diff"] == 0.0
    assert result["vsibench"]["low"] == result["vsibench"]["high"] == 0.0
    assert result["agree"] is True
    assert result["rooms"] == 30 and result["questions"] == len(a)


def test_point_scores_match_the_evaluator_aggregate():
    a, b = _run(0), _run(0, flip=0.5, flip_task="object_counting")
    result = compare(a, b, rounds=50)
    for run, key in ((a, "a"), (b, "b")):
        summary = aggregate(run.values())
        assert result["vsibench"][key] == pytest.approx(summary["vsibench"]["overall"])
        assert result["multispa"][key] == pytest.approx(summary["multispa"]["overall"])
        assert result["tasks"]["object_counting"][key] == pytest.approx(summary["tasks"]["object_counting"]["score"])


def test_a_real_gain_on_one_task_is_found_and_bounded():
    a, b = _run(1), _run(1, flip=0.8, flip_task="object_counting")
    result = compare(a, b, rounds=1000, seed=3)
    gain = result["tasks"]["object_counting"]
    assert gain["diff"] > 0.3                                  # ~0.8 of the ~half that were wrong
    assert 0 < gain["low"] <= gain["diff"] <= gain["high"]
    # one of eight VSI tasks moved: the macro moves by an eighth of it, other tasks not at all
    assert result["vsibench"]["diff"] == pytest.approx(gain["diff"] / 8)
    assert result["tasks"]["route_planning"]["diff"] == 0.0
    assert result["multispa"]["low"] == result["multispa"]["high"] == 0.0
    assert result["agree"] is False


def test_interval_width_matches_the_sampling_error_of_independent_runs():
    # two runs of unrelated fair coin flips, 30 rooms x 3 questions per task: each VSI task's
    # difference has variance 0.5 / 90, relative direction (3 sub-types averaged) a third of that,
    # so the macro difference has sd sqrt((7 * 0.5/90 + 0.5/270) / 64) = 0.025: a 95 % interval
    # about 0.10 wide
    for seeds in ((4, 5), (6, 7)):
        result = compare(_run(seeds[0]), _run(seeds[1]), rounds=2000, seed=0)
        vsi = result["vsibench"]
        assert vsi["low"] <= vsi["diff"] <= vsi["high"]
        assert 0.07 < vsi["high"] - vsi["low"] < 0.13


def test_different_question_sets_are_refused(tmp_path, capsys):
    a = _run(0)
    b = dict(a)
    b.pop(next(iter(b)))
    with pytest.raises(ValueError, match="different questions"):
        compare(a, b)
    for name, run in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        _write_jsonl(tmp_path / name / "predictions.jsonl", run)
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compare: the runs score different questions")


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    a, b = _run(0), _run(0, flip=0.5, flip_task="route_planning")
    for name, run in (("a.jsonl", a), ("b.jsonl", b)):
        _write_jsonl(tmp_path / name, run)
    out = tmp_path / "diff.json"
    assert main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--rounds", "100", "--names", "old", "new",
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| task | n | old | new | new - old |" in table and "**VSI-Bench macro**" in table
    saved = json.loads(out.read_text())
    assert saved["tasks"]["route_planning"]["diff"] > 0
    assert load_predictions(tmp_path / "a.jsonl") == a


def test_missing_or_malformed_files_give_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("compare: no predictions file")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_type": "x"}\n')
    assert main([str(bad), str(bad)]) == 2
    assert "bad.jsonl:1: not a prediction row" in capsys.readouterr().err


def test_pipeline_report_carries_the_paired_interval(tmp_path):
    from training.pipeline import report

    runs = {"uniform": _run(0), "space_aware": _run(0, flip=0.6, flip_task="obj_appearance_order")}
    for name, run in runs.items():
        (tmp_path / "eval" / name).mkdir(parents=True)
        _write_jsonl(tmp_path / "eval" / name / "predictions.jsonl", run)
    summaries = {name: aggregate(run.values()) for name, run in runs.items()}
    checks = report(summaries, tmp_path, "test", eval_dir=tmp_path / "eval")["checks"]
    low, high = checks["space_aware_minus_uniform_vsibench_interval95"]
    assert 0 < low <= checks["space_aware_minus_uniform_vsibench_points"] <= high
    assert "space_aware_minus_uniform_vsibench_interval95" in (tmp_path / "report.md").read_text()


def test_interval_resamples_rooms_not_questions():
    # B gains on every question of half the rooms: a room-level effect. Resampling rooms must see
    # that spread; resampling single questions (every question its own room) understates it.
    a = _run(8)
    b = {k: {**v, "score": 1.0 if int(room_of(k).split("_")[1]) % 2 == 0 else v["score"]} for k, v in a.items()}
    by_room = compare(a, b, rounds=1000)["vsibench"]

    def alone(run):  # the same rows, each question in a room of its own
        return {f"q{n}_{i}_000": {**row, "id": f"q{n}_{i}_000"} for n, (i, row) in enumerate(sorted(run.items()))}

    by_question = compare(alone(a), alone(b), rounds=1000)["vsibench"]
    assert by_room["diff"] == pytest.approx(by_question["diff"])
    assert by_room["high"] - by_room["low"] > 1.5 * (by_question["high"] - by_question["low"])


def test_too_few_rooms_per_task_gives_no_interval(capsys, tmp_path):
    # four rooms, each asking one task only: most resamples miss a task, so no honest interval
    rows = {}
    for r, task in enumerate(VSI_TASKS[:4]):
        for q in range(5):
            qid = f"test_{r:08d}_{q:03d}"
            rows[qid] = {"id": qid, "task_type": task, "family": "vsibench", "score": float(q % 2)}
    other = {k: {**v, "score": 1.0} for k, v in rows.items()}
    result = compare(rows, other, rounds=500)
    assert result["vsibench"]["diff"] > 0
    assert result["vsibench"]["low"] is None and result["vsibench"]["high"] is None
    assert result["agree"] is None
    for name, run in (("a.jsonl", rows), ("b.jsonl", other)):
        _write_jsonl(tmp_path / name, run)
    assert main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--rounds", "100"]) == 0
    assert "too few rooms" in capsys.readouterr().out


def test_the_same_ids_must_be_the_same_questions():
    a = _run(0)
    b = {k: dict(v) for k, v in a.items()}
    first = next(iter(b))
    b[first]["task_type"] = "route_planning" if b[first]["task_type"] != "route_planning" else "object_counting"
    with pytest.raises(ValueError, match="not the same data set"):
        compare(a, b)
    c = {k: {**v, "answer": "A"} for k, v in a.items()}
    d = {k: {**v, "answer": "B" if k == first else "A"} for k, v in a.items()}
    with pytest.raises(ValueError, match="another task or answer"):
        compare(c, d)


@pytest.mark.parametrize("line", ['[1, 2]', '{"id": "r_1_000", "task_type": "x", "score": null}',
                                  '{"id": "r_1_000", "score": 1}', 'not json'])
def test_bad_rows_are_one_line_errors(tmp_path, capsys, line):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    assert main([str(bad), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compare: ") and "bad.jsonl:1: not a prediction row" in err[0]


def test_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    a = _run(0)
    _write_jsonl(tmp_path / "a.jsonl", a)
    assert main([str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl"), "--rounds", "10",
                 "--out", str(tmp_path / "missing" / "diff.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("compare: ") and len(captured.err.splitlines()) == 1


def test_an_arm_of_several_seeds_is_the_mean_of_its_runs(tmp_path, capsys):
    # two seeds per arm: the pooled difference is the mean of the two per-seed differences
    a0, a1 = _run(0), _run(1)
    b0, b1 = _run(0, flip=0.4, flip_task="route_planning"), _run(1, flip=0.1, flip_task="route_planning")
    per_seed = [compare(a, b, rounds=50)["vsibench"]["diff"] for a, b in ((a0, b0), (a1, b1))]
    pooled = compare(average_runs([a0, a1]), average_runs([b0, b1]), rounds=50)
    assert pooled["vsibench"]["diff"] == pytest.approx(sum(per_seed) / 2)
    assert pooled["tasks"]["route_planning"]["diff"] > 0 and pooled["tasks"]["route_planning"]["low"] is not None
    paths = {}
    for name, run in (("a0", a0), ("a1", a1), ("b0", b0), ("b1", b1)):
        paths[name] = tmp_path / f"{name}.jsonl"
        _write_jsonl(paths[name], run)
    out = tmp_path / "pooled.json"
    assert main([f"{paths['a0']},{paths['a1']}", f"{paths['b0']},{paths['b1']}", "--rounds", "50",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["vsibench"]["diff"] == pytest.approx(pooled["vsibench"]["diff"])
    capsys.readouterr()
    # a "seed" that scores other questions is not a seed of the same arm: one line, exit 2
    other = {k.replace("test_", "val_"): {**v, "id": k.replace("test_", "val_")} for k, v in a1.items()}
    paths["other"] = tmp_path / "other.jsonl"
    _write_jsonl(paths["other"], other)
    assert main([f"{paths['a0']},{paths['other']}", str(paths["b0"])]) == 2
    assert "run 2 of one arm scores other questions" in capsys.readouterr().err
