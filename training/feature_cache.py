"""Frozen-encoder feature cache: SFT on cached visual tokens (connector + LLM only).

When both encoders are frozen (the reference recipe), a question's visual input is a pure
function of its frames, and every VSI-Bench question of a scene sees the same K sampled frames.
So the 2D tower (+ merger) and the VGGT aggregator run once per distinct frame set, and an SFT
step only runs connector + LLM on short token sequences: on a 2-core CPU that is one to two
orders of magnitude more samples per hour than end-to-end steps.

What is cached per frame set (key = scene frames dir + chosen frame numbers):
    video   [N, H]       the 2D tower's merged video tokens (H = LLM width)
    spatial [N, Dm]      VGGT patch features packed in Qwen's merged order, before the connector
                         (Dm = 2C * temporal_patch * merge**2; connector = mlp(ln_q(spatial)))
    grid    [1, 3]       Qwen's video_grid_thw (t, gh, gw)
Per record: prompt ids with the video placeholders expanded exactly as inference does
(`SpatialMLLM.prepare_inputs`), answer ids, labels on the answer only.
With the model's `frame_time_positions`, a batch's second_per_grid_ts is each set's grid times
[B, T] from where its frames lie among the question's candidates (as spatial-mllm-eval passes them).

`fused_tokens` rebuilds what `SpatialMLLMForConditionalGeneration.fuse_video` returns, so a model
trained here is an ordinary checkpoint: `SpatialMLLM.load` / spatial-mllm-eval read it unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ros2_spatial_mllm.model.connector import pack_spatial_tokens, pad_frames_to_multiple
from ros2_spatial_mllm.model.processing import grid_times, video_prompt_tokens
from ros2_spatial_mllm.sampling.window import window_slots
from training.model_io import ExampleEncoder
from training.qa_records import choose_frames, frame_paths, read_frames
from training.sft import pad_token_rows

IGNORE_INDEX = -100


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Filling the cache interleaves its small long-lived tensors with the encoders' freed
    temporaries, and glibc then keeps the gaps: measured ~1 MiB resident per 200 KiB entry, so a
    24k-question cache outgrew 24 GiB. Trimming every few dozen entries keeps resident memory
    near the cached bytes (1,500 entries: 1,457 MiB -> 495 MiB)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class VisualFeatureCache:
    """Frozen 2D + spatial encoder outputs per distinct frame set, plus per-record token ids."""

    def __init__(self, model, encoder: ExampleEncoder):
        self.model = model
        self.encoder = encoder
        self.features: dict[tuple, dict] = {}
        self.tokens: dict[str, dict] = {}
        self._keys: dict[tuple, tuple] = {}
        self._paths: dict[tuple, tuple[str, ...]] = {}
        self._slots: dict[tuple, list[float]] = {}  # key -> its frames' places among the candidates

    # -- visual features ------------------------------------------------------------------------
    def frame_key(self, rec: dict, sampling: str | None = None) -> tuple:
        """(frames dir, chosen frame files) for the record under the encoder's sampling (memoised
        per record id: building the candidate paths is the costliest part of a cached step)."""
        memo = (rec.get("id", id(rec)), rec.get("_root"), sampling or self.encoder.sampling)
        if memo not in self._keys:
            # a video's candidate paths are shared by its dozens of questions: built once (pathlib
            # made this most of the key time, 0.2 ms a question: half a minute per cached stage)
            video = (rec.get("_root"), rec.get("frames_path"), tuple(rec.get("frame_indices") or ()),
                     rec.get("num_frames"), tuple(rec.get("frames") or rec.get("frame_paths") or ()))
            if video not in self._paths:
                self._paths[video] = tuple(map(str, frame_paths(rec, self.encoder.data_cfg)))
            paths = self._paths[video]
            idx = choose_frames(len(paths), self.encoder.k, memo[2], rec, self.encoder.data_cfg)
            self._keys[memo] = tuple(paths[i] for i in idx)
            self._slots.setdefault(self._keys[memo], window_slots(idx, 0, len(paths) - 1))
        return self._keys[memo]

    def grid_times(self, keys: list[tuple]) -> torch.Tensor:
        """[B, T_max] mRoPE grid times of the keys' frame sets (`frame_time_positions`); a set of
        fewer grids (a MultiSPA pair beside 8-frame videos) is padded with NaN, which the model
        never reads (it takes each video's first T entries, T from its grid)."""
        missing = [k for k in keys if k not in self._slots]
        if missing:
            raise KeyError(f"no frame places for {len(missing)} frame set(s) not chosen by frame_key")
        runtime = self.encoder.runtime
        times = [grid_times(self._slots[k], runtime.processing.temporal_patch_size, runtime.fps) for k in keys]
        out = torch.full((len(times), max(t.numel() for t in times)), float("nan"))
        for row, t in zip(out, times):
            row[: t.numel()] = t
        return out

    @torch.no_grad()
    def visual(self, key: tuple) -> dict:
        """Encoded frames for a key: {video [N, H], spatial [N, Dm], grid [1, 3]} (CPU, float32)."""
        if key not in self.features:
            self.model.eval()
            self._encode_stack([key])
        return self.features[key]

    @torch.no_grad()
    def encode_many(self, keys: list[tuple], batch_size: int = 8, on_batch=None) -> int:
        """Encode every key not cached yet, up to `batch_size` frame sets of one frame count per
        encoder pass; returns how many were encoded. Each set's tokens are bit-identical to
        encoding it alone (tests/training/test_feature_cache.py): frames of different sets never
        attend to each other, and stacking only amortises the per-op cost of a tiny encoder
        (8 sets per pass: 0.36-0.65 of the time per set on a 2-core CPU, benchmarks/bench_feature_encode.py).
        on_batch(n) is called after each pass with the number of sets it encoded."""
        todo = [k for k in dict.fromkeys(keys) if k not in self.features]
        if type(self).visual is not VisualFeatureCache.visual:  # a subclass edits tokens there: keep its path
            for k in todo:
                self.visual(k)
                if on_batch is not None:
                    on_batch(1)
            return len(todo)
        if not todo:
            return 0
        self.model.eval()  # once per call, not per set (it walks every module: ~3 ms)
        by_count: dict[int, list[tuple]] = {}
        for k in todo:
            by_count.setdefault(len(k), []).append(k)
        step = max(1, batch_size)
        for group in by_count.values():
            for start in range(0, len(group), step):
                chunk = group[start:start + step]
                self._encode_stack(chunk)
                if on_batch is not None:
                    on_batch(len(chunk))
        return len(todo)

    def _encode_stack(self, keys: list[tuple]) -> None:
        """One 2D-tower pass and one aggregator pass per frame size over the stacked frame sets of
        `keys`; stores each set's {video, spatial, grid, second_per_grid_ts}."""
        cached_before = len(self.features)
        by_size: dict[tuple, list[tuple[tuple, dict]]] = {}
        for key in keys:
            inp = self.encoder.runtime.prepare_inputs(list(read_frames([Path(p) for p in key])), "x")
            by_size.setdefault(tuple(inp["spatial_pixel_values"].shape), []).append((key, inp))
        for sets in by_size.values():
            self._encode_inputs(sets)
        if len(self.features) // 64 > cached_before // 64:  # every 64 entries, as one by one did
            release_free_heap()

    def _encode_inputs(self, sets: list[tuple[tuple, dict]]) -> None:
        """(key, prepared inputs) pairs of one frame size -> self.features[key]."""
        model = self.model
        inputs = [inp for _, inp in sets]
        grids = torch.cat([i["video_grid_thw"] for i in inputs])                              # [B, 3]
        video = model.video_embeds(torch.cat([i["pixel_values_videos"] for i in inputs]), grids)  # [sum N, H]
        feats, start = model.spatial_features(torch.cat([i["spatial_pixel_values"] for i in inputs]))  # [B, S', P, 2C]
        tp, merge = model.connector.temporal_patch_size, model.connector.spatial_merge_size
        patches = pad_frames_to_multiple(feats[:, :, start:], tp, dim=1)
        offset = 0
        for b, (key, inp) in enumerate(sets):
            t, gh, gw = (int(v) for v in inp["video_grid_thw"][0].tolist())
            n = t * gh * gw // merge ** 2
            spatial = pack_spatial_tokens(patches[b:b + 1], gh, gw, tp, merge)
            # clone: a slice would keep the whole stack's storage alive in the cache
            self.features[key] = {"video": video[offset:offset + n].float().cpu().clone(),
                                  "spatial": spatial.float().cpu().clone(),
                                  "grid": inp["video_grid_thw"].cpu(),
                                  "second_per_grid_ts": inp["second_per_grid_ts"].float().cpu()}
            offset += n
        if offset != video.shape[0]:
            raise RuntimeError(f"2D tower returned {video.shape[0]} tokens for {offset} expected")

    # -- text -----------------------------------------------------------------------------------
    def record_tokens(self, rec: dict, num_video_tokens: int, with_answer: bool = True) -> dict:
        """input_ids / labels / mm_token_type_ids (lists) for one record (cached by id + count)."""
        from ros2_spatial_mllm.prompts import build_prompt

        cache_key = f"{rec.get('id', id(rec))}/{num_video_tokens}/{int(with_answer)}"
        if cache_key not in self.tokens:
            text, prompt, mm_types = video_prompt_tokens(
                self.encoder.tokenizer, build_prompt(rec["question"], rec.get("options") or None),
                num_video_tokens, int(self.model.config.video_token_id))
            answer = self.encoder.answer_ids(rec) if with_answer else []
            self.tokens[cache_key] = {
                "prompt_text": text, "prompt_len": len(prompt),
                "input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer,
                "mm_token_type_ids": mm_types + [0] * len(answer)}
        return self.tokens[cache_key]

    # -- batches --------------------------------------------------------------------------------
    def batch(self, recs: list[dict], keys: list[tuple] | None = None, with_answer: bool = True) -> dict:
        """Collate records (visual features from `keys`, default each record's own frames).

        returns input_ids / attention_mask / labels / mm_token_type_ids [B, Lmax] (right padded),
        video_grid_thw [B, 3], second_per_grid_ts [B], video [sum N_i, H], spatial [sum N_i, Dm]."""
        keys = keys or [self.frame_key(r) for r in recs]
        vis = [self.visual(k) for k in keys]
        merge = self.model.connector.spatial_merge_size ** 2
        toks = [self.record_tokens(r, int(v["grid"].prod()) // merge, with_answer) for r, v in zip(recs, vis)]
        timed = bool(getattr(self.model.config, "frame_time_positions", False))
        return {**pad_token_rows(toks, self.encoder.pad_id),
                "video_grid_thw": torch.cat([v["grid"] for v in vis]),
                "second_per_grid_ts": (self.grid_times(keys) if timed
                                       else torch.cat([v["second_per_grid_ts"] for v in vis])),
                "video": torch.cat([v["video"] for v in vis]), "spatial": torch.cat([v["spatial"] for v in vis])}


def fused_tokens(model, video: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
    """connector 'mlp_add' on cached features: video [N, H] + mlp(ln_q(spatial [N, Dm])) -> [N, H]."""
    conn = model.connector
    return video + conn.mlp(conn.ln_q(spatial.to(conn.mlp[0].weight.dtype))).to(video.dtype)


def cached_forward(model, batch: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """LLM forward with cached visual features -> logits [B, L, V] (same path as model.forward
    with pixels: fused tokens replace the video placeholders, Qwen's 3-D RoPE from the grids)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    fused = fused_tokens(model, batch["video"].to(device), batch["spatial"].to(device))
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                mm_token_type_ids=batch["mm_token_type_ids"].to(device),
                video_grid_thw=batch["video_grid_thw"].to(device),
                second_per_grid_ts=batch["second_per_grid_ts"].to(device),
                mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(fused,))}, use_cache=False)
    return out.logits


def cached_answer_logits(model, batch: dict, device: torch.device | str = "cpu", states: dict | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """As `cached_forward`, but the LM head runs only where a label is predicted (the answer
    tokens; the head over a 3k vocabulary at every prompt position is most of a tiny model's
    step). Returns (logits [T, V], targets [T]) for the T labelled next-token positions.
    `states`, when given, receives 'fused' [sum N, H] and the LLM's 'hidden_states' (each [B, L, H])."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    fused = fused_tokens(model, batch["video"].to(device), batch["spatial"].to(device))
    out = model.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                      mm_token_type_ids=batch["mm_token_type_ids"].to(device),
                      video_grid_thw=batch["video_grid_thw"].to(device),
                      second_per_grid_ts=batch["second_per_grid_ts"].to(device),
                      mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(fused,))}, use_cache=False,
                      output_hidden_states=states is not None)
    if states is not None:
        states.update(fused=fused, hidden_states=out.hidden_states)
    labels = batch["labels"][:, 1:].to(device)
    valid = labels != IGNORE_INDEX
    hidden = out.last_hidden_state[:, :-1][valid]
    return model.lm_head(hidden), labels[valid]


def cached_answer_loss(model, batch: dict, device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict]:
    """Mean answer-token cross-entropy on cached features -> (loss, {'answer_tokens', 'token_acc'})."""
    import torch.nn.functional as F

    logits, targets = cached_answer_logits(model, batch, device)
    loss = F.cross_entropy(logits.float(), targets)
    with torch.no_grad():
        acc = (logits.argmax(-1) == targets).float().mean() if len(targets) else torch.tensor(0.0)
    return loss, {"answer_tokens": float(len(targets)), "token_acc": float(acc)}
