"""Query engine: validated spatial questions over the frame buffer, one model run at a time.

Pipeline per query: validate -> queue (bounded; full -> BUSY) -> window of buffered frames ->
frame selection (space-aware from the geometry worker's cached voxels, uniform, or latest) ->
``SpatialMLLM.answer`` (token streaming, ``should_stop`` for cancel/timeout) -> ``parse_answer``.

Concurrency: a single runner thread executes queries in FIFO order; at most
``EngineConfig.max_waiting`` queries wait behind the running one, more are answered BUSY at
once. Each query has a deadline (submit time + timeout) covering queue wait and inference; a
query past its deadline answers TIMEOUT (the model is asked to stop at its next token). The
number search of ``numeric_answers: expected_mra`` ends ``SEARCH_MARGIN_S`` before the deadline:
a query whose greedy number is already written answers it (with a note) rather than TIMEOUT.
``QueryHandle.cancel()`` answers CANCELLED at once and stops the model at its next token.
The model's own lock (``model_lock``) is shared with the geometry worker so that both never
run the network concurrently.

Request/response/config types, ``ErrorCode`` and ``validate_request`` live in ``query_types``
and are re-exported here. No rclpy here: the node converts ROS messages to ``QueryRequest`` and ``QueryResponse`` back.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
from typing import Any, Callable

import numpy as np

from ros2_spatial_mllm.buffer import FrameBuffer
from ros2_spatial_mllm.parsing import parse_answer
from ros2_spatial_mllm.sampling.window import select_frames, window_slots  # select_frames re-exported: callers import it from here
from ros2_spatial_mllm.query_types import (  # re-exported: callers import them from here
    LATENCY_KEYS, MODEL_TIMING_KEYS, SAMPLING_MODES, EngineConfig, ErrorCode, ModelState, QueryRequest,
    QueryResponse, error_response, validate_request,
)

__all__ = ["ErrorCode", "ModelState", "SAMPLING_MODES", "LATENCY_KEYS", "MODEL_TIMING_KEYS", "QueryRequest",
           "QueryResponse", "EngineConfig", "QueryHandle", "QueryEngine", "select_frames",
           "validate_request", "error_response"]
log = logging.getLogger(__name__)


class QueryHandle:
    """A submitted query: ``result()`` blocks until it is answered (never past its deadline)."""

    def __init__(self, engine: "QueryEngine", request: QueryRequest, request_id: int,
                 on_token: Callable[[str], None] | None, on_stage: Callable[[str], None] | None) -> None:
        self.engine, self.request, self.request_id = engine, request, request_id
        self.on_token, self.on_stage = on_token, on_stage
        self.submitted = time.monotonic()
        self.deadline = self.submitted + request.timeout_s
        self.cancel_requested = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._response: QueryResponse | None = None

    def _finish(self, response: QueryResponse) -> bool:
        """Set the response once; later calls are ignored. Returns True for the first call."""
        with self._lock:
            if self._response is not None:
                return False
            response.request_id = self.request_id
            if not response.latency_ms.get("total_ms"):
                response.latency_ms["total_ms"] = (time.monotonic() - self.submitted) * 1e3
            self._response = response
        self._done.set()
        self.engine._record(response)
        return True

    def should_stop(self) -> bool:
        return self._response is not None or self.cancel_requested or time.monotonic() > self.deadline

    def cancel(self) -> bool:
        """Cancel; the response becomes CANCELLED unless the query already finished."""
        self.cancel_requested = True
        self.engine._discard(self)
        return self._finish(error_response(ErrorCode.CANCELLED, "query cancelled"))

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> QueryResponse:
        """Wait for the response; at the query deadline it is TIMEOUT. ``timeout`` (seconds)
        bounds this call only: None is returned instead if it elapses first."""
        wait = max(0.0, self.deadline - time.monotonic())
        if timeout is not None and timeout < wait:
            return self._response if self._done.wait(timeout) else None
        if not self._done.wait(wait):
            self.engine._discard(self)
            self._finish(error_response(ErrorCode.TIMEOUT,
                                        f"query exceeded its timeout of {self.request.timeout_s:g} s"))
        return self._response

    def _stage(self, stage: str) -> None:
        if self.on_stage is not None:
            try:
                self.on_stage(stage)
            except Exception:  # a broken client callback must not kill the query
                log.exception("on_stage callback failed")


MIN_RETRY_FRAMES = 2
SEARCH_MARGIN_S = 0.1  # kept free after the number search for parsing and the reply


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/accelerator OOM (torch.OutOfMemoryError), host MemoryError, or a backend's
    RuntimeError that says so (ONNX Runtime, TensorRT)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cached_memory() -> None:
    import gc
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def thin_frames(frames: list, k: int) -> list:
    """k of the frames, evenly spaced, in time order."""
    keep = np.unique(np.linspace(0, len(frames) - 1, max(1, k)).round().astype(int))
    return [frames[i] for i in keep]


class QueryEngine:
    """Runs spatial queries for a FrameBuffer with one model (see module docstring).

    ``geometry``: optional object with ``voxels_for(stamps) -> list[voxel set | None]``
    (``GeometryWorker``). ``loader``: ``callable(**kwargs) -> model``; default
    ``SpatialMLLM.load``.
    """

    def __init__(self, buffer: FrameBuffer, config: EngineConfig | None = None, geometry: Any = None,
                 loader: Callable[..., Any] | None = None) -> None:
        self.buffer, self.config, self.geometry = buffer, config or EngineConfig(), geometry
        self._loader = loader
        self.model_lock = threading.RLock()   # held while the network runs (queries, geometry)
        self._state_lock = threading.Lock()
        self._state, self._model, self._state_error = ModelState.UNLOADED, None, ""
        self._cv = threading.Condition()
        self._waiting: collections.deque[QueryHandle] = collections.deque()
        self._running: QueryHandle | None = None
        self._ids = itertools.count(1)
        self._stats = {"submitted": 0, "by_code": {c.name: 0 for c in ErrorCode}, "last_latency_ms": {}}
        self._closed = False
        self._runner = threading.Thread(target=self._run_loop, name="query-engine", daemon=True)
        self._runner.start()

    # ------------------------------------------------------------------ model lifecycle
    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def model(self) -> Any:
        """The loaded model, or None when not READY."""
        return self._model if self._state == ModelState.READY else None

    def load(self, **kwargs: Any) -> bool:
        """Load the model (``SpatialMLLM.load(**kwargs)``); True on success, else state ERROR
        with ``state_error``. Idempotent while READY."""
        with self._state_lock:
            if self._state == ModelState.READY:
                return True
            self._state = ModelState.LOADING
        try:
            loader = self._loader
            if loader is None:
                from ros2_spatial_mllm.inference import SpatialMLLM
                loader = SpatialMLLM.load
            model = loader(**kwargs)
        except Exception as exc:
            with self._state_lock:
                self._state, self._state_error = ModelState.ERROR, f"{type(exc).__name__}: {exc}"
            # the caller (node activate) reports state_error in its own log line: debug here, not twice
            log.debug("model load failed: %s", self._state_error)
            return False
        self.attach_model(model)
        return True

    def attach_model(self, model: Any) -> None:
        """Use an already loaded model object (with ``answer``/``predict_geometry``)."""
        with self._state_lock:
            self._model, self._state, self._state_error = model, ModelState.READY, ""

    @property
    def state_error(self) -> str:
        return self._state_error

    def unload(self, close_model: bool = True) -> None:
        """Cancel waiting and running queries, wait for the running model call to return, then
        drop the model (``model.close()`` unless ``close_model`` is False); state UNLOADED."""
        with self._state_lock:
            if self._state == ModelState.UNLOADED:
                return
            self._state = ModelState.UNLOADING
        self._cancel_all("model unloaded")
        with self.model_lock:  # wait for the running model call to return
            model, self._model = self._model, None
            if close_model and model is not None and hasattr(model, "close"):
                model.close()
        with self._state_lock:
            self._state = ModelState.UNLOADED

    def shutdown(self, close_model: bool = True) -> None:
        """Stop the runner thread (queries still waiting are CANCELLED) and unload."""
        self._closed = True
        self.unload(close_model)
        with self._cv:
            self._cv.notify_all()
        self._runner.join(timeout=5.0)

    def _discard(self, handle: QueryHandle) -> None:
        """Take a finished/abandoned query out of the waiting queue (frees its slot)."""
        with self._cv:
            try:
                self._waiting.remove(handle)
            except ValueError:
                pass

    def _cancel_all(self, why: str) -> None:
        with self._cv:
            handles = list(self._waiting) + ([self._running] if self._running else [])
            self._waiting.clear()
        for handle in handles:
            handle.cancel_requested = True
            handle._finish(error_response(ErrorCode.CANCELLED, why))

    # ------------------------------------------------------------------ queries
    def submit(self, request: QueryRequest, on_token: Callable[[str], None] | None = None,
               on_stage: Callable[[str], None] | None = None) -> QueryHandle:
        """Validate and enqueue; returns at once. Rejections (BAD_REQUEST, MODEL_NOT_READY,
        BUSY) come back as an already finished handle."""
        request_id = next(self._ids)
        checked = validate_request(request, self.config)
        handle = QueryHandle(self, checked if isinstance(checked, QueryRequest) else
                             QueryRequest("", timeout_s=self.config.timeout_s), request_id, on_token, on_stage)
        with self._cv:
            self._stats["submitted"] += 1
        if isinstance(checked, QueryResponse):
            handle._finish(checked)
        elif self._state != ModelState.READY or self._closed:
            handle._finish(error_response(ErrorCode.MODEL_NOT_READY, f"model is {self._state.value}"
                                          + (f" ({self._state_error})" if self._state_error else "")))
        else:
            with self._cv:
                busy = len(self._waiting) >= self.config.max_waiting
                if not busy:
                    self._waiting.append(handle)
                    self._cv.notify()
            if busy:
                handle._finish(error_response(ErrorCode.BUSY,
                                              f"query queue is full ({self.config.max_waiting} waiting)"))
            else:
                handle._stage("queued")
        return handle

    def ask(self, request: QueryRequest, on_token: Callable[[str], None] | None = None,
            on_stage: Callable[[str], None] | None = None) -> QueryResponse:
        """Blocking ``submit(...).result()``; returns by the query's deadline at the latest."""
        return self.submit(request, on_token, on_stage).result()

    def queue_depth(self) -> tuple[int, bool]:
        """(waiting queries, whether one is running)."""
        with self._cv:
            return len(self._waiting), self._running is not None

    def stats(self) -> dict:
        with self._cv:
            out = {"state": self._state.value, "waiting": len(self._waiting),
                   "running": self._running is not None, "submitted": self._stats["submitted"],
                   "by_code": dict(self._stats["by_code"]),
                   "last_latency_ms": dict(self._stats["last_latency_ms"])}
        return out

    def _record(self, response: QueryResponse) -> None:
        with self._cv:
            self._stats["by_code"][response.code.name] += 1
            if response.code == ErrorCode.OK:
                self._stats["last_latency_ms"] = dict(response.latency_ms)

    def _run_loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if self._closed and not self._waiting:
                    return
                handle = self._waiting.popleft()
                self._running = handle
            try:
                if not handle.should_stop():
                    response = self._execute(handle)
                    handle._finish(response)
                elif time.monotonic() > handle.deadline:
                    handle._finish(error_response(ErrorCode.TIMEOUT, "query timed out while queued"))
            except Exception as exc:  # never let one query kill the runner
                log.error("query %d failed: %s", handle.request_id, traceback.format_exc())
                handle._finish(error_response(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
            finally:
                with self._cv:
                    self._running = None

    def _execute(self, handle: QueryHandle) -> QueryResponse:
        """Run one query. Out of memory in the model is retried with half the frames (evenly
        thinned, time order kept) down to MIN_RETRY_FRAMES, then answered INTERNAL with the reason;
        the response message says when fewer frames were used."""
        request, t_start = handle.request, time.monotonic()
        latency = dict.fromkeys(LATENCY_KEYS, 0.0)
        latency["queue_ms"] = (t_start - handle.submitted) * 1e3
        handle._stage("sampling")
        if len(self.buffer) == 0:
            return error_response(ErrorCode.NO_FRAMES, "no frames buffered yet (is the camera topic publishing?)")
        frames = self.buffer.window(request.t_start_ns or None, request.t_end_ns or None)
        if not frames:
            stats = self.buffer.stats()
            return error_response(ErrorCode.EMPTY_WINDOW,
                                  f"no frame in window [{request.t_start_ns}, {request.t_end_ns}] ns; buffer holds "
                                  f"[{stats['oldest_stamp_ns']}, {stats['newest_stamp_ns']}] ns")
        voxel_sets = None
        if request.sampling == "space_aware" and self.geometry is not None:
            voxel_sets = self.geometry.voxels_for([f.stamp_ns for f in frames])
        chosen, coverage, used = select_frames(frames, request.num_frames, request.sampling, voxel_sets,
                                               self.config.max_candidates,
                                               getattr(self.geometry, "select_space_aware", None))
        picked = [frames[i] for i in chosen]
        latency["sampling_ms"] = (time.monotonic() - t_start) * 1e3
        model = self.model
        if model is None:
            return error_response(ErrorCode.MODEL_NOT_READY, f"model is {self._state.value}")
        tokens: list[str] = []
        retried = 0

        def on_token(text: str) -> None:
            if not tokens:
                handle._stage("decoding")
            tokens.append(text)
            if handle.on_token is not None and not handle.should_stop():
                handle.on_token(text)

        handle._stage("encoding")
        with self.model_lock:
            if handle.should_stop():
                return error_response(ErrorCode.CANCELLED if handle.cancel_requested else ErrorCode.TIMEOUT, "stopped")
            while True:
                try:
                    # where the picks lie in the window (read by a model trained with frame_time_positions)
                    slots = window_slots([f.stamp_ns for f in picked], frames[0].stamp_ns, frames[-1].stamp_ns)
                    result = model.answer([np.ascontiguousarray(f.rgb) for f in picked], request.question,
                                          list(request.options) or None, max_new_tokens=request.max_new_tokens,
                                          on_token=on_token, should_stop=handle.should_stop,
                                          search_deadline=handle.deadline - SEARCH_MARGIN_S, frame_slots=slots)
                    break
                except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                    if not is_out_of_memory(exc):
                        raise
                    oom = str(exc)
                    # the failed attempt's activations are still referenced by the traceback's
                    # frames: free them before the retry allocates its own
                    traceback.clear_frames(exc.__traceback__)
                release_cached_memory()  # outside the except block, where the exception is gone
                if len(picked) <= MIN_RETRY_FRAMES or tokens:
                    return error_response(ErrorCode.INTERNAL, f"out of memory with {len(picked)} frame(s): {oom}")
                log.warning("out of memory with %d frames; retrying with %d", len(picked), len(picked) // 2)
                picked = thin_frames(picked, len(picked) // 2)
                retried = len(picked)
        if handle.cancel_requested:
            return error_response(ErrorCode.CANCELLED, "query cancelled")
        if getattr(result, "cancelled", False) or time.monotonic() > handle.deadline:
            return error_response(ErrorCode.TIMEOUT, f"query exceeded its timeout of {request.timeout_s:g} s")
        handle._stage("parsing")
        timings = getattr(result, "timings_ms", {}) or {}
        for key in MODEL_TIMING_KEYS:
            latency[f"{key}_ms"] = float(timings.get(key, 0.0))
        parsed = parse_answer(result.text, list(request.options) or None)
        notes = [] if used == request.sampling else [f"sampling fell back to {used}: geometry not ready"]
        if retried:
            notes.append(f"out of memory: answered from {retried} of {len(chosen)} frames")
        notes.extend(getattr(result, "notes", []))
        note = "; ".join(notes)
        response = QueryResponse(ErrorCode.OK, note, parsed.text, parsed, [f.stamp_ns for f in picked],
                                 coverage, int(getattr(result, "num_tokens", len(tokens))),
                                 used, len(picked), handle.request_id, latency)
        latency["total_ms"] = (time.monotonic() - handle.submitted) * 1e3
        return response

