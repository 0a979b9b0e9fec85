"""Curriculum: difficulty buckets and weak-cell ranking by hand, then two real rounds on the
tiny preset with the data engine's generator and scorer, checking the JSON-lines request log."""
import json

import pytest

from training.curriculum import choose_weak_cells, difficulty_of, run_curriculum, task_medians


def test_difficulty_buckets():
    assert difficulty_of({"task_type": "object_rel_direction_hard", "options": ["A. x", "B. y"]}) == "hard"
    assert difficulty_of({"task_type": "route_planning", "options": ["A. a", "B. b"]}) == "easy"
    assert difficulty_of({"task_type": "x", "options": ["A. a", "B. b", "C. c", "D. d"]}) == "hard"
    recs = [{"task_type": "object_counting", "answer": str(v)} for v in (1, 2, 3, 8)]
    med = task_medians(recs)
    assert med == {"object_counting": 2.5}
    assert [difficulty_of(r, med) for r in recs] == ["easy", "easy", "hard", "hard"]
    assert difficulty_of({"task_type": "cam", "answer": "(3, 4, 0)"}, {"cam": 4.0}) == "hard"  # norm 5 > 4


def test_weak_cells_ranked_by_score_and_confidence():
    table = [{"task_type": "a", "difficulty": "easy", "n": 4, "score": 0.9, "confidence": 0.9},
             {"task_type": "b", "difficulty": "hard", "n": 4, "score": 0.1, "confidence": 0.8},
             {"task_type": "c", "difficulty": "easy", "n": 4, "score": 0.2, "confidence": 0.1}]
    weak = choose_weak_cells(table, top_k=2, score_weight=0.5)
    assert [c["task_type"] for c in weak] == ["c", "b"]
    assert weak[0]["weakness"] == pytest.approx(0.85) and weak[1]["weakness"] == pytest.approx(0.55)


def test_two_rounds_log_requests(tmp_path):
    from training.data.generate import GenerateConfig, generate_dataset
    from training.fixtures import tiny_assets_for_tests

    gen = {"num_scenes": 3, "questions_per_scene": 12, "num_frames": 8, "width": 112, "height": 84}
    data = tmp_path / "data"
    generate_dataset(data, GenerateConfig(**gen, split_fractions=(0.34, 0.33, 0.33)), workers=1, progress=False)
    out = tmp_path / "cur"
    cfg = {"seed": 0, "output_dir": str(out), "strategy": "none",
           "model": {"init": "random", "assets_dir": str(tiny_assets_for_tests(tmp_path))},
           "data": {"root": str(data), "num_frames": 4},
           "sft": {"batch_size": 2, "warmup_steps": 1, "lr": {"connector": 1e-3, "llm": 1e-3}},
           "curriculum": {"rounds": 2, "steps_per_round": 2, "probe_size": 6, "top_k": 2, "questions_per_round": 6,
                          "scenes_per_round": 1, "max_new_tokens": 6,
                          "generator": {**gen, "questions_per_scene": 200}}}  # every question a new scene has
    result = run_curriculum(cfg)
    lines = [json.loads(l) for l in (out / "requests.jsonl").read_text().splitlines()]
    assert [l["round"] for l in lines] == [0, 1]
    for entry in lines:
        assert sum(c["n"] for c in entry["cells"]) == 6
        assert all(0.0 <= c["score"] <= 1.0 and 0.0 < c["confidence"] <= 1.0 for c in entry["cells"])
        weakness = [c["weakness"] for c in entry["weak"]]
        assert weakness == sorted(weakness, reverse=True) and len(weakness) == 2
        assert set(entry["received"]) <= set(entry["request"]["families"])  # only what was asked for
    assert sum(sum(l["received"].values()) for l in lines) > 0  # the generator delivered weak-cell questions
    assert lines[1]["pool_size"] >= lines[0]["pool_size"] > 12
    assert (out / "round1" / "final" / "config.json").is_file() and result["final_dir"].endswith("final")
