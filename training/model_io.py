"""Adapters between the training stages and the rest of the project: building/loading the
model (B's presets + checkpoint), turning a QA record into model inputs exactly as inference
does (C's prompt, B's video preprocessing, the tokenizer's chat template), and reading geometry
clips for the spatial-encoder pre-training. Records and their frame sets: training/qa_records.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.qa_records import answer_text, choose_frames, frame_paths, read_frames
from training.sft import answer_only_labels


# ------------------------------------------------------------------------------------- model
def build_model(model_cfg: dict):
    """-> (SpatialMLLMForConditionalGeneration, assets_dir holding tokenizer/processor files).

    model.init: "random" (the preset's sizes, seeded random weights),
                "assets" (the weights shipped in the assets dir), or a checkpoint directory.
    model.preset: tiny | official; model.assets_dir: tokenizer/processor files (default: the
    package's assets/tiny for the tiny preset, else the init checkpoint); model.llm_overrides:
    text_config fields (e.g. {num_hidden_layers: 4}, or a wider hidden_size: the frozen 2D
    merger's output is then mapped isometrically into it, _resize_llm) for a fresh LLM on a
    checkpoint's trained encoders, applied only where the checkpoint's LLM differs; model.llm_grow_to: D, a trained
    LLM (checkpoint or assets) of fewer layers grown to D, every trained weight kept (grow_llm;
    a checkpoint already D deep is kept as it is, so later stages of a run do not grow it
    again, and llm_overrides is not applied to it); model.fresh_llm: true gives a checkpoint's
    trained encoders a fresh, seeded LLM + connector even where its LLM already has the
    llm_overrides sizes (rerun the language stages on shipped encoders); model.spatial_overrides:
    VGGTConfig.tiny fields (e.g. {embed_dim: 128}) of a randomly initialised tiny preset;
    model.frame_time_positions: true/false sets that config flag (mRoPE temporal ids from the frames'
    places in their window; absent: the checkpoint's own), saved with every checkpoint after."""
    model, assets = _load_or_build(model_cfg)
    if model_cfg.get("frame_time_positions") is not None:
        model.config.frame_time_positions = bool(model_cfg["frame_time_positions"])
    return model, assets


def _load_or_build(model_cfg: dict):
    """build_model without the config flags set on top."""
    from ros2_spatial_mllm.model.checkpoint import load_checkpoint, load_config
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR, tiny_config
    from ros2_spatial_mllm.model.presets import build_model as build_preset

    preset = model_cfg.get("preset", "tiny")
    init = str(model_cfg.get("init", "random"))
    assets = model_cfg.get("assets_dir")
    if init not in ("random", "assets"):
        model, report = load_checkpoint(init)
        if not report.ok:
            raise RuntimeError(f"model.init={init}: {report.summary()}")
        if model_cfg.get("llm_grow_to") is not None:
            return _grown_to(model, model_cfg), Path(assets or init)
        overrides = dict(model_cfg.get("llm_overrides") or {})
        fresh = bool(model_cfg.get("fresh_llm", False))
        if fresh or any(getattr(model.config.text_config, k, None) != v for k, v in overrides.items()):
            # only a checkpoint of another LLM size, or one asked for a fresh LLM, is resized (a
            # later stage of the same run keeps the LLM it was handed: pipeline._stage_cfg)
            model = _resize_llm(model, overrides, int(model_cfg.get("seed", 0)))
        return model, Path(assets or init)
    if assets is None:
        if preset != "tiny":
            raise ValueError("model.assets_dir is required for the official preset (a local checkpoint directory)")
        assets = ensure_tiny_assets(TINY_ASSETS_DIR)
    assets = Path(assets)
    if init == "assets":
        model, report = load_checkpoint(assets)
        if not report.ok:
            raise RuntimeError(f"model.init=assets ({assets}): {report.summary()}")
        if model_cfg.get("llm_grow_to") is not None:
            model = _grown_to(model, model_cfg)
        return model, assets
    if model_cfg.get("llm_grow_to") is not None:
        raise ValueError("model.llm_grow_to grows a trained LLM: set model.init to a checkpoint or 'assets'")
    # the tiny preset's own sizes, not the assets' config.json: the shipped default there is the
    # trained model, whose LLM is deeper (model.llm_overrides) than the preset training starts from
    config = tiny_config(spatial_overrides=model_cfg.get("spatial_overrides")) if preset == "tiny" \
        else load_config(assets)
    model = build_preset(config, seed=int(model_cfg.get("seed", 0)))
    return model, assets


def _resize_llm(model, overrides: dict, seed: int):
    """A fresh LLM + connector with text_config `overrides` (e.g. num_hidden_layers, or a wider
    hidden_size) on the trained encoders of `model` (2D tower and spatial encoder copied).

    A wider LLM keeps the frozen 2D merger's function: its last layer (W [H, 4C], b [H]) becomes
    (Q W, Q b) with Q [H', H] a seeded matrix of orthonormal columns, so the merged tokens are
    the trained ones written isometrically into H' of the wider stream (the LLM's first
    projections are linear, so nothing the old tokens told it is lost; the other H' - H
    directions are the LLM's own). The exported model is an ordinary one whose merger projects
    to H' (no extra module to fold)."""
    from ros2_spatial_mllm.model.presets import build_model as build_preset

    old_width = int(model.config.text_config.hidden_size)
    width = int(overrides.get("hidden_size", old_width))
    if width < old_width:
        raise ValueError(f"model.llm_overrides: hidden_size {width} < {old_width} (a narrower LLM would drop "
                         "what the frozen 2D merger writes)")
    config = _llm_config(model, overrides)
    config.vision_config.out_hidden_size = width
    fresh = build_preset(config, seed=seed)
    keep = {k: v for k, v in model.state_dict().items() if k.startswith(("model.visual.", "spatial_encoder."))}
    missing = [k for k in keep if k not in fresh.state_dict()]
    if missing:
        raise RuntimeError(f"model.llm_overrides: encoder keys not found in the resized model: {missing[:3]}")
    if width != old_width:
        keep.update(_widened_merger_output(model, width, seed))
    fresh.load_state_dict(keep, strict=False)
    return fresh


def _widened_merger_output(model, width: int, seed: int) -> dict:
    """{name: tensor} of the 2D merger's last linear layer mapped into `width` dimensions by a
    seeded [width, H] matrix with orthonormal columns (norms and angles of tokens kept)."""
    last = model.model.visual.merger.mlp[-1]  # Linear(4C -> H)
    old_width = last.weight.shape[0]
    # its own stream: the fresh LLM is initialised from `seed` too, and Q must not repeat its draws
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    q, _ = torch.linalg.qr(torch.randn(width, old_width, generator=gen, dtype=torch.float64))  # [H', H]
    q = q.to(last.weight.dtype)
    prefix = next(n for n, m in model.named_modules() if m is last)
    out = {f"{prefix}.weight": q @ last.weight.detach()}                                     # [H', 4C]
    if last.bias is not None:
        out[f"{prefix}.bias"] = q @ last.bias.detach()                                       # [H']
    return out


def _llm_config(model, text_fields: dict):
    """A copy of `model.config` with `text_fields` set on its text_config, the per-layer
    attention types padded or cut to the new depth (full attention for added layers)."""
    import copy

    config = copy.deepcopy(model.config)
    for key, value in text_fields.items():
        setattr(config.text_config, key, value)
    layers = int(config.text_config.num_hidden_layers)
    if getattr(config.text_config, "layer_types", None) is not None:
        config.text_config.layer_types = (list(config.text_config.layer_types) + ["full_attention"] * layers)[:layers]
    return config


def _grown_to(model, model_cfg: dict):
    """model.llm_grow_to on a loaded trained model: grow it to that depth, or keep it if it is
    that deep already; never shallower."""
    target, depth = int(model_cfg["llm_grow_to"]), int(model.config.text_config.num_hidden_layers)
    if target < depth:
        raise ValueError(f"model.llm_grow_to={target}: the checkpoint's LLM already has {depth} layers")
    return grow_llm(model, target - depth, int(model_cfg.get("seed", 0))) if target > depth else model


def grow_llm(model, extra_layers: int, seed: int):
    """`model` with `extra_layers` more LLM layers appended, computing the same function.

    Every trained weight is kept; each new layer's attention output (o_proj) and MLP output
    (down_proj) start at zero, so its residual branch adds nothing until training grows it (the
    zero-initialised residual branch trick). A cheap way to give a trained model more depth:
    the hidden width cannot grow, as the frozen 2D merger projects to it."""
    from ros2_spatial_mllm.model.presets import build_model as build_preset

    old = int(model.config.text_config.num_hidden_layers)
    layers = old + int(extra_layers)
    with torch.random.fork_rng():  # the preset builder reseeds; leave the stage's RNG stream alone
        grown = build_preset(_llm_config(model, {"num_hidden_layers": layers}), seed=seed)
    result = grown.load_state_dict(model.state_dict(), strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"model.llm_grow_to: keys the grown model lacks: {result.unexpected_keys[:3]}")
    new = tuple(f"language_model.layers.{i}." for i in range(old, layers))
    if any(not any(t in k for t in new) for k in result.missing_keys):
        raise RuntimeError(f"model.llm_grow_to: trained keys left unloaded: {result.missing_keys[:3]}")
    with torch.no_grad():
        for name, param in grown.named_parameters():
            if any(t in name for t in new) and name.endswith(("o_proj.weight", "down_proj.weight")):
                param.zero_()
    return grown


def ensure_tiny_assets(path: Path) -> Path:
    """The tiny preset's tokenizer/processor files; regenerated by B's presets if absent."""
    if not (Path(path) / "tokenizer.json").is_file() or not (Path(path) / "config.json").is_file():
        from ros2_spatial_mllm.model.presets import write_tiny_assets

        write_tiny_assets(Path(path))
    return Path(path)


class ExampleEncoder:
    """QA record -> tensors the model takes, cached per record (deterministic)."""

    def __init__(self, model: Any, assets_dir: str | Path, data_cfg: dict, seed: int = 0):
        from ros2_spatial_mllm.inference import SpatialMLLM
        from ros2_spatial_mllm.model.checkpoint import eos_token_ids, load_tokenizer
        from ros2_spatial_mllm.model.processing import VideoProcessingConfig

        self.assets_dir = str(assets_dir)
        self.tokenizer = load_tokenizer(Path(assets_dir))
        self.video_cfg = VideoProcessingConfig.from_dir(assets_dir)
        if data_cfg.get("max_pixels"):
            self.video_cfg.max_pixels = int(data_cfg["max_pixels"])
        # B's inference object around the model being trained: its prepare_inputs is reused so
        # training sees byte-identical inputs to answering.
        self.runtime = SpatialMLLM(model, self.tokenizer, self.video_cfg, Path(assets_dir), None, torch.device("cpu"),
                                   eos_token_ids(Path(assets_dir), model.config, self.tokenizer))
        self.data_cfg = data_cfg
        self.k = int(data_cfg.get("num_frames", 8))
        self.sampling = data_cfg.get("frame_sampling", "uniform")
        self.answer_format = data_cfg.get("answer_format", "bare")
        self.seed = seed
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.eos_id = int(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self._cache: dict[int, dict] = {}

    def record_frames(self, rec: dict) -> np.ndarray:
        paths = frame_paths(rec, self.data_cfg)
        idx = choose_frames(len(paths), self.k, self.sampling, rec, self.data_cfg)
        return read_frames([paths[i] for i in idx])

    # -- text + video -----------------------------------------------------------------------
    def prompt_inputs(self, frames: np.ndarray, rec: dict) -> dict:
        """B's SpatialMLLM.prepare_inputs (the exact inference path: C's prompt, chat template,
        video placeholder expansion, mm_token_type_ids, second_per_grid_ts) -> CPU tensors,
        batch dim dropped: input_ids [L] list, pixel_values_videos [N, D], video_grid_thw [1, 3],
        mm_token_type_ids [L], second_per_grid_ts [1], spatial_pixel_values [S, 3, H, W]."""
        from ros2_spatial_mllm.model.connector import pad_frames_to_multiple
        from ros2_spatial_mllm.prompts import build_prompt

        inputs = self.runtime.prepare_inputs(list(frames), build_prompt(rec["question"], rec.get("options") or None))
        inputs = {k: v.detach().cpu() for k, v in inputs.items()}
        return {"input_ids": inputs["input_ids"][0].tolist(), "mm_token_type_ids": inputs["mm_token_type_ids"][0].tolist(),
                "pixel_values_videos": inputs["pixel_values_videos"].float(), "video_grid_thw": inputs["video_grid_thw"],
                "second_per_grid_ts": inputs["second_per_grid_ts"].float(),
                # padded to the temporal patch here (the model would repeat the last frame the same
                # way) so that 1- and 2-frame questions share a batch
                "spatial_pixel_values": pad_frames_to_multiple(inputs["spatial_pixel_values"][0].float(),
                                                               self.video_cfg.temporal_patch_size, dim=0)}

    def answer_ids(self, rec: dict) -> list[int]:
        text = answer_text(rec, self.answer_format)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [self.eos_id]

    # -- examples ---------------------------------------------------------------------------
    def encode_prompt(self, rec: dict) -> dict:
        return self.prompt_inputs(self.record_frames(rec), rec)

    def encode_sft(self, rec: dict) -> dict:
        """Prompt + answer with answer-only labels; a bounded FIFO cache (data.cache_examples,
        default 256: one 8-frame example holds ~2 MB of pixels) avoids re-reading hot records."""
        key = id(rec)
        if key not in self._cache:
            if len(self._cache) >= int(self.data_cfg.get("cache_examples", 256)):
                self._cache.pop(next(iter(self._cache)))
            prompt = self.encode_prompt(rec)
            answer = self.answer_ids(rec)
            ids, labels = answer_only_labels(prompt["input_ids"], answer)
            self._cache[key] = {**prompt, "input_ids": ids, "labels": labels,
                                "mm_token_type_ids": prompt["mm_token_type_ids"] + [0] * len(answer)}
        return self._cache[key]

    def frame_count(self, rec: dict) -> int:
        """Frames the model will see for this record (after padding to the temporal patch)."""
        n = len(frame_paths(rec, self.data_cfg))
        k = n if self.sampling == "all" else min(n, self.k)
        return k + k % 2

    def epoch_batches(self, records: list[dict], batch_size: int, epoch: int) -> list[list[int]]:
        """One epoch's batches: records bucketed by frame count (a batch stacks frames
        [B, S, 3, H, W], so S must agree), shuffled within buckets, chunked, batches shuffled;
        seeded by (seed, epoch). A short last chunk of a bucket is topped up from its start."""
        rng = np.random.default_rng([self.seed, epoch])
        buckets: dict[int, list[int]] = {}
        for i, rec in enumerate(records):
            buckets.setdefault(self.frame_count(rec), []).append(i)
        batches = []
        for key in sorted(buckets):
            idx = [buckets[key][j] for j in rng.permutation(len(buckets[key]))]
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                chunk += idx[: batch_size - len(chunk)] if len(idx) >= batch_size else []
                batches.append(chunk)
        return [batches[j] for j in rng.permutation(len(batches))]

    def batch_indices(self, records: list[dict], step: int, micro: int, rank: int, world: int, batch_size: int,
                      grad_accum: int = 1) -> list[int]:
        """Record indices for (step, micro, rank): the k-th batch of the epoch sequence, with
        k = (step * grad_accum + micro) * world + rank — disjoint across ranks and micro-steps and
        a pure function of the step (resume replays exactly the same batches)."""
        k = (step * grad_accum + micro) * world + rank
        if not hasattr(self, "_epochs"):
            self._epochs: dict[tuple, list[list[int]]] = {}
        per_epoch = len(self._epoch(records, batch_size, 0))
        epoch, offset = divmod(k, per_epoch)
        return list(self._epoch(records, batch_size, epoch)[offset])

    def _epoch(self, records: list[dict], batch_size: int, epoch: int) -> list[list[int]]:
        key = (id(records), len(records), batch_size, epoch)
        if key not in self._epochs:
            if len(self._epochs) > 4:
                self._epochs.clear()
            self._epochs[key] = self.epoch_batches(records, batch_size, epoch)
        return self._epochs[key]


# ------------------------------------------------------------------------------ geometry clips
def load_geometry_clips(data_cfg: dict, split: str = "train", frames: int = 4, seed: int = 0,
                        stride: int | None = None) -> list[dict]:
    """Clips for the geometry stage: dicts with images [S, H, W, 3] uint8 RGB, depth [S, H, W]
    (metres, 0 = invalid), cam_from_world [S, 4, 4], intrinsics [S, 3, 3].

    Sources, in order: data.geometry_npz (list of .npz files with those arrays, e.g. the
    fixtures), <root>/<split>_geometry/*.npz, and the data engine's scenes rendered with
    --save-depth: <root>/scenes/<split>/<scene>/{frames/*.jpg, depth/*.png (uint16 mm),
    cameras.json}. A video of N frames gives clips of `frames` frames `stride` apart; a list of
    strides (data.geometry_stride: [2, 4]) gives the clips of each, so the encoder also learns the
    wide baselines of frames spread over a whole walk-through, as questions sample them."""
    strides = stride or data_cfg.get("geometry_stride", 2)
    strides = [int(x) for x in strides] if isinstance(strides, (list, tuple)) else [int(strides)]
    files = data_cfg.get("geometry_npz")
    root = Path(data_cfg["root"]) if data_cfg.get("root") else None
    if files is None and root is not None:
        files = sorted(str(p) for p in (root / f"{split}_geometry").glob("*.npz"))
    videos = []
    for f in files or []:
        with np.load(f) as z:
            videos.append({k: z[k] for k in ("images", "depth", "cam_from_world", "intrinsics")})
    if root is not None:
        limit = data_cfg.get("max_geometry_scenes")
        for scene in sorted((root / "scenes" / split).glob("*")):
            if limit and len(videos) >= int(limit):
                break  # the same first `limit` videos, without reading the others
            if (scene / "depth").is_dir() and (scene / "cameras.json").is_file():
                videos.append(_engine_scene(scene))
        videos = videos[: int(limit)] if limit else videos
    clips = []
    span = (frames - 1) * 1 + 1
    for v in videos:
        n = v["images"].shape[0]
        for stride in strides:
            step = min(stride, max(1, (n - 1) // max(1, frames - 1)))
            for start in range(0, n - (span - 1) * step, max(1, frames * step // 2)):
                sl = slice(start, start + frames * step, step)
                if len(range(n)[sl]) < frames:
                    break
                clips.append({k: v[k][sl] for k in ("images", "depth", "cam_from_world", "intrinsics")})
    return clips


def _engine_scene(scene_dir: Path) -> dict:
    """One data-engine scene (frames/*.jpg, depth/*.png in mm, cameras.json) -> arrays."""
    import cv2

    cams = json.loads((scene_dir / "cameras.json").read_text())
    frames = sorted((scene_dir / "frames").glob("*.jpg"))
    images = read_frames(frames)
    depth = np.stack([cv2.imread(str(scene_dir / "depth" / (f.stem + ".png")), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
                      for f in frames])
    cam_from_world = np.asarray(cams["camera_from_world"], np.float64)
    k = np.asarray(cams["intrinsics"], np.float64)
    intrinsics = np.repeat(k[None], len(frames), 0) if k.ndim == 2 else k
    return {"images": images, "depth": depth, "cam_from_world": cam_from_world, "intrinsics": intrinsics}
