"""Request, response and configuration types of the query engine (no threads, no model, no rclpy).

``QueryRequest`` in, ``QueryResponse`` out; ``EngineConfig`` holds defaults and limits;
``validate_request`` normalises a request or answers BAD_REQUEST. ``query_engine`` re-exports
every name here, so ``from ros2_spatial_mllm.query_engine import QueryRequest`` keeps working.

Error codes (``ErrorCode``, mirrored as uint8 constants in srv/AskSpatial.srv):
    OK=0 answered; NO_FRAMES=1 buffer empty; EMPTY_WINDOW=2 no frame in the window;
    BAD_REQUEST=3 invalid question/options/window/num_frames/sampling/limits; BUSY=4 queue full;
    TIMEOUT=5 deadline passed; MODEL_NOT_READY=6 model not loaded; INTERNAL=7 unexpected error;
    CANCELLED=8 cancelled by the client or by unload/shutdown.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ros2_spatial_mllm.parsing import ParsedAnswer
from ros2_spatial_mllm.prompts import check_text, normalize_options

__all__ = ["ErrorCode", "ModelState", "SAMPLING_MODES", "LATENCY_KEYS", "MODEL_TIMING_KEYS",
           "QueryRequest", "QueryResponse", "EngineConfig", "error_response", "validate_request"]


class ErrorCode(enum.IntEnum):
    """Outcome of a query; values are the uint8 constants of srv/AskSpatial.srv."""

    OK = 0
    NO_FRAMES = 1
    EMPTY_WINDOW = 2
    BAD_REQUEST = 3
    BUSY = 4
    TIMEOUT = 5
    MODEL_NOT_READY = 6
    INTERNAL = 7
    CANCELLED = 8


class ModelState(str, enum.Enum):
    """Model lifecycle in the engine (``QueryEngine.state``)."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    ERROR = "error"


SAMPLING_MODES = ("space_aware", "uniform", "latest")
LATENCY_KEYS = ("queue_ms", "sampling_ms", "geometry_ms", "preprocess_ms", "spatial_encoder_ms",
                "vision_encoder_ms", "connector_ms", "prefill_ms", "decode_ms", "total_ms")
MODEL_TIMING_KEYS = ("preprocess", "spatial_encoder", "vision_encoder", "connector", "prefill", "decode")


@dataclass
class QueryRequest:
    """A question about buffered frames. Zero/empty fields mean "engine default"/"unbounded"."""

    question: str
    options: Sequence[str] = ()
    t_start_ns: int = 0          # oldest stamp to consider; 0 = unbounded
    t_end_ns: int = 0            # newest stamp to consider; 0 = unbounded
    num_frames: int = 0          # frames given to the model; 0 = default
    sampling: str = ""           # one of SAMPLING_MODES; "" = default
    max_new_tokens: int = 0      # 0 = default
    timeout_s: float = 0.0       # 0 = default


@dataclass
class QueryResponse:
    """Outcome of one query. ``latency_ms`` has every key of LATENCY_KEYS (0 = stage not run)."""

    code: ErrorCode
    message: str = ""
    answer: str = ""
    parsed: ParsedAnswer | None = None
    frame_stamps_ns: list[int] = field(default_factory=list)
    coverage: float = 0.0
    num_tokens: int = 0
    sampling: str = ""
    num_frames: int = 0
    request_id: int = 0
    latency_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LATENCY_KEYS, 0.0))

    @property
    def success(self) -> bool:
        return self.code == ErrorCode.OK

    @property
    def answer_kind(self) -> str:
        return self.parsed.kind if self.parsed else ""

    @property
    def value(self) -> float:
        return float(self.parsed.value) if self.parsed and self.parsed.value is not None else math.nan

    @property
    def choice(self) -> str:
        return (self.parsed.choice or "") if self.parsed else ""


@dataclass
class EngineConfig:
    """Defaults and limits (the node maps its parameters onto these)."""

    num_frames: int = 16
    max_num_frames: int = 64
    sampling: str = "space_aware"
    max_new_tokens: int = 32
    max_new_tokens_limit: int = 512
    timeout_s: float = 30.0
    max_timeout_s: float = 600.0
    max_waiting: int = 4
    max_question_chars: int = 2000
    max_request_bytes: int = 10_000   # question + options, UTF-8
    max_candidates: int = 128         # space-aware candidates (linspace over the window)


def error_response(code: ErrorCode, message: str, request_id: int = 0) -> QueryResponse:
    """A failed ``QueryResponse`` with every latency key at 0."""
    return QueryResponse(code=code, message=message, request_id=request_id)


def validate_request(request: QueryRequest, config: EngineConfig) -> QueryRequest | QueryResponse:
    """Return a normalised copy of ``request`` (defaults filled, options de-lettered) or a
    BAD_REQUEST ``QueryResponse`` naming the first problem found."""
    def bad(msg: str) -> QueryResponse:
        return error_response(ErrorCode.BAD_REQUEST, msg)

    if not isinstance(request, QueryRequest):
        return bad(f"request must be a QueryRequest, got {type(request).__name__}")
    question = request.question
    if not isinstance(question, str):
        return bad(f"question must be a string, got {type(question).__name__}")
    question = question.strip()
    if not question:
        return bad("question is empty")
    options = list(request.options or ())
    size = len(question.encode("utf-8", "replace")) + sum(
        len(o.encode("utf-8", "replace")) for o in options if isinstance(o, str))
    if size > config.max_request_bytes:
        return bad(f"request is too large ({size} bytes, limit {config.max_request_bytes})")
    if len(question) > config.max_question_chars:
        return bad(f"question is too long ({len(question)} characters, limit {config.max_question_chars})")
    if "\x00" in question:
        return bad("question contains a NUL character")
    try:
        check_text(question, "question")
    except ValueError as exc:
        return bad(str(exc))
    if options:
        try:
            options = normalize_options(options)
        except ValueError as exc:
            return bad(f"malformed options: {exc}")
    t0, t1 = request.t_start_ns, request.t_end_ns
    if not all(isinstance(t, (int, np.integer)) for t in (t0, t1)) or t0 < 0 or t1 < 0:
        return bad(f"window stamps must be non-negative integers (ns), got {t0!r}, {t1!r}")
    if t0 and t1 and t0 > t1:
        return bad(f"window start {t0} ns is after window end {t1} ns")
    num_frames = request.num_frames or config.num_frames
    if not isinstance(num_frames, (int, np.integer)) or not 1 <= num_frames <= config.max_num_frames:
        return bad(f"num_frames must be 0 (default) or 1..{config.max_num_frames}, got {request.num_frames!r}")
    sampling = (request.sampling or config.sampling).strip().lower().replace("-", "_")
    if sampling not in SAMPLING_MODES:
        return bad(f"unknown sampling {request.sampling!r}; one of {', '.join(SAMPLING_MODES)}")
    max_new_tokens = request.max_new_tokens or config.max_new_tokens
    if not isinstance(max_new_tokens, (int, np.integer)) or not 1 <= max_new_tokens <= config.max_new_tokens_limit:
        return bad(f"max_new_tokens must be 0 (default) or 1..{config.max_new_tokens_limit}, "
                   f"got {request.max_new_tokens!r}")
    timeout_s = request.timeout_s or config.timeout_s
    if not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= config.max_timeout_s:
        return bad(f"timeout_s must be 0 (default) or in (0, {config.max_timeout_s}], got {request.timeout_s!r}")
    return QueryRequest(question, tuple(options), int(t0), int(t1), int(num_frames), sampling,
                        int(max_new_tokens), float(timeout_s))
