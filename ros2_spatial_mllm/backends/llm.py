"""LLM path: prefill with the fused visual tokens, KV cache, greedy / sampled streaming decode.

    decoder = LLMDecoder(model)                                   # eager, DynamicCache
    decoder = LLMDecoder(model, static_cache=True, compile_decode=True)   # GPU: StaticCache +
                                        # torch.compile(mode="reduce-overhead") => CUDA graphs
    out = decoder.generate(input_ids [1, L], fused_video [N, hidden], video_grid_thw [1, 3],
                           GenerationSettings(max_new_tokens=32), on_token=print_piece)

Prefill: token embeddings with the fused video tokens scattered into the <|video_pad|> slots,
Qwen2.5-VL's 3D (t, h, w) RoPE positions from get_rope_index, one language-model pass filling
the cache, logits of the last position only. Decode: one token per step at position
(cache length + rope delta), no encoder runs. `on_token(token_id)` streams every new token;
`should_stop()` is polled between steps (cancel). The spatial encoder never runs here.

Step by step (SpatialMLLM.answer drives its own loop for text streaming):
    logits, session = decoder.start(input_ids, fused_video, video_grid_thw, max_new_tokens)
    logits = session.step(next_token)          # logits [1, V]; one token per call

Decode modes (`DECODE_MODES`, SpatialMLLM.load(decode_mode=...), node parameter decode_mode):
    eager     DynamicCache, grown by concatenation each step (transformers' default path)
    static    StaticCache allocated once and reused across queries (sized to the prompt + budget,
              rounded up to CACHE_LEN_STEP; re-allocated only when a longer query comes)
    compiled  static + torch.compile(mode="reduce-overhead") of the one-token step, i.e. CUDA
              graphs; the cache is allocated at max_cache_len once so the graph never re-records.
              CUDA only: on CPU there are no CUDA graphs, inductor needs a C++ toolchain at run
              time and the first query would pay tens of seconds of compilation, so it is refused
              (`check_decode_mode`) instead of silently running something else.
One decoder runs one generation at a time (the static cache is shared between calls).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

DECODE_MODES = ("eager", "static", "compiled")
CACHE_LEN_STEP = 256  # static cache sizes are multiples of this (few distinct shapes)
DEFAULT_MAX_CACHE_LEN = 8192


def check_decode_mode(mode: str, device: Any = "cpu") -> str:
    """Validated decode mode for a model on `device`; ValueError (one line) otherwise."""
    name = str(mode or "").strip().lower()
    if name not in DECODE_MODES:
        raise ValueError(f"unknown decode_mode {mode!r}; choose one of {', '.join(DECODE_MODES)}")
    if name == "compiled" and torch.device(device).type != "cuda":
        raise ValueError(f"decode_mode 'compiled' needs a CUDA device (torch.compile CUDA graphs), "
                         f"got device {str(device)!r}; use 'static' or 'eager' on CPU")
    return name


@dataclass
class GenerationSettings:
    """Decoding options. do_sample=False is greedy; temperature/top_k/top_p apply when sampling."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    eos_token_ids: Sequence[int] = ()


@dataclass
class GenerationOutput:
    token_ids: list = field(default_factory=list)
    finish_reason: str = "length"  # eos | length | cancelled
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    prompt_tokens: int = 0

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(len(self.token_ids) - 1, 0)  # the first token comes from the prefill
        return steps / (self.decode_ms / 1000.0) if self.decode_ms > 0 and steps else 0.0


def select_next_token(logits: torch.Tensor, settings: GenerationSettings,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits [B, V] -> next token ids [B] (argmax, or temperature / top-k / top-p sampling)."""
    if not settings.do_sample or settings.temperature <= 0:
        return logits.argmax(dim=-1)
    scores = logits.float() / settings.temperature
    if settings.top_k and settings.top_k < scores.shape[-1]:
        kth = torch.topk(scores, settings.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if settings.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        probs = sorted_scores.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > settings.top_p  # keep the smallest nucleus
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class DecodeSession:
    """One generation in progress: the cache after the prefill and the next token's position."""

    def __init__(self, decoder: "LLMDecoder", cache: Any, delta: torch.Tensor, length: int):
        self.decoder, self.cache, self.delta = decoder, cache, delta
        self.position = int(length)  # sequence position of the next token fed in (before delta)

    def step(self, token: Any) -> torch.Tensor:
        """Feed one token (int or tensor holding one id) -> logits [1, V] of the next one."""
        device = self.decoder.device
        token = token.view(1, 1) if torch.is_tensor(token) else torch.tensor([[int(token)]], device=device)
        position = (torch.full((1, 1), self.position, device=device) + self.delta)
        self.position += 1
        return self.decoder._step(token.to(device), position.view(1, 1, 1).expand(3, 1, 1), self.cache)

    def _require_dynamic_cache(self, what: str) -> None:
        """ValueError unless this session's cache is a DynamicCache (eager), which can grow and shrink."""
        from transformers import DynamicCache

        if not isinstance(self.cache, DynamicCache):
            raise ValueError(f"{what} needs an eager decode session (DynamicCache)")

    def rewind(self, length: int) -> None:
        """Drop every token after the first `length` (eager sessions: DynamicCache.crop)."""
        self._require_dynamic_cache("rewind")
        excess = int(self.cache.get_seq_length()) - int(length)
        if excess > 0:
            self.cache.crop(-excess)  # negative: remove that many (transformers 4.x and 5.x alike)
        self.position = int(length)

    @torch.inference_mode()
    def branch_logits(self, prefixes: Sequence[Sequence[int]], max_bytes: int = 512 << 20) -> torch.Tensor:
        """Logits [F, V] of the token after each of F continuations (equal length d) of where the
        session stands, leaving the session as it was. Eager (DynamicCache) sessions only.

        Continuations run in batches on the cache repeated once per row (a new DynamicCache; the
        session's own is not touched); a batch holds as many rows as fit in max_bytes of repeated
        cache (at least 1, at most 64)."""
        from transformers import DynamicCache

        self._require_dynamic_cache("branch_logits")
        ids = torch.tensor([list(p) for p in prefixes], dtype=torch.long, device=self.decoder.device)  # [F, d]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError("branch_logits needs one or more non-empty continuations of equal length")
        steps = torch.arange(ids.shape[1], device=ids.device) + self.position
        cache_bytes = sum(t.numel() * t.element_size() for layer in self.cache.layers
                          for t in (layer.keys, layer.values) if torch.is_tensor(t))
        out = []
        for rows in ids.split(max(1, min(64, max_bytes // max(cache_bytes, 1)))):
            cache = DynamicCache(config=self.decoder.config.get_text_config(decoder=True))
            for index, layer in enumerate(self.cache.layers):  # [1, heads, L, d] -> [f, heads, L, d]
                cache.update(layer.keys.repeat_interleave(rows.shape[0], 0),
                             layer.values.repeat_interleave(rows.shape[0], 0), index)
            position = (steps.view(1, -1) + self.delta).expand(rows.shape[0], -1)  # [f, d], delta [1, 1]
            out.append(self.decoder._forward(self.decoder.embed(rows), position[None].expand(3, -1, -1), cache))
        return torch.cat(out)


class LLMDecoder:
    """Prefill + incremental decode over a SpatialMLLMForConditionalGeneration's language model."""

    def __init__(self, model: Any, static_cache: bool = False, compile_decode: bool = False,
                 max_cache_len: int = DEFAULT_MAX_CACHE_LEN):
        self.model = model
        self.config = model.config
        self.static_cache = static_cache
        self.compile_decode = compile_decode
        self.max_cache_len = int(max_cache_len)
        self.language_model = model.model.language_model
        self.embed = model.get_input_embeddings()
        self._step = self._decode_step
        self._cache: Any = None  # the reused StaticCache
        self._cache_len = 0
        if compile_decode:
            if self.device.type != "cuda":
                raise RuntimeError("compile_decode needs CUDA (CUDA graphs via torch.compile); "
                                   f"the model is on {self.device}")
            if not static_cache:
                raise ValueError("compile_decode needs static_cache=True (fixed shapes)")
            self._step = torch.compile(self._decode_step, mode="reduce-overhead", fullgraph=False)

    @classmethod
    def for_mode(cls, model: Any, mode: str, max_cache_len: int = DEFAULT_MAX_CACHE_LEN) -> "LLMDecoder":
        """Decoder for decode mode "eager", "static" or "compiled" (see check_decode_mode)."""
        mode = check_decode_mode(mode, model.get_input_embeddings().weight.device)
        return cls(model, static_cache=mode != "eager", compile_decode=mode == "compiled",
                   max_cache_len=max_cache_len)

    @property
    def mode(self) -> str:
        return "compiled" if self.compile_decode else "static" if self.static_cache else "eager"

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def new_cache(self, needed: Optional[int] = None) -> Any:
        """A DynamicCache (eager), or the decoder's StaticCache reset for reuse, holding >= `needed`
        tokens (compiled: always max_cache_len, so the captured graph keeps its shapes)."""
        from transformers import DynamicCache, StaticCache

        text = self.config.get_text_config(decoder=True)
        if not self.static_cache:
            return DynamicCache(config=text)
        needed = self.max_cache_len if needed is None else int(needed)
        if needed > self.max_cache_len:
            raise ValueError(f"{needed} tokens exceed the static cache ({self.max_cache_len})")
        if self._cache is not None and self._cache_len >= needed:
            self._cache.reset()
            return self._cache
        size = self.max_cache_len if self.compile_decode else min(
            self.max_cache_len, -(-needed // CACHE_LEN_STEP) * CACHE_LEN_STEP)
        self._cache, self._cache_len = None, 0  # free the old one before allocating
        self._cache, self._cache_len = StaticCache(config=text, max_cache_len=size), size
        return self._cache

    def prompt_embeddings(self, input_ids: torch.Tensor,
                          fused_video: Optional[torch.Tensor]) -> torch.Tensor:
        """input_ids [B, L] -> [B, L, hidden] with fused video tokens in the video slots."""
        embeds = self.embed(input_ids)
        if fused_video is None:
            return embeds
        slots = input_ids == self.config.video_token_id
        if int(slots.sum()) != fused_video.shape[0]:
            raise ValueError(f"{int(slots.sum())} video placeholder tokens but "
                             f"{fused_video.shape[0]} fused video tokens")
        mask = slots.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, fused_video.to(embeds.dtype))

    def positions(self, input_ids: torch.Tensor, video_grid_thw: Optional[torch.Tensor],
                  second_per_grid_ts: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(3D positions [3, B, L], rope delta [B, 1]) as Qwen2.5-VL computes them."""
        batch, length = input_ids.shape
        if video_grid_thw is None:
            pos = torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, batch, -1)
            return pos, torch.zeros(batch, 1, dtype=torch.long, device=input_ids.device)
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        types[input_ids == self.config.image_token_id] = 1
        types[input_ids == self.config.video_token_id] = 2
        pos, delta = self.model.model.get_rope_index(
            input_ids, mm_token_type_ids=types, video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts)
        return pos, delta

    def _forward(self, embeds: torch.Tensor, position_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        out = self.language_model(inputs_embeds=embeds, position_ids=position_ids,
                                  past_key_values=cache, use_cache=True)
        return self.model.lm_head(out.last_hidden_state[:, -1])  # [B, V]

    def _decode_step(self, token: torch.Tensor, position_ids: torch.Tensor, cache: Any):
        return self._forward(self.embed(token), position_ids, cache)

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, fused_video: Optional[torch.Tensor] = None,
              video_grid_thw: Optional[torch.Tensor] = None, max_new_tokens: int = 32,
              second_per_grid_ts: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, DecodeSession]:
        """Prefill: input_ids [1, L] (+ fused video [N, hidden] for its N video slots) ->
        (logits [1, V] of the first new token, session for the following steps)."""
        if input_ids.shape[0] != 1:
            raise ValueError("LLMDecoder decodes one prompt at a time (batch 1)")
        input_ids = input_ids.to(self.device)
        length = int(input_ids.shape[1])
        if self.static_cache and length + max_new_tokens > self.max_cache_len:
            raise ValueError(f"prompt {length} + {max_new_tokens} new tokens "
                             f"exceed the static cache ({self.max_cache_len})")
        cache = self.new_cache(length + max_new_tokens)
        position_ids, delta = self.positions(input_ids, video_grid_thw, second_per_grid_ts)
        logits = self._forward(self.prompt_embeddings(input_ids, fused_video), position_ids, cache)
        return logits, DecodeSession(self, cache, delta, length)

    @torch.inference_mode()
    def warmup(self, steps: int = 4, prompt_tokens: int = 16) -> None:
        """Run a short text-only generation so that torch.compile and the CUDA-graph capture
        happen now (model load) and not inside the first query's time budget."""
        ids = torch.arange(prompt_tokens, device=self.device).view(1, -1) + 10
        logits, session = self.start(ids, max_new_tokens=steps)
        for _ in range(steps):
            logits = session.step(logits.argmax(dim=-1))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, fused_video: Optional[torch.Tensor] = None,
                 video_grid_thw: Optional[torch.Tensor] = None,
                 settings: Optional[GenerationSettings] = None,
                 on_token: Optional[Callable[[int], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> GenerationOutput:
        """Greedy/sampled decoding of up to max_new_tokens for one prompt (batch 1)."""
        settings = settings or GenerationSettings()
        if input_ids.shape[0] != 1:
            raise ValueError("LLMDecoder.generate decodes one prompt at a time (batch 1)")
        generator = None
        if settings.do_sample and settings.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        out = GenerationOutput(prompt_tokens=int(input_ids.shape[1]))
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        logits, session = self.start(input_ids, fused_video, video_grid_thw, settings.max_new_tokens)
        token = select_next_token(logits, settings, generator)
        sync()
        out.prefill_ms = (time.perf_counter() - t0) * 1000
        eos = set(int(t) for t in settings.eos_token_ids)
        t1 = time.perf_counter()
        for step in range(settings.max_new_tokens):
            token_id = int(token.item())
            out.token_ids.append(token_id)
            if on_token is not None:
                on_token(token_id)
            if token_id in eos:
                out.finish_reason = "eos"
                break
            if step == settings.max_new_tokens - 1:
                break
            if should_stop is not None and should_stop():
                out.finish_reason = "cancelled"
                break
            logits = session.step(token)
            token = select_next_token(logits, settings, generator)
        sync()
        out.decode_ms = (time.perf_counter() - t1) * 1000
        return out
