"""SpatialMLLM inference API on the embedded tiny preset: answers, streaming, cancel, timings,
geometry, offline loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.inference import TIMING_KEYS, QueryResult, SpatialMLLM
from ros2_spatial_mllm.model.checkpoint import ModelDirError, save_checkpoint
from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR


def _frames(count=6, height=120, width=160, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_load_without_arguments_uses_embedded_tiny(mllm):
    info = mllm.info
    assert info["preset"] == "tiny"
    assert info["model_dir"] == str(TINY_ASSETS_DIR)
    assert 1_000_000 < info["params"] < 10_000_000
    assert info["revision"].startswith("weights-") and len(info["config_hash"]) == 16 and info["load_report"] == "missing=0 unexpected=0 mismatched=0"
    assert info["model_check"].endswith("safetensors only")


@pytest.fixture
def greedy_numbers(mllm):
    """Token-loop tests: a reply of digits stays as decoded (numeric_answer.py replaces it otherwise)."""
    mllm.set_numeric_answers("greedy")
    yield mllm
    mllm.set_numeric_answers("expected_mra")


def test_answer_streams_tokens_and_reports_timings(greedy_numbers):
    mllm = greedy_numbers
    mllm.eos_ids, saved = [], mllm.eos_ids  # no end-of-sequence: force the full length
    try:
        pieces = []
        result = mllm.answer(_frames(), "How many chair(s) are in this room?", max_new_tokens=8, on_token=pieces.append)
    finally:
        mllm.eos_ids = saved
    assert isinstance(result, QueryResult)
    assert result.num_tokens == 8 and not result.cancelled
    assert "".join(pieces) == result.text
    assert set(result.timings_ms) == set(TIMING_KEYS)
    assert all(v >= 0 for v in result.timings_ms.values())
    stages = sum(v for k, v in result.timings_ms.items() if k != "total")
    assert result.timings_ms["total"] >= stages * 0.99 and result.timings_ms["spatial_encoder"] > 0


def test_greedy_answer_is_deterministic_and_options_change_the_prompt(mllm):
    frames = _frames(seed=1)
    a = mllm.answer(frames, "Which is closer to the door?", options=["chair", "table"], max_new_tokens=4)
    b = mllm.answer(frames, "Which is closer to the door?", options=["chair", "table"], max_new_tokens=4)
    assert a.text == b.text and a.num_tokens == b.num_tokens
    inputs_mc = mllm.prepare_inputs(frames, "Q?\nOptions:\nA. chair\nB. table")
    inputs_num = mllm.prepare_inputs(frames, "Q?")
    assert inputs_mc["input_ids"].shape[1] > inputs_num["input_ids"].shape[1]


def test_answer_builds_prompts_with_the_shared_prompt_module(mllm):
    """inference uses ros2_spatial_mllm.prompts.build_prompt (no local copy): its option
    validation applies to answer()."""
    from ros2_spatial_mllm import inference, prompts

    assert inference.build_prompt is prompts.build_prompt
    with pytest.raises(ValueError):
        mllm.answer(_frames(), "Which one?", options=["only one"], max_new_tokens=1)  # 2-26 options


def test_should_stop_cancels_between_tokens(greedy_numbers):
    mllm = greedy_numbers
    mllm.eos_ids, saved = [], mllm.eos_ids
    pieces = []
    try:
        result = mllm.answer(_frames(), "How far is the door?", max_new_tokens=16,
                             on_token=pieces.append, should_stop=lambda: len(pieces) >= 2)
        before = mllm.answer(_frames(), "How far is the door?", max_new_tokens=16, should_stop=lambda: True)
    finally:
        mllm.eos_ids = saved
    assert result.cancelled and result.num_tokens == 2
    assert before.cancelled and before.num_tokens == 0 and before.timings_ms["prefill"] == 0


def test_video_tokens_and_both_encoders_share_resized_frames(mllm):
    inputs = mllm.prepare_inputs(_frames(count=5, height=480, width=640), "How big is the room?")
    t, gh, gw = inputs["video_grid_thw"][0].tolist()
    frames = inputs["spatial_pixel_values"]
    assert frames.shape == (1, 5, 3, gh * 14, gw * 14)  # VGGT frames = Qwen's resized frames
    assert (gh * 14) % 28 == 0 and (gw * 14) % 28 == 0 and t == 3  # 5 frames -> padded to 6
    assert gh * gw * 14 * 14 <= mllm.processing.max_pixels
    video_id = mllm.model.config.video_token_id
    assert int((inputs["input_ids"] == video_id).sum()) == t * gh * gw // 4
    assert torch.equal(inputs["mm_token_type_ids"] == 2, inputs["input_ids"] == video_id)
    assert inputs["second_per_grid_ts"].tolist() == [2 / mllm.fps]  # mRoPE time step of one grid
    with pytest.raises(ValueError, match="no frames given"):
        mllm.prepare_inputs([], "How big is the room?")


def test_predict_geometry_shapes_and_first_camera_world(mllm):
    frames = np.stack(_frames(count=3))
    geo = mllm.predict_geometry(frames)
    n, h, w = geo["depth"].shape
    assert n == 3 and h % 28 == 0 and w % 28 == 0
    assert geo["depth_conf"].shape == (3, h, w)
    assert geo["extrinsics"].shape == (3, 3, 4) and geo["intrinsics"].shape == (3, 3, 3)
    assert all(v.dtype == np.float32 for v in geo.values())
    np.testing.assert_allclose(geo["extrinsics"][0], np.eye(3, 4), atol=1e-5)
    assert np.all(geo["depth"] > 0)


def test_bad_inputs_raise_clear_errors(mllm):
    with pytest.raises(ValueError, match="empty question"):
        mllm.answer(_frames(), "  ")
    with pytest.raises(ValueError, match="no frames"):
        mllm.answer([], "How many chairs?")
    with pytest.raises(ValueError, match="same size"):
        mllm.answer([np.zeros((60, 80, 3), np.uint8), np.zeros((61, 80, 3), np.uint8)], "How many chairs?")


def test_load_refuses_non_local_models():
    with pytest.raises(ModelDirError, match="offline only"):
        SpatialMLLM.load("Diankun/Spatial-MLLM-v1.1-Instruct-135K")
    with pytest.raises(ValueError, match="no embedded weights"):
        SpatialMLLM.load(preset="official")


def test_load_from_saved_directory_answers_like_embedded(mllm, tmp_path):
    out = save_checkpoint(mllm.model, tmp_path / "copy", assets_from=TINY_ASSETS_DIR)
    other = SpatialMLLM.load(out)
    try:
        frames = _frames(seed=2)
        a = mllm.answer(frames, "How many tables?", max_new_tokens=4)
        b = other.answer(frames, "How many tables?", max_new_tokens=4)
        assert a.text == b.text and other.info["preset"] is None
    finally:
        other.close()


def test_predict_geometry_resolution_follows_max_pixels(mllm):
    frames = np.stack(_frames(count=2, height=240, width=320))
    geo = mllm.predict_geometry(frames, max_pixels=224 * 168)
    assert geo["depth"].shape == (2, 168, 224)
    assert geo["intrinsics"][0, 0, 2] == pytest.approx(112.0) and geo["intrinsics"][0, 1, 2] == pytest.approx(84.0)


def test_answer_matches_transformers_generate(greedy_numbers):
    """The hand-written KV-cache loop gives the same greedy tokens as model.generate, both
    stopping at the same end-of-sequence ids."""
    mllm = greedy_numbers
    frames = _frames(count=4, seed=5)
    result = mllm.answer(frames, "How many tables?", max_new_tokens=8)
    inputs = mllm.prepare_inputs(frames, "How many tables?\nPlease answer the question using a single word or phrase.")
    with torch.inference_mode():
        out = mllm.model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=True,
                                  eos_token_id=mllm.eos_ids, pad_token_id=mllm.eos_ids[0])
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert new[-1] in mllm.eos_ids and len(new) - 1 == result.num_tokens >= 2  # a number of a few tokens
    assert mllm.tokenizer.decode(new, skip_special_tokens=True) == result.text
