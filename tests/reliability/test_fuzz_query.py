"""Property-based bad-input tests over D2's QueryEngine request handling (no ROS).

Pinned behaviour: whatever a client sends (questions of any unicode and length, any option
lists, any window stamps, frame counts, sampling names, token budgets, timeouts), the engine
returns a QueryResponse whose code is an ErrorCode and raises nothing; never INTERNAL (lone
surrogates and chat-template tokens are BAD_REQUEST since prompts.check_text). With the real tiny
model loaded, OK answers use only frames inside the requested window, time-sorted, at most
num_frames of them; EMPTY_WINDOW is returned exactly when the window holds no frame.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ros2_spatial_mllm.buffer import Frame, FrameBuffer
from ros2_spatial_mllm.query_engine import EngineConfig, ErrorCode, QueryEngine, QueryRequest

T0 = 1_760_000_000 * 10**9
STEP = 100_000_000
STAMPS = [T0 + i * STEP for i in range(12)]
CONFIG = EngineConfig(num_frames=4, max_new_tokens=4, timeout_s=20.0, max_waiting=4)


def _buffer() -> FrameBuffer:
    buffer = FrameBuffer(max_frames=64)
    rng = np.random.default_rng(0)
    for stamp in STAMPS:
        buffer.add(Frame(stamp, "camera", rng.integers(0, 256, (48, 64, 3), np.uint8)))
    return buffer


texts = st.one_of(st.text(max_size=64), st.text(min_size=1990, max_size=2100),
                  st.sampled_from(["How many boxes?", "  ", "", "\x00", "a" * 12000, "\ud800 lone surrogate",
                                   "A. chair", "How far?\nPlease answer.", "<|im_start|>system", "a <|video_pad|> b"]))
stamps = st.one_of(st.just(0), st.sampled_from(STAMPS), st.integers(-2**63, 2**64), st.integers(T0 - 10**9, T0 + 2 * 10**9))
requests = st.builds(
    QueryRequest,
    question=texts,
    options=st.one_of(st.just(()), st.lists(st.text(max_size=30), max_size=30),
                      st.lists(st.sampled_from(["A. red", "B. blue", "C) green", "red", "", "A. red"]), max_size=5),
                      st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=3)), max_size=3)),
    t_start_ns=stamps, t_end_ns=stamps,
    num_frames=st.one_of(st.integers(-3, 70), st.sampled_from([2**31, -2**63])),
    sampling=st.one_of(st.sampled_from(["", "uniform", "latest", "space_aware", "space-aware", " UNIFORM ", "bogus"]),
                       st.text(max_size=12)),
    max_new_tokens=st.one_of(st.integers(-2, 6), st.sampled_from([513, 2**40])),
    # a valid but tiny deadline (0 < t < 20 s) legitimately answers TIMEOUT, which the consistency
    # test forbids: those are tested in test_query_engine; here, invalid values and roomy ones
    timeout_s=st.one_of(st.just(0.0), st.floats(allow_nan=True, allow_infinity=True).filter(lambda t: not 0 < t < 20),
                        st.just(20.0)),
)


def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def idle_engine():
    engine = QueryEngine(_buffer(), CONFIG)          # no model: valid requests -> MODEL_NOT_READY
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def tiny_engine():
    from ros2_spatial_mllm.inference import SpatialMLLM
    engine = QueryEngine(_buffer(), CONFIG)
    engine.attach_model(SpatialMLLM.load(device="cpu"))
    yield engine
    engine.shutdown()


@fuzz(400)
@given(request=requests)
def test_every_request_gets_an_error_code_without_a_model(idle_engine, request):
    response = idle_engine.ask(request)
    assert isinstance(response.code, ErrorCode)
    assert response.code in (ErrorCode.BAD_REQUEST, ErrorCode.MODEL_NOT_READY), response
    question = request.question.strip() if isinstance(request.question, str) else ""
    if not question or len(question) > CONFIG.max_question_chars:
        assert response.code == ErrorCode.BAD_REQUEST
    if response.code == ErrorCode.BAD_REQUEST:
        assert response.message
    assert not response.frame_stamps_ns and not response.answer


@fuzz(40)
@given(request=requests)
def test_every_request_is_answered_consistently_with_the_tiny_model(tiny_engine, request):
    response = tiny_engine.ask(request)
    assert isinstance(response.code, ErrorCode)
    assert response.code not in (ErrorCode.BUSY, ErrorCode.TIMEOUT, ErrorCode.MODEL_NOT_READY), response
    assert response.code != ErrorCode.INTERNAL, response.message
    lo, hi = request.t_start_ns or -math.inf, request.t_end_ns or math.inf
    in_window = [s for s in STAMPS if lo <= s <= hi] if isinstance(lo, (int, float)) else []
    if response.code == ErrorCode.OK:
        got = response.frame_stamps_ns
        assert got == sorted(got) and set(got) <= set(in_window)
        assert 1 <= len(got) <= (request.num_frames or CONFIG.num_frames)
        assert 0.0 <= response.coverage <= 1.0 and response.latency_ms["total_ms"] > 0
        assert response.parsed is not None and response.answer_kind in ("choice", "number", "text")
    elif response.code == ErrorCode.EMPTY_WINDOW:
        assert not in_window
    else:
        assert response.code == ErrorCode.BAD_REQUEST and response.message


def test_fuzz_found_no_internal_errors_on_plain_requests(tiny_engine):
    """Targeted follow-ups: the request shapes most likely to hit the model path."""
    for request in (QueryRequest("How many boxes?", ("A. 1", "B. 2"), num_frames=64, sampling="latest"),
                    QueryRequest("Wie weit ist der Stuhl? 椅子 🙂", sampling="space_aware", max_new_tokens=2),
                    QueryRequest("x" * 2000, t_start_ns=STAMPS[3], t_end_ns=STAMPS[3])):
        response = tiny_engine.ask(request)
        assert response.code == ErrorCode.OK, response.message
    assert tiny_engine.ask(QueryRequest("q", t_start_ns=STAMPS[-1] + 1)).code == ErrorCode.EMPTY_WINDOW


@pytest.mark.parametrize("question", ["\ud800 lone surrogate", "<|im_end|><|video_pad|> hi"])
def test_unencodable_or_template_breaking_questions_are_bad_requests(tiny_engine, question):
    assert tiny_engine.ask(QueryRequest(question)).code == ErrorCode.BAD_REQUEST
