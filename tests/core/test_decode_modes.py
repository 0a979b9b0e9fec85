"""Decode modes of SpatialMLLM.answer (eager / static / compiled) on the real tiny model:
same answers, streaming, cancel, timings, cache reuse, clear errors, node parameter."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.backends.llm import DECODE_MODES, check_decode_mode
from ros2_spatial_mllm.inference import TIMING_KEYS, SpatialMLLM
from ros2_spatial_mllm.ros.params import NodeConfig

QUESTION = "How many chair(s) are in this room?"


@pytest.fixture(scope="module")
def clip_frames():
    """4 frames of the bundled demo clip (240x320 RGB)."""
    from ros2_spatial_mllm.video import read_frames

    clip = read_frames("ros2_spatial_mllm/assets/demo/room.mp4", max_candidates=4)
    return list(clip.frames)


def _random_frames(count=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(count)]


@contextlib.contextmanager
def _no_eos(mllm):
    """Run to the token budget: the trained tiny default ends its short answers after a token or
    two, and a sampled comparison needs a long, varied text."""
    mllm.eos_ids, saved = [], mllm.eos_ids
    try:
        yield
    finally:
        mllm.eos_ids = saved


def _answer(mllm, mode, frames, **kwargs):
    mllm.set_decode_mode(mode)
    try:
        return mllm.answer(frames, QUESTION, **kwargs)
    finally:
        mllm.set_decode_mode("eager")


def test_greedy_and_sampled_answers_match_between_eager_and_static(mllm, clip_frames):
    for frames in (clip_frames, _random_frames()):
        eager = _answer(mllm, "eager", frames, max_new_tokens=12)
        static = _answer(mllm, "static", frames, max_new_tokens=12)
        assert (static.text, static.num_tokens) == (eager.text, eager.num_tokens)
        assert static.num_tokens > 0 and not static.cancelled
    # a greedy answer is a token or two, so also compare seeded sampling over the whole budget:
    # the whole next-token distribution must agree for the draws to agree
    with _no_eos(mllm):
        sampled = {mode: _answer(mllm, mode, clip_frames, max_new_tokens=16, temperature=1.5, seed=3)
                   for mode in ("eager", "static")}
    assert sampled["static"].text == sampled["eager"].text
    assert sampled["static"].num_tokens == sampled["eager"].num_tokens == 16
    assert len(set(sampled["static"].text)) > 3  # a varied text, not one repeated piece


def test_static_logits_match_eager_step_by_step(mllm, clip_frames):
    """Teacher-forced: the same tokens fed to both paths give the same logits at every step."""
    model = mllm.model
    inputs = mllm.prepare_inputs(clip_frames, QUESTION)
    forced = [100, 7, 2000, 55, 901]
    logits = {}
    with torch.inference_mode():
        features, patch_start = model.spatial_features(inputs["spatial_pixel_values"])
        video = model.video_embeds(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        fused = model.connector(video, features, patch_start, inputs["video_grid_thw"])
        for mode in ("eager", "static", "branchable"):  # branchable: the eager LLMDecoder numeric answers use
            mllm.set_decode_mode("eager" if mode == "branchable" else mode)
            first, step, _ = mllm._prefill(model, inputs, fused, len(forced), branchable=mode == "branchable")
            logits[mode] = torch.cat([first] + [step(t) for t in forced[:-1]])  # [5, V]
    mllm.set_decode_mode("eager")
    torch.testing.assert_close(logits["static"], logits["eager"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits["branchable"], logits["eager"], atol=1e-4, rtol=1e-4)


def test_static_mode_streams_pieces_that_make_the_text_and_reports_timings(mllm, clip_frames):
    pieces = []
    with _no_eos(mllm):
        result = _answer(mllm, "static", clip_frames, max_new_tokens=16, temperature=1.5, seed=5,
                         on_token=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == result.text
    assert set(result.timings_ms) == set(TIMING_KEYS)
    assert result.timings_ms["prefill"] > 0 and result.timings_ms["decode"] > 0
    stages = sum(v for k, v in result.timings_ms.items() if k != "total")
    assert result.timings_ms["total"] >= stages * 0.99


def test_static_mode_cancel_stops_within_one_token(mllm, clip_frames):
    with _no_eos(mllm):  # run to the budget unless cancelled
        polls = []

        def should_stop():
            # polled once before the encoders and once after every token: cancel after the 3rd
            polls.append(True)
            return len(polls) > 3

        result = _answer(mllm, "static", clip_frames, max_new_tokens=12, should_stop=should_stop)
        assert result.cancelled and result.num_tokens == 3
        before = _answer(mllm, "static", clip_frames, max_new_tokens=12, should_stop=lambda: True)
        assert before.cancelled and before.num_tokens == 0 and before.timings_ms["decode"] == 0.0


def test_static_cache_is_reused_across_queries_and_grows_for_longer_ones(mllm, clip_frames):
    mllm.set_decode_mode("static")
    try:
        mllm.answer(clip_frames, QUESTION, max_new_tokens=4)
        decoder = mllm._decoder
        cache, size = decoder._cache, decoder._cache_len
        mllm.answer(clip_frames, QUESTION, max_new_tokens=4)
        assert decoder._cache is cache and decoder._cache_len == size  # reset, not re-allocated
        prompt = mllm.prepare_inputs(clip_frames, QUESTION)["input_ids"].shape[1]
        longer = size - prompt + 1  # one token more than the cache holds
        mllm.eos_ids, saved = [], mllm.eos_ids
        try:
            result = mllm.answer(clip_frames, QUESTION, max_new_tokens=longer)
        finally:
            mllm.eos_ids = saved
        assert result.num_tokens == longer
        assert decoder._cache is not cache and decoder._cache_len >= prompt + longer
    finally:
        mllm.set_decode_mode("eager")


def test_invalid_decode_mode_is_a_clear_one_line_error(mllm):
    with pytest.raises(ValueError, match=r"unknown decode_mode 'turbo'; choose one of eager, static, compiled") as err:
        SpatialMLLM.load(decode_mode="turbo")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="needs a CUDA device") as err:
        SpatialMLLM.load(device="cpu", decode_mode="compiled")
    assert "\n" not in str(err.value) and "static" in str(err.value)
    with pytest.raises(ValueError, match="unknown decode_mode"):
        mllm.set_decode_mode("fast")
    assert mllm.decode_mode == "eager" and mllm._decoder is None  # unchanged
    assert check_decode_mode(" Static ") == "static"


def test_backend_options_carry_the_decode_mode():
    model = SpatialMLLM.load(backend_options={"decode_mode": "static"})
    try:
        assert model.decode_mode == "static" and model.info["decode_mode"] == "static"
        assert model._decoder is not None and model._decoder.mode == "static"
    finally:
        model.close()


def test_node_parameter_decode_mode():
    from ros2_spatial_mllm import cli
    from ros2_spatial_mllm.ros import params

    assert params.DECODE_MODES == DECODE_MODES == cli.DECODE_MODES
    config = NodeConfig()
    assert config.decode_mode == "eager" and config.backend_options()["decode_mode"] == "eager"
    assert "compiled" in NodeConfig.describe("decode_mode")
    with pytest.raises(ValueError, match=r"decode_mode='turbo' not in") as err:
        NodeConfig.from_dict({"decode_mode": "turbo"})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="decode_mode=compiled needs a CUDA device"):
        NodeConfig.from_dict({"decode_mode": "compiled", "device": "cpu"})
    assert NodeConfig.from_dict({"decode_mode": "compiled", "device": "cuda"}).backend_options()[
        "decode_mode"] == "compiled"


def test_node_loader_applies_decode_mode():
    """What the node's on_activate does (node.py: engine.load(..., backend_options=...))."""
    from ros2_spatial_mllm.buffer import FrameBuffer
    from ros2_spatial_mllm.query_engine import QueryEngine
    from ros2_spatial_mllm.engine_checks import load_with_verified_backend

    config = NodeConfig(decode_mode="static").validate()
    engine = QueryEngine(FrameBuffer(max_frames=8), loader=load_with_verified_backend)
    try:
        assert engine.load(model=None, preset="tiny", device="cpu", backend=config.backend,
                           backend_options=config.backend_options())
        assert engine.model.decode_mode == "static"
    finally:
        engine.shutdown()


def test_compiled_layout_step_traces_as_one_graph_on_cpu(mllm):
    """What CPU can check of "compiled": with its fixed-size static cache the one-token step is
    traced by torch.compile (aot_eager backend: no C++ toolchain, no CUDA graphs) into one graph,
    no graph break, no recompilation across steps and prompts, and answers like eager."""
    import torch._dynamo as dynamo

    frames = _random_frames(seed=4)
    reference = mllm.answer(frames, QUESTION, max_new_tokens=8, temperature=1.5, seed=2)
    mllm.set_decode_mode("static")
    try:
        decoder = mllm._decoder
        decoder.compile_decode = True  # the compiled mode's cache layout: max_cache_len, allocated once
        decoder._step = torch.compile(decoder._decode_step, backend="aot_eager", fullgraph=True)
        dynamo.reset()
        dynamo.utils.counters.clear()
        first = mllm.answer(frames, QUESTION, max_new_tokens=8, temperature=1.5, seed=2)
        mllm.answer(frames, "Which object is the biggest?", max_new_tokens=8)
        assert (first.text, first.num_tokens) == (reference.text, reference.num_tokens)
        assert decoder._cache_len == decoder.max_cache_len
        assert dynamo.utils.counters["stats"]["unique_graphs"] == 1
        assert not dynamo.utils.counters["graph_break"] and not dynamo.utils.counters["recompiles"]
    finally:
        mllm.set_decode_mode("eager")
        dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs CUDA: decode_mode 'compiled' is torch.compile CUDA graphs")
def test_compiled_mode_matches_eager_on_cuda():
    model = SpatialMLLM.load(device="cuda", dtype="float32", decode_mode="compiled")
    try:
        frames = _random_frames()
        compiled = [model.answer(frames, QUESTION, max_new_tokens=12),
                    model.answer(frames, QUESTION, max_new_tokens=12, temperature=1.5, seed=3)]
        pieces = []
        streamed = model.answer(frames, QUESTION, max_new_tokens=8, on_token=pieces.append)
        assert "".join(pieces) == streamed.text
        model.set_decode_mode("eager")
        eager = [model.answer(frames, QUESTION, max_new_tokens=12),
                 model.answer(frames, QUESTION, max_new_tokens=12, temperature=1.5, seed=3)]
        for got, want in zip(compiled, eager):
            assert (got.text, got.num_tokens) == (want.text, want.num_tokens)
    finally:
        model.close()
