"""`frame_time_positions`: mRoPE temporal ids from where the sampled frames lie in their window.

Evenly spaced frames must keep exactly the positions Qwen2.5-VL gives them (so a model trained
without the flag answers the same), unevenly spaced ones must get ids that keep their gaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.model.processing import grid_times, video_chat_inputs
from ros2_spatial_mllm.sampling import uniform_sample, window_slots


def _frames(count=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (84, 112, 3), dtype=np.uint8) for _ in range(count)]


def test_evenly_spread_frames_get_qwens_grid_times():
    for n, k in ((32, 8), (17, 4), (100, 16), (8, 8)):
        slots = window_slots(uniform_sample(n, k), 0, n - 1)
        # linspace truncated to ints lands near, not on, the slots: rounding to ids must absorb it
        ids = (grid_times(slots, 2, 2.0) * 2).round().long()  # tokens_per_second 2
        assert ids.tolist() == [2 * g for g in range(k // 2)]
    assert grid_times([0.0, 1.0, 2.0, 3.0], 2, 2.0).tolist() == [0.0, 1.0]
    # the last frame repeats to fill the temporal patch, like the pixels
    assert grid_times([0.0, 1.0, 2.0], 2, 1.0).tolist() == pytest.approx([0.0, 1.5])


def test_uneven_picks_keep_their_gaps():
    slots = window_slots([0, 2, 3, 11, 12, 20, 29, 31], 0, 31)
    assert slots[0] == 0.0 and slots[-1] == 7.0
    times = grid_times(slots, 2, 2.0)
    gaps = times[1:] - times[:-1]
    assert (gaps > 0).all() and gaps.max() / gaps.min() > 2  # not the even spacing of 1 s
    assert window_slots([5], 0, 31) == [0.0] and window_slots([3, 3], 3, 3) == [0.0, 1.0]
    with pytest.raises(ValueError):
        window_slots([], 0, 31)


def test_model_positions_follow_the_grid_times(mllm):
    tok, cfg, video_id = mllm.tokenizer, mllm.processing, mllm.model.config.video_token_id
    inner = mllm.model.model

    def positions(inputs):
        return inner.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                                    video_grid_thw=inputs["video_grid_thw"],
                                    second_per_grid_ts=inputs["second_per_grid_ts"])

    frames = _frames()
    plain = video_chat_inputs(tok, cfg, video_id, frames, "How many chairs?", 2.0)
    even = video_chat_inputs(tok, cfg, video_id, frames, "How many chairs?", 2.0,
                             slots=window_slots(uniform_sample(32, 8), 0, 31))
    assert even["second_per_grid_ts"].shape == (1, 4) and plain["second_per_grid_ts"].shape == (1,)
    (p_plain, d_plain), (p_even, d_even) = positions(plain), positions(even)
    assert torch.equal(p_plain, p_even) and torch.equal(d_plain, d_even)

    slots = window_slots([0, 2, 3, 11, 12, 20, 29, 31], 0, 31)
    uneven = video_chat_inputs(tok, cfg, video_id, frames, "How many chairs?", 2.0, slots=slots)
    p_uneven, d_uneven = positions(uneven)
    video = uneven["mm_token_type_ids"][0] == 2
    start = int(p_plain[0, 0][video].min())
    expected = (grid_times(slots, 2, 2.0) * mllm.model.config.vision_config.tokens_per_second).round().long()
    per_grid = p_uneven[0, 0][video].view(4, -1)  # tokens in (t, h, w) order
    assert (per_grid == per_grid[:, :1]).all()
    assert (per_grid[:, 0] - start).tolist() == expected.tolist() != [0, 2, 4, 6]
    # height/width ids, the text around the video and the decode delta stay as they were
    assert torch.equal(p_uneven[1:], p_plain[1:]) and torch.equal(p_uneven[0, 0][~video], p_plain[0, 0][~video])
    assert torch.equal(d_uneven, d_plain)
    with pytest.raises(ValueError, match="frame slots"):
        video_chat_inputs(tok, cfg, video_id, frames, "How many chairs?", 2.0, slots=slots[:5])


def test_answer_reads_frame_slots_only_where_the_model_was_trained_so(mllm):
    frames = _frames()
    uneven = window_slots([0, 2, 3, 11, 12, 20, 29, 31], 0, 31)
    assert mllm.model.config.frame_time_positions is False  # the shipped weights: the reference's rule
    assert mllm.prepare_inputs(frames, "Q?", uneven)["second_per_grid_ts"].shape == (1,)
    mllm.model.config.frame_time_positions = True
    try:
        assert mllm.prepare_inputs(frames, "Q?", uneven)["second_per_grid_ts"].shape == (1, 4)
        base = mllm.answer(frames, "How many chairs are in the room?", max_new_tokens=6)
        even = mllm.answer(frames, "How many chairs are in the room?", max_new_tokens=6,
                           frame_slots=window_slots(uniform_sample(32, 8), 0, 31))
        assert even.text == base.text
        inputs = {s: mllm.prepare_inputs(frames, "How big is the room?", s)
                  for s in (None, tuple(uneven))}
        with torch.inference_mode():
            logits = {s: mllm.model(**inp, use_cache=False).logits[0, -1] for s, inp in inputs.items()}
        assert not torch.allclose(logits[None], logits[tuple(uneven)])  # the positions reach the LLM
    finally:
        mllm.model.config.frame_time_positions = False


def test_flag_round_trips_through_config_json(tmp_path):
    from ros2_spatial_mllm.model.config import SpatialMLLMConfig

    config = SpatialMLLMConfig(frame_time_positions=True)
    config.save_pretrained(tmp_path)
    assert SpatialMLLMConfig.from_pretrained(tmp_path).frame_time_positions is True
    assert SpatialMLLMConfig().frame_time_positions is False  # an official config.json has no such key
    assert "frame_time_positions" not in SpatialMLLMConfig().to_dict()  # and off, it writes none
