"""Stage 1: supervised fine-tuning of the Spatial-MLLM on the data engine's QA (JSONL + frames).

    spatial-mllm-train sft --config training/configs/sft_tiny.yaml
    # tiny CPU smoke run:
    spatial-mllm-train sft --config training/configs/sft_tiny.yaml --set sft.max_steps=3 \
        --set output_dir=runs/sft_smoke

What it does (reference recipe, Spatial-MLLM v1.1): per-component freezing from `train:` (vision
and spatial encoder frozen, connector + LLM trained), one AdamW param group per component with
its own lr (`lr:` connector 2e-5, llm 7e-6), cosine schedule with warm-up, gradient accumulation,
gradient checkpointing (flag), bf16 autocast where the hardware has it, loss on the answer tokens
only (every prompt/video/padding label is -100).

Why our own loop instead of transformers.Trainer / TRL SFTTrainer: each example carries three
aligned multimodal inputs (`pixel_values_videos` [N, 1176] whose row count depends on the clip,
`video_grid_thw`, and `spatial_pixel_values` [B, S, 3, H, W] for VGGT) and the answer-only mask is
built from the prompt/answer token boundary. SFTTrainer's collators expect a processor that
builds these from chat messages (ours is B's pure-torch video path, no HF processor object), and
Trainer's DDP/FSDP/DeepSpeed set-up is done by accelerate, which is not a dependency here; the
loop in training/loop.py is ~100 lines and keeps resume bit-exact (batches are a pure function
of the step).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from training.loop import LoopConfig, train_loop
from training.trainer_utils import (DistEnv, apply_freeze, autocast_context, build_param_groups, cosine_with_warmup,
                                    start_stage, wrap_for_strategy)

IGNORE_INDEX = -100

# Reference recipe (Spatial-MLLM v1.1 SFT): what is trained and at which learning rate.
REFERENCE_TRAIN = {"vision": False, "vision_merger": False, "spatial_encoder": False, "connector": True, "llm": True}
REFERENCE_LR = {"connector": 2e-5, "llm": 7e-6}


def answer_only_labels(prompt_ids: list[int], answer_ids: list[int]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for prompt + answer: labels copy the answer ids, -100 elsewhere."""
    return list(prompt_ids) + list(answer_ids), [IGNORE_INDEX] * len(prompt_ids) + list(answer_ids)


def pad_token_rows(rows: list[dict], pad_id: int) -> dict:
    """Right-pad token rows (input_ids / labels / mm_token_type_ids, each [L_i]) into
    input_ids / attention_mask / labels (-100 on padding) / mm_token_type_ids [B, Lmax]."""
    longest = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    mm_types = torch.zeros((len(rows), longest), dtype=torch.int32)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.as_tensor(r["input_ids"])
        labels[i, :n] = torch.as_tensor(r["labels"])
        mm_types[i, :n] = torch.as_tensor(r["mm_token_type_ids"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "mm_token_type_ids": mm_types}


def collate(examples: list[dict], pad_id: int) -> dict:
    """Right-pad a list of encoded examples into one batch.

    each example: input_ids [L], labels [L], mm_token_type_ids [L] (2 = video token),
    pixel_values_videos [N_i, D], video_grid_thw [1, 3], second_per_grid_ts [1],
    spatial_pixel_values [S, 3, H, W] (same S, H, W for every example of a run).
    returns: input_ids / attention_mask / labels (-100 on padding) / mm_token_type_ids [B, Lmax],
    second_per_grid_ts [B],
    pixel_values_videos [sum N_i, D], video_grid_thw [B, 3], spatial_pixel_values [B, S, 3, H, W]."""
    return {**pad_token_rows(examples, pad_id),
            "second_per_grid_ts": torch.cat([e["second_per_grid_ts"] for e in examples]),
            "pixel_values_videos": torch.cat([e["pixel_values_videos"] for e in examples]),
            "video_grid_thw": torch.cat([e["video_grid_thw"] for e in examples]),
            "spatial_pixel_values": torch.stack([e["spatial_pixel_values"] for e in examples])}


def answer_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy over labelled positions only.

    logits [B, L, V], labels [B, L] (-100 = ignore) -> (mean loss, {'answer_tokens', 'token_acc'})."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    valid = shift_labels != IGNORE_INDEX
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum") / valid.sum().clamp_min(1)
    with torch.no_grad():
        acc = ((shift_logits.argmax(-1) == shift_labels) & valid).sum().float() / valid.sum().clamp_min(1)
    return loss, {"answer_tokens": float(valid.sum()), "token_acc": float(acc)}


def sft_forward(model: torch.nn.Module, batch: dict, device: torch.device, bf16="auto") -> tuple[torch.Tensor, dict]:
    """One forward on a collated batch -> (answer-token loss, metrics)."""
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    with autocast_context(device, bf16):
        out = model(**inputs, use_cache=False)
    return answer_token_loss(out.logits, batch["labels"].to(device))


def setup_trainable(model: torch.nn.Module, scfg: dict) -> tuple[list[dict], dict]:
    """Freeze per component and build per-component param groups (reference recipe defaults)."""
    counts = apply_freeze(model, {**REFERENCE_TRAIN, **scfg.get("train", {})})
    lrs = {**REFERENCE_LR, **{k: float(v) for k, v in scfg.get("lr", {}).items()}}
    groups = build_param_groups(model, lrs, default_lr=lrs.get("llm", 7e-6),
                                weight_decay=float(scfg.get("weight_decay", 0.0)))
    return groups, counts


def run_sft(cfg: dict, env: DistEnv | None = None) -> dict:
    """Run the stage from a config dict (see training/configs/sft_tiny.yaml)."""
    from training.model_io import ExampleEncoder, build_model
    from training.qa_records import load_qa_records

    env, scfg, seed, out_dir = start_stage(cfg, "sft", env)
    model, assets_dir = build_model(cfg.get("model", {}))
    model.to(env.device)
    if scfg.get("gradient_checkpointing", False):
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    groups, counts = setup_trainable(model, scfg)
    if env.is_main:
        print("sft: trainable parameters per component:", counts)
    records = load_qa_records(cfg.get("data", {}), split=cfg.get("data", {}).get("train_split", "train"))
    if not records:
        raise RuntimeError("sft: no training questions found (check data.* in the config)")
    encoder = ExampleEncoder(model, assets_dir, cfg.get("data", {}), seed=seed)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    max_steps = int(scfg.get("max_steps", 100))
    scheduler = cosine_with_warmup(optimizer, int(scfg.get("warmup_steps", max(1, max_steps * 3 // 100))), max_steps)
    wrapped = wrap_for_strategy(model, env, cfg.get("strategy", "ddp"))
    bs = int(scfg.get("batch_size", 1))

    def compute_loss(step: int, micro: int):
        idx = encoder.batch_indices(records, step, micro, env.rank, env.world_size, bs, int(scfg.get("grad_accum", 1)))
        batch = collate([encoder.encode_sft(records[i]) for i in idx], encoder.pad_id)
        return sft_forward(wrapped, batch, env.device, scfg.get("bf16", "auto"))

    loop_cfg = LoopConfig.from_dict("sft", scfg, out_dir)
    loop_cfg.resume = cfg.get("resume", loop_cfg.resume)
    loop_cfg.plot_keys = ("loss", "token_acc", "lr", "grad_norm")
    result = train_loop(loop_cfg, env, model, optimizer, scheduler, compute_loss, processor=assets_dir,
                        ddp_module=wrapped if wrapped is not model else None)
    return {**result, "trainable": counts}
