"""Numeric answers by expected MRA (ros2_spatial_mllm/numeric_answer.py): the pure search and
choice on hand-made distributions, then on the real tiny model (branching equals stepping,
greedy text is kept where the reply is not a lone number, streaming and cancel)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.backends.llm import LLMDecoder
from ros2_spatial_mllm.numeric_answer import (NumberHold, SearchOutOfTime, check_numeric_answers, choose_number,
                                              enumerate_numbers, is_lone_number, mra_table)
from ros2_spatial_mllm.parsing import mean_relative_accuracy
from ros2_spatial_mllm.prompts import build_prompt

# ---- the search and the choice on a hand-made "model" ---------------------------------------

VOCAB = ["<eos>", "0", "1", "2", "3", "4", "5", ".", " m", ","]
EOS = 0


def _decode(ids):
    return "".join(VOCAB[i] for i in ids if i != EOS)


def _table_model(table):
    """A next-token distribution per prefix text: {prefix: {piece: prob}}; missing pieces get
    a tiny remainder so that every row is a proper distribution over VOCAB."""
    def logprobs(prefix_ids):
        probs = table.get(_decode(prefix_ids), {"<eos>": 1.0})
        row = torch.full((len(VOCAB),), 1e-9, dtype=torch.float64)
        for piece, p in probs.items():
            row[VOCAB.index(piece)] = p
        return torch.log(row / row.sum())
    return logprobs


# "2" then end (0.4); "3" then end or " m" (0.3 + 0.1); "3.5" (0.2); "1" then "," (a vector, 1e-4)
TABLE = {
    "": {"2": 0.4, "3": 0.6 - 1e-4, "1": 1e-4},
    "2": {"<eos>": 1.0},
    "3": {"<eos>": 0.5, " m": 1.0 / 6.0, ".": 1.0 / 3.0},
    "3.": {"5": 1.0},
    "3.5": {"<eos>": 1.0},
    "1": {",": 1.0},
}


def _enumerate(table, **kwargs):
    model = _table_model(table)
    return enumerate_numbers(model(()), lambda prefixes: torch.stack([model(p) for p in prefixes]), _decode,
                             [EOS], **kwargs)


def test_enumerate_numbers_walks_every_likely_path_and_merges_equal_values():
    numbers = _enumerate(TABLE, min_prob=1e-3)
    assert sorted(numbers) == [2.0, 3.0, 3.5]  # "1," is below min_prob, "3 m" merges into 3
    assert numbers[2.0][0] == pytest.approx(0.4, abs=1e-3)
    assert numbers[3.0][0] == pytest.approx(0.4, abs=1e-3)
    assert numbers[3.5][0] == pytest.approx(0.2, abs=1e-3)
    assert _decode(numbers[3.0][1]) == "3"  # the likeliest path to the value, without " m"
    assert sorted(_enumerate(TABLE, min_prob=1e-5)) == [1.0, 2.0, 3.0, 3.5]


def test_enumerate_numbers_limits_and_cancel():
    long_number = {"": {"1": 1.0}, "1": {"1": 1.0}, "11": {"1": 1.0}, "111": {"<eos>": 1.0}}
    assert _enumerate(long_number, max_tokens=3) == {}  # still writing at the limit: value unknown, dropped
    assert list(_enumerate(long_number, max_tokens=4)) == [111.0]
    assert sorted(_enumerate(TABLE, max_paths=1)) == [3.0, 3.5]  # only "3" (0.6) is followed past one token
    calls = []
    with pytest.raises(InterruptedError):
        _enumerate(TABLE, should_stop=lambda: calls.append(1) or True)
    assert calls == [1]


def test_enumerate_numbers_stops_before_a_step_that_would_pass_its_deadline():
    long_number = {"": {"1": 1.0}, "1": {"1": 1.0}, "11": {"1": 1.0}, "111": {"<eos>": 1.0}}
    model, calls = _table_model(long_number), []

    def slow_expand(prefixes):  # 50 ms per step, one row each
        calls.append(len(prefixes))
        time.sleep(0.05)
        return torch.stack([model(p) for p in prefixes])

    def walk(deadline, row_cost_s=0.0):
        calls.clear()
        return enumerate_numbers(model(()), slow_expand, _decode, [EOS], deadline=deadline, row_cost_s=row_cost_s)

    assert list(walk(time.monotonic() + 5.0)) == [111.0] and calls == [1, 1, 1]
    with pytest.raises(SearchOutOfTime):  # the first step fits (no estimate yet), the second would not
        walk(time.monotonic() + 0.075)
    assert calls == [1]
    with pytest.raises(SearchOutOfTime):  # a first estimate of 1 s per row stops it before any step
        walk(time.monotonic() + 0.5, row_cost_s=1.0)
    assert calls == []


def test_choose_number_maximises_expected_mra_not_probability():
    numbers = _enumerate(TABLE)
    choice = choose_number(numbers, _decode)
    weights = {v: m / sum(m for m, _ in numbers.values()) for v, (m, _) in numbers.items()}
    brute = {c: sum(w * mean_relative_accuracy(c, t) for t, w in weights.items()) for c in weights}
    assert choice.value == max(brute, key=brute.get)
    assert choice.expected_mra == pytest.approx(brute[choice.value])
    assert choice.text == _decode(numbers[choice.value][1]) and choice.numeric_mass == pytest.approx(1.0, abs=1e-3)
    # the likeliest number is not the best estimate: 10 (0.4) against 20 / 21 / 22 (0.15 / 0.25 / 0.2);
    # expected MRA 0.40 for 10, 0.58 for 20, 0.585 for 21, 0.57 for 22
    spread = {10.0: (0.4, (2,)), 20.0: (0.15, (3,)), 21.0: (0.25, (4,)), 22.0: (0.2, (5,))}
    best = choose_number(spread, _decode)
    assert best.value == 21.0 and best.expected_mra == pytest.approx(0.585)
    assert choose_number({}, _decode) is None


def test_mra_table_equals_mean_relative_accuracy_pairwise():
    rng = np.random.default_rng(0)
    values = sorted(set(np.round(rng.uniform(0, 20, 60), 1).tolist()) | {0.0, 1.0, 1.05, 1.5, 2.0, 0.55})
    table = mra_table(values)
    for c, pred in enumerate(values):
        for t, truth in enumerate(values):
            assert float(table[c, t]) == mean_relative_accuracy(pred, truth), (pred, truth)


def test_lone_numbers_and_mode_names():
    for text in ("3", " 2.5", "-1", "4.", ".5", "12\n"):
        assert is_lone_number(text), text
    for text in ("", "3 m", "1, 2, 3", "(120, 40)", "A", "two", "3.5.1"):
        assert not is_lone_number(text), text
    assert check_numeric_answers(" Greedy ") == "greedy"
    with pytest.raises(ValueError, match="expected_mra, greedy"):
        check_numeric_answers("mean")


def test_number_hold_streams_everything_but_a_lone_number():
    got = []
    hold = NumberHold(got.append)
    for piece in ("2", "3", "."):
        hold(piece)
    assert got == []
    hold.finish(["2", "4"])  # the replacement's pieces, one call each
    assert got == ["2", "4"]
    got.clear()
    hold = NumberHold(got.append)
    for piece in ("2", ".", "5", "."):  # a lone number may end in a full stop: still held
        hold(piece)
    hold.finish()  # not replaced: the held pieces, as they came
    assert got == ["2", ".", "5", "."]
    got.clear()
    hold = NumberHold(got.append)
    for piece in ("1", ","):
        hold(piece)
    assert got == ["1", ","]  # released at the first non-number piece, piece by piece
    hold(" 2")
    hold.finish(["9"])  # no longer holding: nothing more is sent
    assert got == ["1", ",", " 2"]


# ---- on the real tiny model -----------------------------------------------------------------

COUNT_QUESTION = "How many chair(s) are in this room?"
SIZE_QUESTION = "What is the size of this room (in square meters)? If multiple rooms are shown, estimate the " \
                "size of the combined space."


@pytest.fixture(scope="module")
def frames():
    from ros2_spatial_mllm.video import read_frames

    return list(read_frames("ros2_spatial_mllm/assets/demo/room.mp4", max_candidates=8).frames)


def _session(mllm, frames, question):
    model = mllm.model
    inputs = mllm.prepare_inputs(frames, build_prompt(question))
    with torch.inference_mode():
        feats, start = model.spatial_features(inputs["spatial_pixel_values"])
        video = model.video_embeds(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        fused = model.connector(video, feats, start, inputs["video_grid_thw"])
        return LLMDecoder(model).start(inputs["input_ids"], fused, inputs["video_grid_thw"], 8,
                                       inputs["second_per_grid_ts"])


def test_branch_logits_equal_stepping_and_rewind_restores(mllm, frames):
    logits, session = _session(mllm, frames, SIZE_QUESTION)
    start = session.position
    prefixes = [(20, 21, 22), (30, 31, 32), (40, 41, 42)] * 6  # 18 rows: several batches at a small budget
    branched = session.branch_logits(prefixes, max_bytes=1)
    assert session.position == start and session.cache.get_seq_length() == start  # left as it was
    for i, prefix in enumerate(prefixes[:3]):
        for token in prefix:
            stepped = session.step(token)
        assert torch.allclose(stepped[0], branched[i], atol=1e-4) and torch.allclose(branched[i], branched[i + 3])
        session.rewind(start)
        assert session.cache.get_seq_length() == start


def test_expected_mra_answer_is_the_best_estimate_under_the_models_distribution(mllm, frames):
    pieces = []
    expected = mllm.answer(frames, SIZE_QUESTION, on_token=pieces.append)
    mllm.set_numeric_answers("greedy")
    try:
        greedy = mllm.answer(frames, SIZE_QUESTION)
    finally:
        mllm.set_numeric_answers("expected_mra")
    assert is_lone_number(expected.text) and is_lone_number(greedy.text)
    assert expected.text != greedy.text  # on this clip the search moves the number (27.4 against 20.5 in the benchmark)
    assert "".join(pieces) == expected.text and len(pieces) == expected.num_tokens  # a piece per token
    logits, session = _session(mllm, frames, SIZE_QUESTION)
    numbers = enumerate_numbers(torch.log_softmax(logits[0], -1),
                                lambda p: torch.log_softmax(session.branch_logits(p), -1),
                                mllm.tokenizer.decode, mllm.eos_ids)
    total = sum(m for m, _ in numbers.values())

    def score(value):
        return sum(m / total * mean_relative_accuracy(value, t) for t, (m, _) in numbers.items())

    assert float(greedy.text) in numbers  # greedy's number is one of the enumerated paths
    assert score(float(expected.text)) == pytest.approx(max(score(v) for v in numbers))
    assert score(float(expected.text)) >= score(float(greedy.text))  # greedy is one candidate
    assert math.isclose(sum(m for m, _ in numbers.values()), 1.0, abs_tol=0.2)


POINT_QUESTION = ("Image 1 and image 2 are two frames from a video of the same room. Which point in image 2 shows "
                  "the same 3D point as (545, 452) in image 1? Coordinates are normalised to 0-1000; answer as (x, y).")


@pytest.mark.parametrize("decode_mode", ["eager", "static"])
def test_replies_other_than_a_lone_number_keep_their_greedy_text(mllm, frames, decode_mode):
    """A pixel pair, an option letter and a sampled reply are the same in both modes, streamed
    piece by piece; in static mode a lone number gets the same choice as in eager mode."""
    replies = {}
    mllm.set_decode_mode(decode_mode)
    try:
        for mode in ("expected_mra", "greedy"):
            mllm.set_numeric_answers(mode)
            pieces = []
            point = mllm.answer(frames, POINT_QUESTION, max_new_tokens=24, on_token=pieces.append)
            assert "".join(pieces) == point.text
            replies[mode] = (point.text, mllm.answer(frames, COUNT_QUESTION, ["1", "2", "3", "4"]).text,
                             mllm.answer(frames, COUNT_QUESTION, temperature=1.0, seed=3).text)
        mllm.set_numeric_answers("expected_mra")
        static_size = mllm.answer(frames, SIZE_QUESTION).text
    finally:
        mllm.set_numeric_answers("expected_mra")
        mllm.set_decode_mode("eager")
    assert not is_lone_number(replies["greedy"][0])  # a pair: the path under test
    assert replies["expected_mra"] == replies["greedy"]
    assert static_size == mllm.answer(frames, SIZE_QUESTION).text


def test_cancel_during_the_number_search(mllm, frames):
    def polls(mode, limit=None):
        count = []

        def should_stop():
            count.append(1)
            return limit is not None and len(count) > limit

        mllm.set_numeric_answers(mode)
        try:
            return mllm.answer(frames, SIZE_QUESTION, should_stop=should_stop), len(count)
        finally:
            mllm.set_numeric_answers("expected_mra")

    (_, greedy_polls), (full, search_polls) = polls("greedy"), polls("expected_mra")
    assert not full.cancelled and search_polls > greedy_polls  # the search polls between its depths
    cancelled, _ = polls("expected_mra", limit=greedy_polls)  # stop at the search's first poll
    assert cancelled.cancelled
    assert mllm.answer(frames, SIZE_QUESTION).text == full.text  # the engine still answers, the same


@pytest.mark.parametrize("decode_mode", ["eager", "static"])
def test_number_search_past_its_deadline_answers_the_greedy_number(mllm, frames, decode_mode):
    mllm.set_numeric_answers("greedy")
    try:
        greedy = mllm.answer(frames, SIZE_QUESTION)
    finally:
        mllm.set_numeric_answers("expected_mra")
    mllm.set_decode_mode(decode_mode)
    try:
        pieces = []
        late = mllm.answer(frames, SIZE_QUESTION, on_token=pieces.append, search_deadline=time.monotonic())
        in_time = mllm.answer(frames, SIZE_QUESTION, search_deadline=time.monotonic() + 60.0)
    finally:
        mllm.set_decode_mode("eager")
    assert is_lone_number(greedy.text) and not late.cancelled
    assert late.text == greedy.text and "".join(pieces) == greedy.text  # the held pieces are released
    assert len(late.notes) == 1 and "deadline" in late.notes[0]
    assert in_time.text != greedy.text and in_time.notes == []  # with time, the search answers (see above)
