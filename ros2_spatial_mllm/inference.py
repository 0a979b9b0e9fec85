"""Inference API of the Spatial-MLLM (no ROS): load a local model, answer spatial questions about
video frames (streaming, cancellable), predict per-frame geometry with the spatial encoder.

    from ros2_spatial_mllm.inference import SpatialMLLM
    mllm = SpatialMLLM.load()                      # embedded tiny preset (assets/tiny)
    result = mllm.answer(frames, "How many chair(s) are in this room?")
    result.text, result.num_tokens, result.cancelled, result.timings_ms
    geo = mllm.predict_geometry(np.stack(frames))  # depth, depth_conf, extrinsics, intrinsics
    mllm.close()
    fast = SpatialMLLM.load(device="cuda", decode_mode="compiled")   # optimised decode (below)

Decode modes (`decode_mode`, also the node parameter and `spatial-mllm ask --decode-mode`):
"eager" (default; DynamicCache through the model's forward), "static" (a StaticCache reused
across queries, ros2_spatial_mllm/backends/llm.py) and "compiled" (static + torch.compile CUDA
graphs of the one-token step; CUDA only, refused on CPU with a ValueError, and warmed up at load
so that compilation is not paid by the first query). All modes share one token loop here:
streaming (on_token), should_stop between tokens, greedy / temperature + top-p sampling with
the same seeded generator, the same timings_ms keys.

Numeric answers (`numeric_answers`, also a node parameter and `--numeric-answers`):
"expected_mra" (default) replaces a free-form greedy reply that is one bare number, ended
within the token budget, with the number of highest expected MRA under the model's own
distribution (numeric_answer.py; in static and compiled modes one more, eager, prefill; its
on_token pieces, one per token, come once the reply has ended); "greedy" keeps the
reference's digit-by-digit reply.

Loading is offline only: `model` must be an existing local directory in the official v1.1
layout (see model/checkpoint.py); Hub ids are refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .backends.llm import DEFAULT_MAX_CACHE_LEN, DECODE_MODES, LLMDecoder, check_decode_mode
from .geometry import frame_geometry_from_prediction
from .model.checkpoint import eos_token_ids, load_checkpoint, load_tokenizer, resolve_model_dir
from .model.presets import TINY_ASSETS_DIR
from .model.processing import VideoProcessingConfig, resize_frames, video_chat_inputs
from .numeric_answer import (NumberHold, SearchOutOfTime, answer_number, check_numeric_answers, is_lone_number,
                             token_pieces)
from .prompts import build_prompt
from .safety import check_model_dir, enforce_offline, model_identity

__all__ = ["DECODE_MODES", "QueryResult", "SpatialMLLM", "parse_dtype"]

LOG = logging.getLogger(__name__)
TIMING_KEYS = ("preprocess", "spatial_encoder", "vision_encoder", "connector", "prefill", "decode", "total")


@dataclass
class QueryResult:
    """Answer of one query. timings_ms keys: preprocess, spatial_encoder, vision_encoder,
    connector, prefill, decode, total (milliseconds). notes: what the caller should know about
    how the text was chosen (e.g. the number search gave way to its deadline)."""

    text: str
    num_tokens: int
    cancelled: bool
    timings_ms: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def parse_dtype(dtype, device: str) -> torch.dtype:
    """None -> float32 on CPU, bfloat16 on CUDA; also accepts "bf16", "fp16", "fp32", torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    key = str(dtype).lower().replace("torch.", "")
    if key not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[key]


class SpatialMLLM:
    """A loaded Spatial-MLLM with its tokenizer and video preprocessing (see module docstring)."""

    def __init__(self, model, tokenizer, processing: VideoProcessingConfig, model_dir: Path, preset: Optional[str],
                 device: torch.device, eos_ids: Sequence[int], load_report=None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.processing = processing
        self.device = device
        self.eos_ids = list(eos_ids)
        self.fps = 2.0  # nominal frame rate of the sampled frames (sets mRoPE time spacing)
        self.load_report = load_report
        self._answer_lock = threading.Lock()  # answer() mutates the model's mRoPE state: one at a time
        self._decoder: Optional[LLMDecoder] = None  # static / compiled decode (None = eager)
        self._eager_decoder: Optional[LLMDecoder] = None  # numeric answers branch on a DynamicCache
        self._numeric_answers = "expected_mra"
        params = sum(p.numel() for p in model.parameters())
        self._info = dict(preset=preset, model_dir=str(model_dir), **model_identity(model_dir), params=int(params),
                          device=str(device), dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
                          load_report=load_report.summary() if load_report is not None else None,
                          decode_mode="eager", numeric_answers=self._numeric_answers)

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def load(cls, model: str | Path | None = None, preset: str = "tiny", device: str = "cpu", dtype=None,
             backend: str = "torch", backend_options: dict | None = None,
             decode_mode: str | None = None, numeric_answers: str | None = None) -> "SpatialMLLM":
        """model=None -> embedded preset (only "tiny" is embedded); else a local checkpoint dir.

        backend: "torch" (default), "onnxruntime" or "tensorrt" for the encoders and connector;
        backend_options go to ros2_spatial_mllm.backends.get_backend (onnx_dir, engine_cache_dir,
        engine_precision, allow_engine_build). A missing or mismatched engine raises here, at load
        time, never silently rebuilding unless allow_engine_build=True.
        decode_mode: "eager" (default), "static" or "compiled" (CUDA only), see set_decode_mode;
        also read from backend_options["decode_mode"] (how the node passes it). An unknown mode,
        or "compiled" on a non-CUDA device, raises ValueError before any weight is read.
        numeric_answers: "expected_mra" (default) or "greedy" (module docstring); also read from
        backend_options["numeric_answers"].
        """
        options = dict(backend_options or {})
        option_mode = options.pop("decode_mode", None)
        mode = check_decode_mode(decode_mode or option_mode or "eager", device)
        option_numeric = options.pop("numeric_answers", None)
        numeric = check_numeric_answers(numeric_answers or option_numeric or "expected_mra")
        if model is None:
            if preset != "tiny":
                raise ValueError(f"preset {preset!r} has no embedded weights: pass model=<local directory>")
            model_dir, used_preset = TINY_ASSETS_DIR, "tiny"
        else:
            model_dir = resolve_model_dir(model)
            used_preset = "tiny" if model_dir.resolve() == TINY_ASSETS_DIR.resolve() else None
        torch_dtype = parse_dtype(dtype, device)
        enforce_offline()  # nothing below may reach a hub, whatever transformers would like to do
        check = check_model_dir(model_dir)  # UnsafeModelError before any weight is read
        net, report = load_checkpoint(model_dir, device=device, dtype=torch_dtype)
        if not report.ok:
            LOG.warning("checkpoint %s: %s (missing: %s, unexpected: %s)", model_dir, report.summary(),
                        report.missing[:5], report.unexpected[:5])
        tokenizer = load_tokenizer(Path(model_dir))
        engine = cls(net, tokenizer, VideoProcessingConfig.from_dir(model_dir), Path(model_dir), used_preset,
                     torch.device(device), eos_token_ids(Path(model_dir), net.config, tokenizer), report)
        engine._info["model_check"] = (f"{check.num_tensors} tensors, {check.tensor_bytes} bytes, "
                                       "safetensors only")
        if backend != "torch":
            from ros2_spatial_mllm.backends import configure_backend  # lazy: onnxruntime/tensorrt are optional

            configure_backend(engine, backend, **{"device": device, **options})
            engine._info["backend"] = backend
        engine.set_decode_mode(mode)
        engine.set_numeric_answers(numeric)
        return engine

    @property
    def info(self) -> dict:
        """dict(preset, model_dir, revision, params, device, dtype, load_report, decode_mode,
        numeric_answers)."""
        return dict(self._info)

    @property
    def decode_mode(self) -> str:
        return self._info["decode_mode"]

    def set_decode_mode(self, mode: str, max_cache_len: int = DEFAULT_MAX_CACHE_LEN,
                        warmup: bool = True) -> None:
        """Switch the LLM decode path: "eager", "static" or "compiled" (module docstring).
        ValueError (one line) for an unknown mode or "compiled" off CUDA. Waits for a running
        answer. "compiled" compiles and captures the step now (warmup=True, seconds to a minute)."""
        mode = check_decode_mode(mode, self.device)
        with self._answer_lock:
            model = self._require_model()
            decoder = None if mode == "eager" else LLMDecoder.for_mode(model, mode, max_cache_len)
            if decoder is not None and mode == "compiled" and warmup:
                try:
                    decoder.warmup()
                except Exception as exc:  # inductor/Triton errors are long: one line for the node/CLI
                    first = (str(exc).strip().splitlines() or [""])[0][:300]
                    raise RuntimeError(f"decode_mode 'compiled': torch.compile warm-up failed "
                                       f"({type(exc).__name__}: {first}); use decode_mode 'static'") from exc
            self._decoder = decoder
            self._info["decode_mode"] = mode

    def set_numeric_answers(self, mode: str) -> None:
        """"expected_mra" or "greedy" (module docstring); ValueError (one line) otherwise."""
        mode = check_numeric_answers(mode)
        with self._answer_lock:
            self._numeric_answers = self._info["numeric_answers"] = mode

    def close(self) -> None:
        """Free the model (the object is unusable afterwards)."""
        self.model = None
        self._decoder = self._eager_decoder = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _require_model(self):
        if self.model is None:
            raise RuntimeError("SpatialMLLM was closed")
        return self.model

    # ---- preprocessing --------------------------------------------------------------------

    def prepare_inputs(self, frames: Sequence[np.ndarray], prompt: str,
                       frame_slots: Optional[Sequence[float]] = None) -> dict:
        """Frames + user prompt -> tensors on the model device, pixels in the model's dtype
        (model.processing.video_chat_inputs gives the keys and shapes). frame_slots (each frame's
        place in its sampling window, `sampling.window_slots`) set the mRoPE temporal ids
        when the model was trained with `frame_time_positions`; other models ignore them."""
        timed = frame_slots is not None and bool(getattr(self.model.config, "frame_time_positions", False))
        inputs = video_chat_inputs(self.tokenizer, self.processing, self.model.config.video_token_id, frames, prompt,
                                   self.fps, slots=frame_slots if timed else None)
        dtype = next(self.model.parameters()).dtype
        pixels = ("pixel_values_videos", "spatial_pixel_values")
        return {key: value.to(self.device, dtype) if key in pixels else value.to(self.device)
                for key, value in inputs.items()}

    # ---- answering ------------------------------------------------------------------------

    @torch.inference_mode()
    def answer(self, frames: Sequence[np.ndarray], question: str, options: Optional[Sequence[str]] = None,
               max_new_tokens: int = 32, on_token: Optional[Callable[[str], None]] = None,
               should_stop: Optional[Callable[[], bool]] = None, temperature: float = 0.0, top_p: float = 1.0,
               seed: Optional[int] = None, search_deadline: Optional[float] = None,
               frame_slots: Optional[Sequence[float]] = None) -> QueryResult:
        """Answer `question` about `frames` (HxWx3 uint8 RGB). Greedy unless temperature > 0; a
        greedy reply that is one bare number is then re-chosen by `numeric_answers` (module docstring).
        search_deadline (time.monotonic() seconds): the number search does not start a step it
        would finish past it; the greedy number is answered instead, with a note in result.notes.

        on_token(piece) gets each new piece of text as it is decoded (a lone number's pieces once
        it has ended); should_stop() is polled before the encoders run, between tokens and between
        the number search's steps, and True ends generation with cancelled=True.
        frame_slots: where each frame lies in the window it was picked from (`prepare_inputs`).
        Thread-safe: concurrent calls run one after the other (predict_geometry is not blocked)."""
        if not question or not question.strip():
            raise ValueError("empty question")
        with self._answer_lock:
            return self._answer(frames, question, options, max_new_tokens, on_token, should_stop, temperature,
                                top_p, seed, search_deadline, frame_slots)

    def _answer(self, frames, question, options, max_new_tokens, on_token, should_stop, temperature, top_p,
                seed, search_deadline, frame_slots=None) -> QueryResult:
        model = self._require_model()
        timings = {key: 0.0 for key in TIMING_KEYS}
        start = _now = time.perf_counter()

        def lap(key: str) -> None:
            nonlocal _now
            _sync(self.device)
            now = time.perf_counter()
            timings[key] += (now - _now) * 1000.0
            _now = now

        inputs = self.prepare_inputs(frames, build_prompt(question, options), frame_slots)
        lap("preprocess")
        stop = should_stop or (lambda: False)
        generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        generated: List[int] = []
        text, cancelled, choice, notes = "", False, None, []
        if stop():
            cancelled = True
        else:
            features, patch_start = model.spatial_features(inputs["spatial_pixel_values"])
            lap("spatial_encoder")
            video = model.video_embeds(inputs["pixel_values_videos"], inputs["video_grid_thw"])
            lap("vision_encoder")
            fused = model.connector(video, features, patch_start, inputs["video_grid_thw"])
            lap("connector")
            numeric = self._numeric_answers == "expected_mra" and not options and temperature <= 0
            branchable = numeric and self._decoder is None  # eager: the search rewinds this session
            logits, step, session = self._prefill(model, inputs, fused, max_new_tokens, branchable)
            first_logits = logits[0]
            emit = NumberHold(on_token) if numeric else on_token  # a lone number is replaced below
            lap("prefill")
            decode_start = time.perf_counter()
            ended = False  # an end-of-sequence token came within the budget
            while len(generated) < max_new_tokens:
                token = _pick(logits[0].float(), temperature, top_p, generator)
                if token in self.eos_ids:
                    ended = True
                    break
                generated.append(token)
                new_text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if emit is not None and new_text != text and not new_text.endswith("\ufffd"):
                    emit(new_text[len(text):])
                if not new_text.endswith("\ufffd"):
                    text = new_text
                if len(generated) >= max_new_tokens:
                    break
                if stop():
                    cancelled = True
                    break
                logits = step(token)
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if numeric and ended and is_lone_number(text):  # not a number cut at the budget
                step_s = (time.perf_counter() - decode_start) / (len(generated) + 1)  # one greedy token
                try:
                    choice = self._number_by_expected_mra(model, inputs, fused, max_new_tokens, stop,
                                                          session if branchable else None, first_logits,
                                                          search_deadline, step_s, timings["prefill"] / 1e3)
                except InterruptedError:
                    cancelled = True
                except SearchOutOfTime as why:
                    notes.append(f"number search stopped at its deadline ({why}): greedy number answered")
            if choice is not None:
                generated, text = list(choice.tokens), choice.text
            if numeric:  # one piece per token, as greedy streams them
                emit.finish(token_pieces(self.tokenizer.decode, generated) if choice is not None else None)
            lap("decode")
        timings["total"] = (time.perf_counter() - start) * 1000.0
        return QueryResult(text=text, num_tokens=len(generated), cancelled=cancelled, timings_ms=timings, notes=notes)

    def _prefill(self, model, inputs: dict, fused: torch.Tensor, max_new_tokens: int, branchable: bool = False):
        """Prefill with the fused video tokens [N, hidden] -> (logits [1, V] of the first new
        token, step(token_id) -> logits [1, V] of the next, the DecodeSession or None), by the
        current decode mode; branchable=True (eager mode only) gives an LLMDecoder session."""
        if branchable and self._eager_decoder is None:
            self._eager_decoder = LLMDecoder(model)
        decoder = self._eager_decoder if branchable else self._decoder
        if decoder is not None:  # static / compiled, or eager to branch: backends/llm.py
            logits, session = decoder.start(inputs["input_ids"], fused, inputs["video_grid_thw"], max_new_tokens,
                                            inputs["second_per_grid_ts"])
            return logits, session.step, session
        model.model.rope_deltas = None
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    mm_token_type_ids=inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
                    second_per_grid_ts=inputs["second_per_grid_ts"], use_cache=True, logits_to_keep=1,
                    mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(fused,))})
        cache = [out.past_key_values]

        def step(token: int) -> torch.Tensor:
            # one unpadded sequence: no mask, so positions = cache length + the prefill's mRoPE delta
            out = model(input_ids=torch.tensor([[token]], device=self.device), past_key_values=cache[0],
                        use_cache=True)
            cache[0] = out.past_key_values
            return out.logits[:, -1]

        return out.logits[:, -1], step, None

    def _number_by_expected_mra(self, model, inputs, fused, max_new_tokens, stop, session, first_logits,
                                deadline, step_s, prefill_s):
        """numeric_answer.answer_number from the end of the prompt: the eager `session` rewound, or
        (static / compiled, session None: a static cache cannot branch) one eager prefill more.
        step_s / prefill_s: one greedy token's and the prefill's seconds, the first cost estimates
        against `deadline` (SearchOutOfTime)."""
        if session is not None:
            session.rewind(inputs["input_ids"].shape[1])
        else:
            if stop():
                raise InterruptedError("cancelled")
            if deadline is not None and time.monotonic() + prefill_s > deadline:
                raise SearchOutOfTime(f"no time for the eager prefill ({prefill_s:.3f} s)")
            logits, _, session = self._prefill(model, inputs, fused, max_new_tokens, branchable=True)
            first_logits = logits[0]
        return answer_number(session, first_logits, self.tokenizer.decode, self.eos_ids, min(8, max_new_tokens), stop,
                             deadline=deadline, row_cost_s=step_s)

    # ---- geometry -------------------------------------------------------------------------

    @property
    def camera_source(self) -> str:
        """Where `predict_geometry`'s extrinsics come from: "pair_pose" (the spatial encoder has a
        pair-pose head, as the trained tiny default does) or "camera_head" (VGGT's camera head)."""
        vggt = self._require_model().spatial_encoder.vggt_model
        return "pair_pose" if getattr(vggt, "pair_pose_head", None) is not None else "camera_head"

    @torch.inference_mode()
    def predict_geometry(self, frames: np.ndarray, max_pixels: Optional[int] = None) -> dict:
        """frames [N, H, W, 3] uint8 RGB -> numpy dict: depth [N, h, w] float32, depth_conf [N, h, w],
        extrinsics [N, 3, 4] camera-from-world (world = first frame), intrinsics [N, 3, 3] (pixels of
        the h x w model input). h x w: the resize used for answering (sides multiples of 28), or
        the same rule with `max_pixels` instead of the processor's limit. With a pair-pose head
        (the trained tiny preset) the extrinsics chain its consecutive-frame poses, and the camera
        head supplies only the intrinsics (`camera_source` says which)."""
        model = self._require_model()
        processing = self.processing
        if max_pixels is not None:
            processing = dataclasses.replace(processing, max_pixels=int(max_pixels),
                                             min_pixels=min(processing.min_pixels, int(max_pixels)))
        resized = resize_frames(frames, processing)  # [N, 3, h, w]
        dtype = next(model.spatial_encoder.parameters()).dtype
        pred = model.spatial_encoder.predict_geometry(resized[None].to(self.device, dtype))
        return frame_geometry_from_prediction(pred, tuple(resized.shape[-2:]))


def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator) -> int:
    """Greedy (temperature <= 0) or temperature + nucleus sampling; logits [V]."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.cpu() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
