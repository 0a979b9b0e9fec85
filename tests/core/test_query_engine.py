"""QueryEngine with the real tiny model: validation, error codes, BUSY/timeout/cancel, streaming.

Concurrency cases hold ``engine.model_lock`` from the test (exactly what a geometry chunk in
progress does) so the running query is provably inside the engine while others queue.
"""
import math
import time

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.bag import synthetic
from ros2_spatial_mllm.buffer import Frame, FrameBuffer
from ros2_spatial_mllm.geometry_worker import GeometryWorker
from ros2_spatial_mllm.sampling import window_slots
from ros2_spatial_mllm.query_engine import (
    LATENCY_KEYS, EngineConfig, ErrorCode, ModelState, QueryEngine, QueryRequest, select_frames,
    validate_request,
)

S = 10**9
HW = (48, 64)


@pytest.fixture(scope="module")
def model():
    from ros2_spatial_mllm.inference import SpatialMLLM
    m = SpatialMLLM.load()
    yield m
    m.close()


@pytest.fixture(scope="module")
def scene_frames():
    K = synthetic.intrinsics_for(HW[1], HW[0])
    out = []
    for i, pose in enumerate(synthetic.orbit_poses(12)):
        rgb, depth = synthetic.render(synthetic.default_scene(), pose, K, HW)
        out.append(Frame((100 + i) * S, "cam", rgb, depth, K, pose))
    return out


@pytest.fixture
def engine(model, scene_frames):
    buf = FrameBuffer(max_frames=64)
    eng = QueryEngine(buf, EngineConfig(num_frames=4, max_waiting=2, timeout_s=20.0))
    worker = GeometryWorker(buf, model_provider=lambda: eng.model, model_lock=eng.model_lock)
    eng.geometry = worker
    eng.attach_model(model)
    for f in scene_frames:
        buf.add(f)
    assert worker.wait_idle(20)
    yield eng
    worker.stop()
    eng.shutdown(close_model=False)      # the module's model is shared by the tests


@pytest.mark.parametrize("request_kwargs,match", [
    (dict(question="   "), "question is empty"),
    (dict(question="x" * 2001), "too long"),
    (dict(question="é" * 1900, options=[str(i) * 400 for i in range(16)]), "too large .* bytes"),
    (dict(question="q" * 10_001), "too large"),
    (dict(question="q" * 10_000), "too long"),
    (dict(question="q", options=["only one"]), "malformed options: .*at least 2"),
    (dict(question="q", options=["A. x", "C. y"]), "malformed options"),
    (dict(question="q", options=["same", "Same"]), "distinct"),
    (dict(question="q", num_frames=-1), "num_frames"),
    (dict(question="q", num_frames=65), "num_frames"),
    (dict(question="q", sampling="random"), "unknown sampling 'random'"),
    (dict(question="q", t_start_ns=5 * S, t_end_ns=4 * S), "window start .* after window end"),
    (dict(question="q", t_start_ns=-1), "non-negative"),
    (dict(question="q", max_new_tokens=10_000), "max_new_tokens"),
    (dict(question="q", timeout_s=-2.0), "timeout_s"),
    (dict(question="bad\x00nul"), "NUL"),
])
def test_validation_rejects_bad_requests_with_reason(request_kwargs, match):
    out = validate_request(QueryRequest(**request_kwargs), EngineConfig())
    assert out.code == ErrorCode.BAD_REQUEST
    assert pytest.importorskip("re").search(match, out.message), out.message


def test_validation_normalises_defaults_and_lettered_options():
    out = validate_request(QueryRequest("  How far?  ", options=["A. left", "B. right"], sampling="Space-Aware"),
                           EngineConfig(num_frames=8))
    assert isinstance(out, QueryRequest)
    assert out.question == "How far?" and out.options == ("left", "right")
    assert out.sampling == "space_aware" and out.num_frames == 8 and out.timeout_s == 30.0


def test_error_codes_match_the_service_definition():
    assert [(c.name, c.value) for c in ErrorCode] == [
        ("OK", 0), ("NO_FRAMES", 1), ("EMPTY_WINDOW", 2), ("BAD_REQUEST", 3), ("BUSY", 4), ("TIMEOUT", 5),
        ("MODEL_NOT_READY", 6), ("INTERNAL", 7), ("CANCELLED", 8)]


def test_model_not_ready_before_load_and_after_failed_load():
    eng = QueryEngine(FrameBuffer())
    assert eng.ask(QueryRequest("How many boxes?")).code == ErrorCode.MODEL_NOT_READY
    assert not eng.load(model="/nonexistent/checkpoint")
    assert eng.state == ModelState.ERROR
    out = eng.ask(QueryRequest("How many boxes?"))
    assert out.code == ErrorCode.MODEL_NOT_READY and "error" in out.message
    eng.shutdown()


def test_no_frames_and_empty_window(model):
    buf = FrameBuffer()
    eng = QueryEngine(buf)
    eng.attach_model(model)
    assert eng.ask(QueryRequest("How many boxes?")).code == ErrorCode.NO_FRAMES
    buf.add(Frame(5 * S, "cam", np.zeros((8, 8, 3), np.uint8)))
    out = eng.ask(QueryRequest("How many boxes?", t_start_ns=10 * S, t_end_ns=20 * S))
    assert out.code == ErrorCode.EMPTY_WINDOW and "5000000000" in out.message
    eng.shutdown(close_model=False)


def test_answer_space_aware_with_streaming_stages_and_latency(engine, model, scene_frames):
    pieces, stages = [], []
    model.eos_ids, saved = [], model.eos_ids  # the full token budget (the trained default stops early)
    try:
        out = engine.ask(QueryRequest("How many red boxes are in the room?", num_frames=4, max_new_tokens=6,
                                      t_start_ns=101 * S, t_end_ns=110 * S),
                         on_token=pieces.append, on_stage=stages.append)
    finally:
        model.eos_ids = saved
    assert out.code == ErrorCode.OK and out.success, out.message
    assert out.sampling == "space_aware" and 0 < out.coverage <= 1
    assert len(out.frame_stamps_ns) == 4 and out.frame_stamps_ns == sorted(out.frame_stamps_ns)
    assert all(101 * S <= s <= 110 * S for s in out.frame_stamps_ns)
    assert out.num_tokens == 6 and "".join(pieces).strip() == out.answer.strip()
    assert stages[:3] == ["queued", "sampling", "encoding"] and stages[-1] == "parsing"
    assert set(out.latency_ms) == set(LATENCY_KEYS)
    assert out.latency_ms["spatial_encoder_ms"] > 0 and out.latency_ms["decode_ms"] > 0
    assert out.latency_ms["total_ms"] >= out.latency_ms["prefill_ms"]
    assert out.answer_kind in ("number", "choice", "text") and isinstance(out.value, float)


def test_uniform_latest_and_fallback_without_geometry(engine, scene_frames):
    out = engine.ask(QueryRequest("Which colour?", options=["Red", "Green"], sampling="latest",
                                  num_frames=3, max_new_tokens=2))
    assert out.code == ErrorCode.OK and out.frame_stamps_ns == [f.stamp_ns for f in scene_frames[-3:]]
    assert out.choice in ("", "A", "B")
    out = engine.ask(QueryRequest("How many?", sampling="uniform", num_frames=12, max_new_tokens=1))
    assert out.code == ErrorCode.OK and out.coverage == 1.0 and len(out.frame_stamps_ns) == 12
    chosen, coverage, used = select_frames(scene_frames, 4, "space_aware", [None] * len(scene_frames))
    assert used == "uniform_fallback" and len(chosen) == 4 and coverage == pytest.approx(4 / 12)


def test_busy_when_queue_is_full(engine):
    req = QueryRequest("How many boxes?", max_new_tokens=1)
    with engine.model_lock:                     # the first query runs and blocks on the lock
        running = engine.submit(req)
        deadline = time.monotonic() + 5
        while engine.queue_depth() != (0, True) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.queue_depth() == (0, True)
        waiting = [engine.submit(req) for _ in range(2)]
        rejected = engine.submit(req)
        assert rejected.done() and rejected.result().code == ErrorCode.BUSY
        assert "2 waiting" in rejected.result().message
    assert running.result().code == ErrorCode.OK
    assert all(h.result().code == ErrorCode.OK for h in waiting)
    assert engine.stats()["by_code"]["BUSY"] >= 1


def test_timeout_returns_by_the_deadline(engine):
    with engine.model_lock:
        start = time.monotonic()
        out = engine.ask(QueryRequest("How many boxes?", timeout_s=0.3))
        elapsed = time.monotonic() - start
    assert out.code == ErrorCode.TIMEOUT and "0.3 s" in out.message
    assert 0.25 <= elapsed < 5.0               # by the deadline, not when the lock frees (never)
    later = engine.ask(QueryRequest("How many boxes?", max_new_tokens=1))   # engine still serves
    assert later.code == ErrorCode.OK


def test_cancel_running_and_waiting_queries(engine):
    stages = []
    with engine.model_lock:
        running = engine.submit(QueryRequest("How many boxes?"), on_stage=stages.append)
        waiting = engine.submit(QueryRequest("How many boxes?"))
        assert waiting.cancel() and running.cancel()
        assert running.result().code == ErrorCode.CANCELLED and waiting.result().code == ErrorCode.CANCELLED
        assert not running.cancel()                      # already finished: no second outcome
    assert "queued" in stages
    assert engine.ask(QueryRequest("How many boxes?", max_new_tokens=1)).code == ErrorCode.OK


def test_unload_cancels_waiting_and_rejects_new_queries(model, scene_frames):
    buf = FrameBuffer()
    buf.add(scene_frames[0])
    eng = QueryEngine(buf, EngineConfig(max_waiting=3))
    eng.attach_model(model)
    with eng.model_lock:                         # re-entrant: unload below does not block here
        handles = [eng.submit(QueryRequest("How many boxes?")) for _ in range(3)]
        eng.unload(close_model=False)
    assert all(h.result().code == ErrorCode.CANCELLED for h in handles)
    assert eng.state == ModelState.UNLOADED and eng.model is None
    out = eng.ask(QueryRequest("How many boxes?"))
    assert out.code == ErrorCode.MODEL_NOT_READY and "unloaded" in out.message
    assert math.isnan(out.value) and out.answer_kind == ""
    eng.attach_model(model)                      # activate again
    assert eng.ask(QueryRequest("How many boxes?", max_new_tokens=1)).code == ErrorCode.OK
    eng.shutdown(close_model=False)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """The tiny preset's seeded random weights: no end-of-sequence and a text piece at nearly every
    token, so a generation runs as long as asked (the trained default answers in a few tokens)."""
    from ros2_spatial_mllm.inference import SpatialMLLM
    from ros2_spatial_mllm.model.presets import write_tiny_assets
    m = SpatialMLLM.load(write_tiny_assets(tmp_path_factory.mktemp("tiny_random")))
    yield m
    m.close()


def test_timeout_stops_a_long_generation_mid_decode(random_model, scene_frames):
    buf = FrameBuffer(max_frames=64)
    engine = QueryEngine(buf, EngineConfig(num_frames=4, max_waiting=2, timeout_s=20.0))
    engine.attach_model(random_model)
    for f in scene_frames:
        buf.add(f)
    tokens = []

    def slow_consumer(token):  # a slow stream consumer makes every token cost >= 0.2 s, so the
        tokens.append(token)   # 0.5 s budget runs out after a few tokens on any machine
        time.sleep(0.2)

    start = time.monotonic()
    out = engine.ask(QueryRequest("Describe the room.", max_new_tokens=512, timeout_s=0.5, sampling="uniform"),
                     on_token=slow_consumer)
    assert out.code == ErrorCode.TIMEOUT, out
    assert time.monotonic() - start < 5.0         # 512 slow tokens would take > 100 s
    deadline = time.monotonic() + 10.0             # the runner stops at the next token, not at 512
    while engine.queue_depth() != (0, False) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.queue_depth() == (0, False)
    assert 1 <= len(tokens) < 512
    engine.shutdown(close_model=False)


def test_shipped_bag_questions_answer_over_the_core_pipeline(model):
    import json
    from pathlib import Path
    from ros2_spatial_mllm.bag.io import frames_from_bag
    bag = Path(__file__).resolve().parents[1] / "data" / "bags" / "synthetic_room"
    answers = json.loads((bag / "answers.json").read_text())
    buf = FrameBuffer()
    eng = QueryEngine(buf, EngineConfig(num_frames=6, max_new_tokens=4))
    worker = GeometryWorker(buf, model_provider=lambda: eng.model, model_lock=eng.model_lock)
    eng.geometry = worker
    eng.attach_model(model)
    for frame in frames_from_bag(bag):
        buf.add(frame)
    assert worker.wait_idle(20) and worker.stats()["sensor"] == len(answers["stamps_ns"])
    for item in answers["questions"]:
        out = eng.ask(QueryRequest(item["question"], options=item["options"]))
        assert out.code == ErrorCode.OK, out.message
        assert out.sampling == "space_aware" and len(out.frame_stamps_ns) == 6
        assert set(out.frame_stamps_ns) <= set(answers["stamps_ns"])
    worker.stop()
    eng.shutdown(close_model=False)


def test_types_live_in_query_types_and_stay_importable_from_query_engine():
    from ros2_spatial_mllm import query_engine, query_types
    for name in query_types.__all__:
        assert getattr(query_engine, name) is getattr(query_types, name), name
        assert name in query_engine.__all__, name
    out = query_types.error_response(query_types.ErrorCode.BUSY, "full", request_id=3)
    assert (out.code, out.message, out.request_id, out.success) == (ErrorCode.BUSY, "full", 3, False)
    assert set(out.latency_ms) == set(LATENCY_KEYS) and not any(out.latency_ms.values())


def test_space_aware_query_picks_through_the_worker_voxel_index(engine, scene_frames):
    worker = engine.geometry
    assert worker.indexed_stamps() == [f.stamp_ns for f in scene_frames]
    before = worker.stats()["index_selects"]
    out = engine.ask(QueryRequest("How many boxes?", num_frames=5, max_new_tokens=1))
    assert out.code == ErrorCode.OK and out.sampling == "space_aware"
    assert worker.stats()["index_selects"] == before + 1
    chosen, coverage, used = select_frames(scene_frames, 5, "space_aware",
                                           worker.voxels_for([f.stamp_ns for f in scene_frames]))
    assert out.frame_stamps_ns == [scene_frames[i].stamp_ns for i in chosen]     # = the stateless pick
    assert out.coverage == coverage and used == "space_aware"


class _MemoryLimitedModel:
    """Fault injection around the real tiny model: raises the accelerator's out-of-memory error
    whenever it is given more than `limit` frames (what a GPU does past its memory)."""

    def __init__(self, model, limit):
        self.model, self.limit, self.calls, self.slots = model, limit, [], []

    def answer(self, frames, *args, **kwargs):
        self.calls.append(len(frames))
        self.slots.append(kwargs.get("frame_slots"))
        if len(frames) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {len(frames)} frames)")
        return self.model.answer(frames, *args, **kwargs)

    def predict_geometry(self, *args, **kwargs):
        return self.model.predict_geometry(*args, **kwargs)


@pytest.mark.parametrize("limit, calls, code", [(3, [8, 4, 2], ErrorCode.OK), (1, [8, 4, 2], ErrorCode.INTERNAL)])
def test_out_of_memory_retries_with_fewer_frames_then_errors(model, scene_frames, limit, calls, code):
    buf = FrameBuffer(max_frames=64)
    for frame in scene_frames:
        buf.add(frame)
    eng = QueryEngine(buf, EngineConfig(num_frames=8, timeout_s=20.0))
    limited = _MemoryLimitedModel(model, limit)
    eng.attach_model(limited)
    try:
        out = eng.ask(QueryRequest("How many boxes?", sampling="uniform", max_new_tokens=2))
    finally:
        eng.shutdown(close_model=False)
    assert limited.calls == calls and out.code == code, (limited.calls, out)
    if code == ErrorCode.OK:
        assert len(out.frame_stamps_ns) == 2 and "answered from 2 of 8 frames" in out.message
        assert out.frame_stamps_ns == sorted(out.frame_stamps_ns)
        # each try tells the model where its frames lie in the window (frame_time_positions)
        window = (scene_frames[0].stamp_ns, scene_frames[-1].stamp_ns)
        assert limited.slots[-1] == window_slots(out.frame_stamps_ns, *window)
        assert len(limited.slots[0]) == 8 and limited.slots[0][0] == 0.0 and limited.slots[0][-1] == 7.0
    else:
        assert "out of memory with 2 frame(s)" in out.message


class _DeadlineAtOnceModel:
    """The real tiny model, told that the number search's deadline has already come (what a slow
    accelerator meets near a short timeout); records the deadline the engine gave."""

    def __init__(self, model):
        self.model, self.deadlines = model, []

    def answer(self, frames, *args, search_deadline=None, **kwargs):
        self.deadlines.append(search_deadline)
        return self.model.answer(frames, *args, search_deadline=time.monotonic(), **kwargs)

    def predict_geometry(self, *args, **kwargs):
        return self.model.predict_geometry(*args, **kwargs)


def test_a_number_search_cut_by_the_deadline_answers_the_greedy_number(model, scene_frames):
    buf = FrameBuffer(max_frames=64)
    for frame in scene_frames:
        buf.add(frame)
    eng = QueryEngine(buf, EngineConfig(num_frames=8, timeout_s=20.0))
    request = QueryRequest("What is the size of this room (in square meters)?", sampling="uniform")
    try:
        model.set_numeric_answers("greedy")
        eng.attach_model(model)
        greedy = eng.ask(request)
        model.set_numeric_answers("expected_mra")
        eng.attach_model(_DeadlineAtOnceModel(model))
        start = time.monotonic()
        late = eng.ask(request)
        deadline = eng.model.deadlines[0]
    finally:
        model.set_numeric_answers("expected_mra")
        eng.shutdown(close_model=False)
    assert greedy.code == ErrorCode.OK and greedy.parsed.kind == "number", greedy
    assert late.code == ErrorCode.OK and late.answer == greedy.answer
    assert "number search stopped at its deadline" in late.message
    assert start + 19.0 < deadline < start + 20.0  # the query's deadline less the margin
