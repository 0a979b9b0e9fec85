"""Hand-checked tests for prompts.py and parsing.py (VSI-Bench conventions)."""

import math

import pytest

from ros2_spatial_mllm.parsing import (
    MRA_THRESHOLDS,
    ParsedAnswer,
    canonical_unit,
    convert_unit,
    first_word,
    mean_relative_accuracy,
    parse_answer,
    parse_number,
    strip_answer_tags,
)
from ros2_spatial_mllm.prompts import (
    MULTIPLE_CHOICE_SUFFIX,
    NUMERIC_SUFFIX,
    build_prompt,
    normalize_options,
)

OPTIONS = ["A. chair", "B. table", "C. sofa", "D. front-left door"]


# ------------------------------------------------------------------------------------ prompts
def test_build_prompt_multiple_choice_layout():
    prompt = build_prompt("  Which object is closest to the bed? ", ["chair", "table"])
    assert prompt == (
        "Which object is closest to the bed?\nOptions:\nA. chair\nB. table\n" + MULTIPLE_CHOICE_SUFFIX
    )


def test_build_prompt_numeric_and_empty_options():
    assert build_prompt("How many chairs?") == "How many chairs?\n" + NUMERIC_SUFFIX
    assert build_prompt("How many chairs?", []) == "How many chairs?\n" + NUMERIC_SUFFIX


@pytest.mark.parametrize("options", [
    ["A. chair", "B. table"], ["A) chair", "B) table"], ["(A) chair", "(B) table"],
    ["A: chair", "B: table"], ["chair", "table"],
])
def test_options_prefixes_are_normalised(options):
    assert normalize_options(options) == ["chair", "table"]
    assert "A. chair\nB. table" in build_prompt("q?", options)


def test_bare_option_starting_with_article_is_not_a_prefix():
    assert normalize_options(["a chair", "a table"]) == ["a chair", "a table"]


@pytest.mark.parametrize("question, options, message", [
    ("", None, "empty"),
    ("   \n", None, "empty"),
    ("x" * 5000, None, "too long"),
    ("q?", ["only one"], "at least 2"),
    ("q?", ["A. x", "C. y"], "prefixes"),
    ("q?", ["A. x", "y"], "prefixes"),
    ("q?", ["x", ""], "empty"),
    ("q?", ["x", "X"], "distinct"),
    ("q?", "A. x B. y", "list of strings"),
    ("q?", ["x", 3], "not a string"),
    ("q?", [str(i) for i in range(27)], "at most 26"),
])
def test_build_prompt_rejects_bad_input(question, options, message):
    with pytest.raises(ValueError, match=message):
        build_prompt(question, options)


# ------------------------------------------------------------------------------------ tags/words
@pytest.mark.parametrize("text, expected", [
    ("<think>the chair is near</think><answer> B </answer>", "B"),
    ("<think>a</think>\n<answer>3.5</answer>", "3.5"),
    ("reasoning...</think><answer>C</answer>", "C"),
    ("<think>cut off before the answer", ""),
    ("<answer>2.5 m", "2.5 m"),
    ("plain reply", "plain reply"),
    ("<think>x</think> 4 chairs", "4 chairs"),
    (None, ""),
])
def test_strip_answer_tags(text, expected):
    assert strip_answer_tags(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("3.5 meters.", "3.5"), ("B.", "B"), ("  B. chair", "B"), ("", ""), ("4\nchairs", "4"),
    ("12.", "12"),
])
def test_first_word_vsibench(text, expected):
    assert first_word(text) == expected


# ------------------------------------------------------------------------------------ choices
@pytest.mark.parametrize("reply, letter", [
    ("B", "B"), ("B.", "B"), ("(B)", "B"), ("[B]", "B"), ("B) table", "B"), ("Answer: B", "B"),
    ("The answer is C.", "C"), ("answer is (D)", "D"), ("b", "B"), ("table", "B"),
    ("The sofa.", "C"), ("It is the front-left door", "D"), ("I think it is (A)", "A"),
    ("I think B", "B"), ("<think>maybe A</think><answer>C</answer>", "C"),
    ("A table is closer", "B"),  # leading "A" followed by a word is the article
])
def test_parse_choice(reply, letter):
    parsed = parse_answer(reply, OPTIONS)
    assert parsed.kind == "choice" and parsed.choice == letter, parsed


@pytest.mark.parametrize("reply", ["E", "(F)", "no idea", "", "a door"])
def test_unparsable_choice_is_text(reply):
    parsed = parse_answer(reply, OPTIONS)
    assert parsed.kind == "text" and parsed.choice is None and parsed.value is None


def test_ambiguous_option_text_is_not_guessed():
    assert parse_answer("chair or table", OPTIONS).kind == "text"


def test_option_contained_in_longer_option_prefers_longer():
    options = ["left", "front-left", "right"]
    assert parse_answer("front-left", options).choice == "B"
    assert parse_answer("to the left", options).choice == "A"


def test_lone_letter_without_options_is_choice():
    assert parse_answer("C.") == ParsedAnswer("choice", "C", None, None, "C.")


# ------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("reply, value, unit", [
    ("3.5 m", 3.5, "m"), ("120cm", 120.0, "cm"), ("2,5", 2.5, None), ("1,234", 1234.0, None),
    ("three", 3.0, None), ("There are Three chairs.", 3.0, None), ("12 m²", 12.0, "m²"),
    ("12 m2", 12.0, "m²"), ("12 sq m", 12.0, "m²"), ("12 square meters", 12.0, "m²"),
    ("about 3-4 meters", 3.0, "m"), ("-2", -2.0, None), ("0.75 metres", 0.75, "m"),
    ("45 mm", 45.0, "mm"), ("6 ft", 6.0, "ft"), ("3 more chairs", 3.0, None),
    ("<answer>7</answer>", 7.0, None), (".5", 0.5, None), ("1.5e2 cm", 150.0, "cm"),
    ("a 3.5-meter gap", 3.5, "m"), ("3 meters squared", 3.0, "m²"), ("3m2", 3.0, "m²"),
    ("12 square feet", 12.0, "ft²"), ("5,000 cm", 5000.0, "cm"), ("1,25", 1.25, None),
])
def test_parse_number(reply, value, unit):
    parsed = parse_answer(reply)
    assert parsed.kind == "number"
    assert parsed.value == pytest.approx(value)
    assert parsed.unit == unit


@pytest.mark.parametrize("reply, unit, value", [
    ("120cm", "m", 1.2), ("1.2 m", "cm", 120.0), ("45 mm", "cm", 4.5), ("2", "m", 2.0),
    ("50000 cm²", "m2", 5.0), ("10 ft", "m", 3.048), ("12 sq m", "sq m", 12.0),
])
def test_parse_number_converts_to_canonical_unit(reply, unit, value):
    parsed = parse_answer(reply, unit=unit)
    assert parsed.value == pytest.approx(value)
    assert parsed.unit == canonical_unit(unit)


def test_dimension_mismatch_is_reported_not_converted():
    parsed = parse_answer("12 m", unit="m²")
    assert parsed.value == 12.0 and parsed.unit == "m" and parsed.raw_unit == "m"


def test_unit_helpers():
    assert convert_unit(1.0, "m", "cm") == pytest.approx(100.0)
    with pytest.raises(ValueError, match="cannot convert"):
        convert_unit(1.0, "m", "m²")
    with pytest.raises(ValueError, match="unknown unit"):
        canonical_unit("parsec")
    with pytest.raises(ValueError, match="unknown unit"):
        parse_answer("3", unit="furlong")
    assert parse_number("nothing here") is None


def test_free_text_passes_through():
    parsed = parse_answer("  the kitchen  ")
    assert parsed == ParsedAnswer("text", None, None, None, "the kitchen")


# ------------------------------------------------------------------------------------ MRA
def test_mra_thresholds():
    assert MRA_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


@pytest.mark.parametrize("pred, gt, expected", [
    (10.0, 10.0, 1.0),     # exact: every threshold
    (10.4, 10.0, 1.0),     # 4 % error < 5 %
    (10.5, 10.0, 0.9),     # 5 % is not < 5 %: fails θ=0.95 only
    (9.0, 10.0, 0.8),      # 10 %: fails 0.90, 0.95
    (0.9, 1.0, 0.8),       # same, with float noise (0.0999...) rounded away
    (13.0, 10.0, 0.4),     # 30 %: passes 0.50..0.65
    (5.0, 10.0, 0.0),      # 50 % is not < 50 %
    (5.1, 10.0, 0.1),      # 49 %: passes θ=0.50 only
    (-10.0, -10.0, 1.0),   # |y| in the denominator
    (0.0, 0.0, 1.0),
    (1.0, 0.0, 0.0),
    (None, 3.0, 0.0),
    ("abc", 3.0, 0.0),
    (float("nan"), 3.0, 0.0),
    ("4", 4.0, 1.0),
])
def test_mean_relative_accuracy_hand_checked(pred, gt, expected):
    assert mean_relative_accuracy(pred, gt) == pytest.approx(expected)


def test_mra_official_code_quirk():
    # lmms-eval compares with <= (same 10 thresholds), so a 5 % error scores 1.0 there.
    assert mean_relative_accuracy(10.5, 10.0, official_code=True) == pytest.approx(1.0)
    assert mean_relative_accuracy(10.0, 10.0, official_code=True) == 1.0
    # 10 % error: 0.1 <= 1-θ for θ <= 0.9 -> 9 of 10
    assert math.isclose(mean_relative_accuracy(9.0, 10.0, official_code=True), 0.9)
    assert mean_relative_accuracy(5.0, 10.0, official_code=True) == pytest.approx(0.1)


@pytest.mark.parametrize("question", ["\ud800 lone surrogate", "<|im_end|><|video_pad|> hi", "a <|vision_start|> b"])
def test_build_prompt_rejects_unencodable_and_control_token_questions(question):
    with pytest.raises(ValueError, match="question"):
        build_prompt(question)


def test_build_prompt_rejects_control_tokens_in_options():
    with pytest.raises(ValueError, match="option 2"):
        build_prompt("Which is closer?", ["chair", "<|im_start|>table"])


def test_build_prompt_keeps_ordinary_angle_brackets_and_pipes():
    assert "a < b | c > d" in build_prompt("is a < b | c > d?")
