"""Scorer: VSI-Bench and MultiSPA rules on hand-checked cases."""
import json

import pytest

from training.eval.scorer import aggregate, score_multispa, score_record, score_vsibench, vsibench_word
from training.eval.tables import markdown_table, write_tables


@pytest.mark.parametrize("reply,gt,expected", [
    ("4", "4.0", 1.0),
    ("3.5 meters.", "4.0", 0.8),     # rel. error 0.125 < 1-θ for θ = .50 ... .85 -> 8/10
    ("3", "4", 0.5),                 # 0.25 < 1-θ for θ = .50 ... .70 -> 5/10
    ("2", "4", 0.0),                 # 0.5 is not < 0.5
    ("4.1", "4.0", 1.0),             # 0.025 < 0.05
    ("about 4", "4", 0.0),           # first word is not a number
    ("three", "3", 0.0),
    ("<answer>150</answer>", "150", 1.0),
])
def test_vsibench_numeric(reply, gt, expected):
    assert score_vsibench(reply, gt, numeric=True) == pytest.approx(expected)


@pytest.mark.parametrize("reply,answer,expected", [
    ("B", "B", 1.0), ("B.", "B", 1.0), ("b", "B", 1.0), ("B. the table", "B", 1.0),
    ("The answer is B", "B", 0.0), ("C", "B", 0.0), ("", "B", 0.0),
])
def test_vsibench_choice_first_word(reply, answer, expected):
    assert score_vsibench(reply, answer, numeric=False) == expected


def test_first_word_strips_period_only_at_end():
    assert vsibench_word("3.5 m") == "3.5"
    assert vsibench_word("A.") == "A"


def test_macro_average_rel_direction_subtypes_first():
    items = ([{"task_type": "object_rel_direction_easy", "score": 1.0}] * 2
             + [{"task_type": "object_rel_direction_medium", "score": 0.0}]
             + [{"task_type": "object_rel_direction_hard", "score": 0.5}]
             + [{"task_type": "object_counting", "score": 0.9}, {"task_type": "object_counting", "score": 0.7}])
    summary = aggregate(items)
    # sub-types averaged first: (1 + 0 + .5) / 3 = .5, not the item mean .625
    assert summary["vsibench"]["tasks"]["object_rel_direction"] == pytest.approx(0.5)
    assert summary["vsibench"]["tasks"]["object_counting"] == pytest.approx(0.8)
    assert summary["vsibench"]["overall"] == pytest.approx((0.5 + 0.8) / 2)
    assert summary["vsibench"]["complete"] is False


def test_multispa_rules():
    assert score_multispa("12", "10", "number_rel20") == 1.0
    assert score_multispa("12.5", "10", "number_rel20") == 0.0
    assert score_multispa("-11 degrees", "-10", "number_rel20") == 1.0
    assert score_multispa("(1.2, 0, 0)", "(1, 0, 0)", "vector") == 1.0
    assert score_multispa("(1.25, 0, 0)", "(1, 0, 0)", "vector") == 0.0
    assert score_multispa("(1.2, 0)", "(1, 0, 0)", "vector") == 0.0        # too few components
    # pixels: 640 wide -> 5 % = 32 px; 45 units * 0.64 = 28.8 px ok, 60 units = 38.4 px not
    assert score_multispa("(545, 500)", "(500, 500)", "pixel", 640, 480) == 1.0
    assert score_multispa("(560, 500)", "(500, 500)", "pixel", 640, 480) == 0.0
    assert score_multispa("B", "B", "choice") == 1.0


def test_score_record_dispatch():
    rec = {"answer": "(500, 500)", "answer_type": "pixel", "family": "multispa", "task_type": "multispa_correspondence",
           "extra": {"image_width": 640, "image_height": 480}}
    assert score_record(rec, "(520, 510)") == 1.0
    rec = {"answer": "2.0", "answer_type": "number", "family": "vsibench", "task_type": "object_abs_distance"}
    assert score_record(rec, "2.1") == pytest.approx(0.9)    # 5 % error is not < 5 %: 9 of 10 thresholds


def test_tables_and_chart(tmp_path):
    items = [{"task_type": "object_counting", "score": 1.0, "family": "vsibench"},
             {"task_type": "multispa_camera_yaw", "score": 0.0, "family": "multispa"}]
    summary = aggregate(items)
    md = markdown_table(summary)
    assert "| object_counting | vsibench | 1 | 100.0 |" in md
    assert "MultiSPA overall" in md
    paths = write_tables(summary, tmp_path)
    assert paths == {"markdown": str(tmp_path / "results.md"), "json": str(tmp_path / "results.json"),
                     "chart": str(tmp_path / "results.png")}
    assert json.loads((tmp_path / "results.json").read_text())["n"] == 2
    png = (tmp_path / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
