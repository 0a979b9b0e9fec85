"""Hand-checked rewards: MC letter, VSI MRA, MultiSPA 20 % rule, format modes."""
import pytest

from training.rewards import (RewardWeights, answer_kind, format_reward, parse_vector, task_reward,
                              total_reward)

MC = {"question": "Which is closer?", "options": ["A. chair", "B. table", "C. door"], "answer": "B"}
NUM = {"question": "How far?", "answer": 10.0}
VEC = {"question": "Camera displacement?", "answer": [1.0, 0.0, 0.0], "answer_kind": "vector"}


def test_answer_kinds():
    assert answer_kind(MC) == "choice"
    assert answer_kind(NUM) == "number"
    assert answer_kind({"answer": "3"}) == "number"
    assert answer_kind({"answer": [1, 2]}) == "vector"
    assert answer_kind({"answer": "yes"}) == "text"
    assert answer_kind({"answer": 4, "metric": "mra"}) == "number"
    # the data engine's rows: answers are strings, answer_type says how to score
    assert answer_kind({"answer": "(0.1, 0.2, 0.3)", "answer_type": "vector"}) == "vector"
    assert answer_kind({"answer": "2.5", "answer_type": "number_rel20"}) == "vector"
    assert answer_kind({"answer": "B", "answer_type": "choice", "options": ["A. x", "B. y"]}) == "choice"


@pytest.mark.parametrize("reply,expected", [
    ("B", 1.0), ("B.", 1.0), ("<answer>B</answer>", 1.0), ("<think>near</think><answer> B </answer>", 1.0),
    ("A", 0.0), ("C.", 0.0), ("", 0.0), ("banana", 0.0),
])
def test_multiple_choice_exact_letter(reply, expected):
    assert task_reward(reply, MC) == expected


def test_multiple_choice_gt_given_as_option_text():
    assert task_reward("B", {**MC, "answer": "table"}) == 1.0
    assert task_reward("A", {**MC, "answer": "table"}) == 0.0


@pytest.mark.parametrize("reply,expected", [
    ("10", 1.0),     # exact
    ("9.6", 1.0),    # 4 % error < every margin 0.05..0.50
    ("9.5", 0.9),    # 5 % error is not < 0.05 -> 9 of 10 thresholds
    ("8", 0.6),      # 20 % error < 0.25..0.50 -> 6 of 10
    ("5", 0.0),      # 50 % error passes none
    ("many", 0.0),   # unparsable
])
def test_number_is_mra(reply, expected):
    assert task_reward(reply, NUM) == pytest.approx(expected)


@pytest.mark.parametrize("reply,expected", [
    ("(1.1, 0.1, 0.0)", 1.0),   # error sqrt(0.02)=0.141 <= 0.2*1
    ("[1.2, 0.1, 0]", 0.0),     # error sqrt(0.05)=0.224 > 0.2
    ("1.0, 0.0", 0.0),          # too few components
    ("<answer>0.95 -0.05 0.1</answer>", 1.0),
])
def test_vector_multispa_rule(reply, expected):
    assert task_reward(reply, VEC) == expected


def test_scalar_multispa_rule_and_pixels():
    scalar = {"answer": 2.0, "answer_kind": "vector"}
    assert task_reward("2.39", scalar) == 1.0 and task_reward("2.41", scalar) == 0.0
    pixel = {"answer": "(500, 500)", "answer_type": "pixel", "extra_json": '{"image_width": 640, "image_height": 480}'}
    # 5 % of 640 px = 32 px; (540, 500) is 40/1000*640 = 25.6 px away, (551, 500) 32.6 px
    assert task_reward("(540, 500)", pixel) == 1.0 and task_reward("(551, 500)", pixel) == 0.0
    assert task_reward("(530, 530)", {"answer": [500, 500], "answer_kind": "pixel"}) == 1.0  # 42.4 <= 50 units
    rel20 = {"answer": "2.0", "answer_type": "number_rel20", "family": "multispa"}
    assert task_reward("2.39", rel20) == 1.0 and task_reward("2.41 m", rel20) == 0.0


def test_parse_vector():
    assert parse_vector("move (0.5, -1e-1, 3)") == [0.5, -0.1, 3.0]


@pytest.mark.parametrize("reply,expected", [
    ("<answer>B</answer>", 1.0), ("<think>left of it</think>\n<answer>B</answer>", 1.0),
    ("B", 0.0), ("<answer></answer>", 0.0), ("<answer>B", 0.0), ("x <answer>B</answer>", 0.0),
])
def test_format_reward_tags(reply, expected):
    assert format_reward(reply, MC, mode="tags") == expected


def test_format_reward_bare():
    assert format_reward("B", MC) == 1.0
    assert format_reward("banana", MC) == 0.0
    assert format_reward("3.5 m", NUM) == 1.0
    assert format_reward("many", NUM) == 0.0
    assert format_reward("(1, 2, 3)", VEC) == 1.0
    assert format_reward("(1, 2)", VEC) == 0.0
    with pytest.raises(ValueError):
        format_reward("B", MC, mode="json")


def test_total_reward_weights():
    r = total_reward("8", NUM, RewardWeights(format=0.5, task=1.0, format_mode="bare"))
    assert r == {"format": 1.0, "task": pytest.approx(0.6), "total": pytest.approx(1.1)}
    r = total_reward("8", NUM, RewardWeights(format=1.0, task=2.0, format_mode="tags"))
    assert r["format"] == 0.0 and r["total"] == pytest.approx(1.2)
