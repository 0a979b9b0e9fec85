"""Stage 2: GRPO after SFT — group sampling, format + task reward, group-normalised advantages,
clipped policy loss, KL to the frozen SFT reference (k3 estimator).

    spatial-mllm-train grpo --config training/configs/grpo_tiny.yaml
    # tiny CPU smoke run:
    spatial-mllm-train grpo --config training/configs/grpo_tiny.yaml --set grpo.max_steps=2 \
        --set output_dir=runs/grpo_smoke

Per prompt q: G completions o_1..o_G ~ pi_old(.|q) at `temperature`; rewards r_i (rewards.py);
advantages A_i = (r_i - mean r) / (std r + eps); per completion token t
    ratio = exp(logp_pi - logp_old);  L_clip = -min(ratio A, clip(ratio, 1-eps, 1+eps) A)
    KL_k3 = exp(logp_ref - logp_pi) - (logp_ref - logp_pi) - 1
    loss  = mean_i mean_t (L_clip + beta KL_k3)
Samples are reused for `updates_per_batch` optimizer steps (pi_old fixed in between), so the
clip is active from the second update on.

Why not TRL's GRPOTrainer: it generates through `model.generate` from text prompts produced by
a processor and has no slot for the per-prompt video tensors (`pixel_values_videos`,
`video_grid_thw`, `mm_token_type_ids`, `spatial_pixel_values` for VGGT) nor for our reward's
access to each record's options/answer kind; TRL is also not a dependency of this project.
The loop below reuses the shared training/loop.py (checkpoints, CSV, PNG, DDP).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from training.loop import LoopConfig, train_loop
from training.rewards import RewardWeights, total_reward
from training.trainer_utils import (DistEnv, apply_freeze, autocast_context, build_param_groups, cosine_with_warmup,
                                    start_stage, unwrap, wrap_for_strategy)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """rewards [P, G] -> advantages [P, G] normalised within each group (all-equal group -> 0)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate, k3 = exp(ref - pi) - (ref - pi) - 1 (>= 0, unbiased)."""
    diff = ref_logp - logp
    return torch.exp(diff) - diff - 1.0


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                        clip_eps: float = 0.2, beta: float = 0.04, ref_logp: torch.Tensor | None = None) -> dict:
    """logp/old_logp/ref_logp/mask [N, T], advantages [N] -> {'loss', 'kl', 'clip_frac', 'ratio'}.
    Token terms are averaged per completion, then over completions."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    per_token = -surrogate
    kl = torch.zeros_like(logp)
    if ref_logp is not None and beta > 0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    denom = mask.sum(1).clamp_min(1)
    loss = ((per_token * mask).sum(1) / denom).mean()
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip_eps).float()
        stats = {"kl": float(((kl * mask).sum(1) / denom).mean()), "clip_frac": float((clipped * mask).sum() / mask.sum().clamp_min(1)),
                 "ratio": float((ratio * mask).sum() / mask.sum().clamp_min(1))}
    return {"loss": loss, **stats}


@torch.no_grad()
def sample_group(model, prompt: dict, group_size: int, max_new_tokens: int, temperature: float,
                 eos_ids: list[int], pad_id: int) -> torch.Tensor:
    """G completions of one prompt (identical lengths, so no padding): fused video tokens are
    computed once and shared; decode with the KV cache. Returns completion ids [G, T] padded
    with pad_id after the first eos (eos kept)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model = unwrap(model)
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device  # the encoded prompt is on the CPU, the model maybe not
    ids = torch.as_tensor(prompt["input_ids"], device=dev)[None].repeat(group_size, 1)
    mm = torch.as_tensor(prompt["mm_token_type_ids"], device=dev)[None].repeat(group_size, 1)
    grid_one = prompt["video_grid_thw"].to(dev)
    fused = model.fuse_video(prompt["pixel_values_videos"].to(dev), grid_one, prompt["spatial_pixel_values"].to(dev)[None])
    model.model.rope_deltas = None
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                video_grid_thw=grid_one.repeat(group_size, 1),
                second_per_grid_ts=prompt["second_per_grid_ts"].to(dev).repeat(group_size), use_cache=True,
                logits_to_keep=1,
                mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(fused.repeat(group_size, 1),))})
    cache, logits = out.past_key_values, out.logits[:, -1]
    finished = torch.zeros(group_size, dtype=torch.bool, device=dev)
    tokens = []
    eos = torch.tensor(eos_ids, device=dev)
    for _ in range(max_new_tokens):
        probs = F.softmax(logits.float() / max(temperature, 1e-5), dim=-1)
        nxt = torch.multinomial(probs, 1)[:, 0]
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        finished |= torch.isin(nxt, eos)
        if finished.all():
            break
        out = model(input_ids=nxt[:, None], past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
    model.model.rope_deltas = None
    model.train(was_training)
    return torch.stack(tokens, 1).cpu()  # [G, T]; rewards and masks are computed on the CPU


def completion_mask(completions: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """[G, T] -> 1 up to and including the first eos, 0 after."""
    is_eos = torch.isin(completions, torch.tensor(eos_ids))
    after = (is_eos.cumsum(1) - is_eos.long()) > 0  # strictly after the first eos
    return (~after).float()


def completion_logprobs(model, prompt: dict, completions: torch.Tensor, device, bf16="auto") -> torch.Tensor:
    """log pi(o_t | q, o_<t) for every completion token: [G, T] (full multimodal forward)."""
    g, t = completions.shape
    prompt_ids = torch.as_tensor(prompt["input_ids"])[None].repeat(g, 1)
    ids = torch.cat([prompt_ids, completions], 1)
    mm = torch.cat([torch.as_tensor(prompt["mm_token_type_ids"])[None].repeat(g, 1), torch.zeros(g, t, dtype=torch.int32)], 1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": mm,
              "pixel_values_videos": prompt["pixel_values_videos"].repeat(g, 1),
              "video_grid_thw": prompt["video_grid_thw"].repeat(g, 1),
              "second_per_grid_ts": prompt["second_per_grid_ts"].repeat(g),
              "spatial_pixel_values": prompt["spatial_pixel_values"][None].repeat(g, 1, 1, 1, 1)}
    inputs = {k: v.to(device) for k, v in inputs.items()}
    with autocast_context(device, bf16):
        logits = model(**inputs, use_cache=False).logits
    logits = logits[:, prompt_ids.shape[1] - 1: -1].float()  # predictions of the completion tokens
    return torch.gather(F.log_softmax(logits, -1), 2, completions.to(device)[..., None])[..., 0]


def run_grpo(cfg: dict, env: DistEnv | None = None) -> dict:
    """Run the stage from a config dict (see training/configs/grpo_tiny.yaml)."""
    from training.model_io import ExampleEncoder, build_model
    from training.qa_records import load_qa_records

    env, gcfg, seed, out_dir = start_stage(cfg, "grpo", env)
    model, assets_dir = build_model(cfg.get("model", {}))
    model.to(env.device)
    beta = float(gcfg.get("beta", 0.04))
    reference = None
    if beta > 0:  # frozen SFT reference = the initial weights
        reference = copy.deepcopy(model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
    train = {"vision": False, "vision_merger": False, "spatial_encoder": False, "connector": True, "llm": True}
    counts = apply_freeze(model, {**train, **gcfg.get("train", {})})
    lrs = {k: float(v) for k, v in gcfg.get("lr", {"connector": 1e-6, "llm": 1e-6}).items()}
    optimizer = torch.optim.AdamW(build_param_groups(model, lrs, default_lr=lrs.get("llm", 1e-6)), betas=(0.9, 0.99))
    max_steps = int(gcfg.get("max_steps", 100))
    scheduler = cosine_with_warmup(optimizer, int(gcfg.get("warmup_steps", 0)), max_steps)
    records = load_qa_records(cfg.get("data", {}), split=cfg.get("data", {}).get("train_split", "train"))
    if not records:
        raise RuntimeError("grpo: no training questions found (check data.* in the config)")
    encoder = ExampleEncoder(model, assets_dir, cfg.get("data", {}), seed=seed)
    eos_ids = encoder.runtime.eos_ids
    weights = RewardWeights(**{k: gcfg[k] for k in ("format", "task", "format_mode") if k in gcfg}) \
        if any(k in gcfg for k in ("format", "task", "format_mode")) else RewardWeights()
    wrapped = wrap_for_strategy(model, env, cfg.get("strategy", "ddp"))
    group_size, updates = int(gcfg.get("group_size", 4)), max(1, int(gcfg.get("updates_per_batch", 1)))
    held: dict = {}

    def compute_loss(step: int, micro: int):
        key = (step // updates, micro)
        if key not in held:  # new samples from the current policy (= pi_old for the next `updates` steps)
            held.clear()
            idx = encoder.batch_indices(records, step // updates, micro, env.rank, env.world_size, 1,
                                        int(gcfg.get("grad_accum", 1)))[0]
            rec = records[idx]
            prompt = encoder.encode_prompt(rec)
            comps = sample_group(model, prompt, group_size, int(gcfg.get("max_new_tokens", 16)),
                                 float(gcfg.get("temperature", 1.0)), eos_ids, encoder.pad_id)
            texts = [encoder.tokenizer.decode(c[completion_mask(c[None], eos_ids)[0].bool()], skip_special_tokens=True)
                     for c in comps]
            rewards = [total_reward(t, rec, weights) for t in texts]
            r = torch.tensor([[x["total"] for x in rewards]])
            mask = completion_mask(comps, eos_ids).to(env.device)
            with torch.no_grad():
                old = completion_logprobs(model, prompt, comps, env.device)
                ref = completion_logprobs(reference, prompt, comps, env.device) if reference is not None else None
            held[key] = dict(prompt=prompt, comps=comps, mask=mask, adv=group_advantages(r)[0].to(env.device), old=old,
                             ref=ref, reward=float(r.mean()), task=sum(x["task"] for x in rewards) / len(rewards),
                             fmt=sum(x["format"] for x in rewards) / len(rewards), text=texts[0])
        h = held[key]
        logp = completion_logprobs(wrapped, h["prompt"], h["comps"], env.device, gcfg.get("bf16", "auto"))
        out = clipped_policy_loss(logp, h["old"], h["adv"], h["mask"], float(gcfg.get("clip_eps", 0.2)), beta, h["ref"])
        return out["loss"], {"reward": h["reward"], "reward_task": h["task"], "reward_format": h["fmt"],
                             "kl": out["kl"], "clip_frac": out["clip_frac"],
                             "completion_len": float(h["mask"].sum(1).mean())}

    loop_cfg = LoopConfig.from_dict("grpo", gcfg, out_dir)
    loop_cfg.resume = cfg.get("resume", loop_cfg.resume)
    loop_cfg.plot_keys = ("loss", "reward", "reward_task", "reward_format", "kl", "completion_len")
    result = train_loop(loop_cfg, env, model, optimizer, scheduler, compute_loss, processor=assets_dir,
                        ddp_module=wrapped if wrapped is not model else None)
    return {**result, "trainable": counts}
