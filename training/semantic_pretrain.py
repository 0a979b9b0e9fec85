"""Semantic pre-training of the small preset's 2D tower (vision ViT + merger) on the renderer's
instance masks, parallel to the geometry pre-training of the spatial encoder.

    spatial-mllm-train semantic --config training/configs/semantic_tiny.yaml
    # tiny CPU smoke run:
    spatial-mllm-train semantic --config training/configs/semantic_tiny.yaml \
        --set semantic.max_steps=3 --set output_dir=runs/exp_semantic_smoke

Why: trained from scratch inside SFT, the tiny 2D tower gets one weak gradient per question
and never learns to see objects (answer loss with another scene's frames equals the loss with
the true frames). Here every merged video token gets a dense target: the fraction of its pixels
(2 frames x 28 x 28, exactly the pixels Qwen's temporal patch + 2x2 merge pool) covered by each
object category (+ background), from the data engine's instance masks (`--save-depth` writes
them) and meta.json's instance ids. A linear probe on the merged tokens (the LLM-width features
that are fed to the LLM) is trained with soft-label cross-entropy, so categories become linearly
readable by the connector/LLM. The probe is discarded; the tower is then frozen for
training/cached_sft.py.

Batches: `scenes_per_batch` scenes, each `frames` frames uniformly spaced with a random offset
(the same spacing SFT's uniform sampling uses), seeded by (seed, step).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.loop import LoopConfig, train_loop
from training.trainer_utils import apply_freeze, build_param_groups, cosine_with_warmup, start_stage


def category_names() -> list[str]:
    """Class 0 = background (walls, floor, ceiling); 1.. = the synthetic catalogue's categories."""
    from training.data.categories import SYNTHETIC_CATEGORIES

    return ["background"] + [c.name for c in SYNTHETIC_CATEGORIES]


def instance_classes(meta_path: Path, names: list[str]) -> np.ndarray:
    """meta.json -> lookup table [max_instance_id + 1] of class indices (0 for unknown ids)."""
    meta = json.loads(Path(meta_path).read_text())
    scene = next(iter(meta.values()))
    pairs = [(int(b["instance_id"]), names.index(cat) if cat in names else 0)
             for cat, boxes in scene["object_bbox"].items() for b in boxes]
    table = np.zeros(max([i for i, _ in pairs] + [0]) + 1, np.int64)
    for iid, cls in pairs:
        table[iid] = cls
    return table


def token_targets(class_maps: np.ndarray, num_classes: int, temporal: int = 2, block: int = 28) -> torch.Tensor:
    """Per-merged-token class fractions.

    class_maps [S, H, W] int (S multiple of `temporal`, H and W multiples of `block`) ->
    [S/temporal * H/block * W/block, num_classes] float, rows in Qwen's merged order (t, h, w)."""
    s, h, w = class_maps.shape
    onehot = np.eye(num_classes, dtype=np.float32)[class_maps]                     # [S, H, W, C]
    x = onehot.reshape(s // temporal, temporal, h // block, block, w // block, block, num_classes)
    frac = x.mean(axis=(1, 3, 5))                                                   # [t, hb, wb, C]
    return torch.from_numpy(frac.reshape(-1, num_classes))


class SemanticClips:
    """The data engine's train scenes with instance masks -> (frames, class maps) clips."""

    def __init__(self, root: str | Path, split: str = "train", frames: int = 8, max_scenes: int | None = None):
        self.names = category_names()
        self.frames = frames
        scenes = sorted(p for p in (Path(root) / "scenes" / split).glob("*")
                        if (p / "instance").is_dir() and (p / "meta.json").is_file())
        self.scenes = scenes[: max_scenes] if max_scenes else scenes
        if not self.scenes:
            raise RuntimeError(f"semantic: no scenes with instance masks under {root}/scenes/{split} "
                               "(generate with --save-depth)")
        self._tables: dict[Path, np.ndarray] = {}

    def clip(self, scene_idx: int, offset_draw: float) -> tuple[np.ndarray, np.ndarray]:
        """Scene -> (frames [K, H, W, 3] uint8, class maps [K, H, W] int64), uniform spacing with an
        offset in [0, spacing) chosen by offset_draw in [0, 1)."""
        import cv2

        from training.qa_records import read_frames

        scene = self.scenes[scene_idx]
        n = len(list((scene / "frames").glob("*.jpg")))
        k = min(self.frames, n)
        spacing = n / k
        idx = [min(n - 1, int(offset_draw * spacing + i * spacing)) for i in range(k)]
        if scene not in self._tables:
            self._tables[scene] = instance_classes(scene / "meta.json", self.names)
        table = self._tables[scene]
        frames = read_frames([scene / "frames" / f"{i:06d}.jpg" for i in idx])
        inst = np.stack([cv2.imread(str(scene / "instance" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED) for i in idx])
        return frames, table[np.clip(inst.astype(np.int64), 0, len(table) - 1)]


def encode_clip(runtime, frames: np.ndarray, class_maps: np.ndarray, num_classes: int) -> dict:
    """Frames + class maps -> the 2D tower's inputs (B's preprocessing, as inference) + targets."""
    import cv2

    from ros2_spatial_mllm.model.connector import pad_frames_to_multiple

    inputs = runtime.prepare_inputs(list(frames), "x")
    t, gh, gw = (int(v) for v in inputs["video_grid_thw"][0].tolist())
    h, w = gh * 14, gw * 14
    maps = np.stack([cv2.resize(m.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST) for m in class_maps])
    maps = pad_frames_to_multiple(torch.from_numpy(maps)[None], 2, dim=1)[0].numpy().astype(np.int64)
    return {"pixel_values_videos": inputs["pixel_values_videos"].float(), "video_grid_thw": inputs["video_grid_thw"],
            "spatial_pixel_values": inputs["spatial_pixel_values"].float(), "targets": token_targets(maps, num_classes)}


def semantic_loss(model, head: torch.nn.Module, batch: list[dict], object_weight: float = 4.0,
                  fused: bool = False) -> tuple[torch.Tensor, dict]:
    """Soft-label cross-entropy of the probe on the merged video tokens, each token weighted by
    1 + object_weight * (its object pixel fraction) (background fills most tokens; unweighted,
    the probe settles on 'background everywhere'). fused=True probes the fused tokens (2D tower +
    connector(spatial encoder)), so that depth from the spatial encoder helps tell categories of
    similar shape apart by size; metrics: token accuracy of the dominant class,
    and accuracy on tokens whose dominant class is an object."""
    pixels = torch.cat([b["pixel_values_videos"] for b in batch])
    grid = torch.cat([b["video_grid_thw"] for b in batch])
    target = torch.cat([b["targets"] for b in batch])                          # [N, C]
    if fused:  # every clip has the same frame count and size (one video per batch row)
        spatial = torch.cat([b["spatial_pixel_values"] for b in batch])          # [B, S, 3, H, W]
        tokens = model.fuse_video(pixels, grid, spatial)
    else:
        tokens = model.video_embeds(pixels, grid)
    logits = head(tokens.float())                                                # [N, C]
    weight = 1.0 + object_weight * (1.0 - target[:, 0])
    loss = (-(target * F.log_softmax(logits, -1)).sum(-1) * weight).sum() / weight.sum()
    with torch.no_grad():
        dom = target.argmax(-1)
        hit = logits.argmax(-1) == dom
        obj = dom > 0
        obj_acc = hit[obj].float().mean() if obj.any() else torch.tensor(0.0)
        # which object: tokens at least a quarter covered by objects, best non-background class
        some = target[:, 0] <= 0.75
        cat_hit = logits[:, 1:].argmax(-1) == target[:, 1:].argmax(-1)
        cat_acc = cat_hit[some].float().mean() if some.any() else torch.tensor(0.0)
    return loss, {"token_acc": float(hit.float().mean()), "object_acc": float(obj_acc),
                  "category_acc": float(cat_acc), "object_tokens": float(obj.float().mean())}


def run_semantic(cfg: dict) -> dict:
    """Run the stage from a config dict (see training/configs/semantic_tiny.yaml)."""
    from ros2_spatial_mllm.inference import SpatialMLLM
    from ros2_spatial_mllm.model.checkpoint import eos_token_ids, load_tokenizer
    from ros2_spatial_mllm.model.processing import VideoProcessingConfig
    from training.model_io import build_model

    env, scfg, seed, out_dir = start_stage(cfg, "semantic", device="cpu")
    model, assets_dir = build_model(cfg.get("model", {}))
    fused = bool(scfg.get("train_connector", False))
    train = {"vision": True, "vision_merger": True, "spatial_encoder": False, "connector": fused, "llm": False}
    counts = apply_freeze(model, train)
    dcfg = cfg.get("data", {})
    clips = SemanticClips(dcfg["root"], "train", int(scfg.get("frames", dcfg.get("num_frames", 8))),
                          scfg.get("max_scenes"))
    num_classes = len(clips.names)
    torch.manual_seed(seed)
    head = torch.nn.Linear(model.config.text_config.hidden_size, num_classes)
    lr = float(scfg.get("lr", 2e-3))
    groups = build_param_groups(model, {"vision": lr, "vision_merger": lr, "connector": lr}, lr,
                                float(scfg.get("weight_decay", 0.01)))
    groups.append({"params": list(head.parameters()), "lr": lr, "weight_decay": 0.0, "name": "probe"})
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    max_steps = int(scfg.get("max_steps", 500))
    scheduler = cosine_with_warmup(optimizer, int(scfg.get("warmup_steps", 20)), max_steps)
    tok = load_tokenizer(Path(assets_dir))
    vcfg = VideoProcessingConfig.from_dir(assets_dir)
    runtime = SpatialMLLM(model, tok, vcfg, Path(assets_dir), None, torch.device("cpu"),
                          eos_token_ids(Path(assets_dir), model.config, tok))
    per = int(scfg.get("scenes_per_batch", 8))
    if env.is_main:
        print(f"semantic: {len(clips.scenes)} scenes, {num_classes} classes, trainable {counts}")

    def compute_loss(step: int, micro: int):
        rng = np.random.default_rng([seed, step, micro, env.rank])
        chosen = rng.choice(len(clips.scenes), size=per, replace=len(clips.scenes) < per)
        batch = [encode_clip(runtime, *clips.clip(int(i), float(rng.random())), num_classes) for i in chosen]
        return semantic_loss(model, head, batch, float(scfg.get("object_weight", 4.0)), fused)

    loop_cfg = LoopConfig.from_dict("semantic", scfg, out_dir)
    loop_cfg.resume = cfg.get("resume", loop_cfg.resume)
    loop_cfg.plot_keys = ("loss", "token_acc", "object_acc", "category_acc", "lr")
    result = train_loop(loop_cfg, env, model, optimizer, scheduler, compute_loss, processor=assets_dir)
    torch.save(head.state_dict(), out_dir / "semantic_probe.pt")
    return {**result, "trainable": counts}
