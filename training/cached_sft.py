"""SFT with frozen encoders on cached visual tokens (connector + LLM trained).

    spatial-mllm-train cached-sft --config training/configs/cached_sft_tiny.yaml
    # tiny CPU smoke run:
    python -m training.cli cached-sft --config training/configs/cached_sft_tiny.yaml \
        --set cached_sft.max_steps=3 --set output_dir=runs/exp_smoke

The reference recipe freezes both encoders in SFT; then the visual tokens of a question are a
pure function of its frames and are computed once (training/feature_cache.py). A step runs only
connector + LLM, so the same CPU hour sees many times more questions than end-to-end SFT.
`model.init` must be a checkpoint whose encoders are already trained (geometry pre-training of
the spatial encoder, semantic pre-training of the 2D tower); the saved checkpoints are ordinary
Spatial-MLLM checkpoints (the frozen encoders are copied through unchanged).

Every `eval_every` steps (and at the last) it measures the frame signal on a fixed slice of the
validation split (answer loss with the true frames vs another scene's frames,
training/frame_signal.py): the whole history of those points (loss_true, loss_shuffled, gap) and
the last per-task table go to signal.json, the last table to signal.md, one line each to the
progress log; metrics.csv holds the training steps only.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from training.aux_heads import aux_losses
from training.feature_cache import IGNORE_INDEX, VisualFeatureCache, cached_answer_loss
from training.loop import LoopConfig, train_loop
from training.sft import setup_trainable
from training.trainer_utils import cosine_with_warmup, start_stage

FROZEN_ENCODERS = {"vision": False, "vision_merger": False, "spatial_encoder": False, "connector": True, "llm": True}


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Permutation of the n training records for one epoch, seeded by (seed, epoch); cached, as
    every batch row asks for it (read-only: callers index it)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def batch_records(n: int, batch_size: int, seed: int, step: int, rank: int = 0, world: int = 1) -> list[int]:
    """Record indices of (step, rank): a pure function of the step (resume replays exactly)."""
    start = (step * world + rank) * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, off = divmod(pos, n)
        out.append(int(epoch_order(n, seed, epoch)[off]))
    return out


def precompute(cache: VisualFeatureCache, recs: list[dict], desc: str, show: bool = True, store=None,
               env=None) -> dict:
    """Encode every distinct frame set of `recs` once (the only encoder passes of the stage).
    With a FeatureStore, stored entries are read instead and new ones written back; with several
    ranks (`env`) and a store, each rank encodes its share of the new sets, the ranks write their
    shards one after another, and every rank then reads the others' sets from the store.
    Returns {'frame_sets', 'from_store', 'encoded'}."""
    keys = list(dict.fromkeys(cache.frame_key(r) for r in recs))
    world = env.world_size if env is not None and store is not None else 1
    rank = env.rank if world > 1 else 0
    if world > 1:  # one snapshot of the store for every rank: no rank writes before all have read it
        env.barrier()
        store.refresh()
    loaded = store.load_into(cache.features, keys) if store is not None else 0
    todo = [k for k in keys if k not in cache.features]
    mine = todo[rank::world]
    with tqdm(total=len(mine), desc=desc, disable=not show, dynamic_ncols=True) as bar:
        cache.encode_many(mine, on_batch=bar.update)
    if store is not None and todo:
        for turn in range(world):  # one writer at a time: shard names and the index belong to the store
            if world > 1:
                env.barrier()
            if turn == rank:
                if world > 1:
                    store.refresh()
                store.save(cache.features, mine)
        if world > 1:
            env.barrier()
            store.refresh()
            store.load_into(cache.features, todo)
    return {"frame_sets": len(keys), "from_store": loaded, "encoded": len(todo)}


def average_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Mean of each gradient over the ranks, in one all-reduce. A parameter with no gradient on
    any rank keeps none (AdamW then skips it, as in one process); one with a gradient on some
    ranks only counts zeros for the others. The cached loss calls model.model / lm_head and the
    auxiliary heads directly, so no DDP wrapper does this."""
    import torch.distributed as dist

    present = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64)
    dist.all_reduce(present)
    used = [p for p, n in zip(params, present.tolist()) if n > 0]
    if not used:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in used])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in used:
        part = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = part.clone()
        else:
            p.grad.copy_(part)
        offset += p.numel()


def open_store(cfg: dict, out_dir: Path, model, encoder):
    """The stage's FeatureStore: `feature_store` (a directory; default `<output_dir>/../feature_store`,
    so a pipeline's align and SFT stages share one), or None when it is false/null."""
    from training.feature_store import FeatureStore, encoder_fingerprint

    root = cfg.get("feature_store", str(out_dir.parent / "feature_store"))
    if not root:
        return None
    return FeatureStore(root, encoder_fingerprint(model, encoder.video_cfg))


def select_records(records: list[dict], scfg: dict) -> list[dict]:
    """The stage's training rows: only_tasks / skip_tasks / skip_families filter them, and
    repeat_families {family: n} lists each row of that family n times per epoch, and repeat_tasks
    {task: n} a task's rows n times, in place of its family's count (the frame cache is keyed by
    frames, so repeats cost no memory). Repeats keep the grounding questions a sizeable
    share of the VSI mix, so reading the frames, learned in the align stage, keeps being rewarded."""
    from training.qa_records import task_family

    only, skip = set(scfg.get("only_tasks", [])), set(scfg.get("skip_tasks", []))
    skip_fam = set(scfg.get("skip_families", []))
    repeat = {str(k): int(v) for k, v in scfg.get("repeat_families", {}).items()}
    repeat_task = {str(k): int(v) for k, v in scfg.get("repeat_tasks", {}).items()}
    out = []
    for r in records:
        fam, task = r.get("family", "vsibench"), task_family(r)
        if (only and task not in only) or task in skip or fam in skip_fam:
            continue
        out += [r] * (repeat_task[task] if task in repeat_task else repeat.get(fam, 1))
    return out


def run_cached_sft(cfg: dict, section: str = "cached_sft", cache_cls=VisualFeatureCache) -> dict:
    """Run the stage from a config dict (see training/configs/cached_sft_tiny.yaml); `section`
    names the config block (the pipeline's `align` stage is this stage with only_tasks set).
    `cache_cls(model, encoder)` builds the feature cache (diagnostics swap in one that edits the
    tokens, training/position_oracle.py)."""
    from training.frame_signal import format_table, frame_signal, spread
    from training.model_io import ExampleEncoder, build_model
    from training.qa_records import load_qa_records

    env, scfg, seed, out_dir = start_stage(cfg, section, device="cpu", default_out="runs/cached_sft")
    model, assets_dir = build_model(cfg.get("model", {}))
    if scfg.get("zero_init_connector", False):
        # the spatial branch starts silent, so the (semantic) 2D tokens are not buried under it;
        # it grows in as SFT finds use for it (as zero-initialised residual branches do)
        torch.nn.init.zeros_(model.connector.mlp[2].weight)
        torch.nn.init.zeros_(model.connector.mlp[2].bias)
    groups, counts = setup_trainable(model, {**scfg, "train": {**FROZEN_ENCODERS, **scfg.get("train", {})}})
    if any(counts.get(c) for c in ("vision", "vision_merger", "spatial_encoder")):
        raise ValueError("cached_sft: the encoders must stay frozen (their outputs are cached)")
    if env.is_main:
        print("cached_sft: trainable parameters per component:", counts)
    dcfg = cfg.get("data", {})
    if dcfg.get("space_aware_picks"):  # picks of another model's geometry are not the frames this one picks
        from training.model_picks import check_picks

        check_picks(dcfg["space_aware_picks"], model)
    records = load_qa_records(dcfg, split=dcfg.get("train_split", "train"))
    records = select_records(records, scfg)
    if not records:
        raise RuntimeError("cached_sft: no training questions found (check data.* in the config)")
    encoder = ExampleEncoder(model, assets_dir, dcfg, seed=seed)
    cache = cache_cls(model, encoder)
    store = open_store(cfg, out_dir, model, encoder)
    stats = precompute(cache, records, "encode train frames", env.is_main, store, env)
    if env.is_main:
        print(f"cached_sft: {stats['frame_sets']} frame sets, {stats['from_store']} read from "
              f"{store.dir if store is not None else 'no store'}, {stats['encoded']} encoded")
    val = spread(select_records(load_qa_records(dcfg, split="val"), {**scfg, "repeat_families": {}, "repeat_tasks": {}}),
                 int(scfg.get("eval_limit", 240)))
    if val:
        precompute(cache, val, "encode val frames", env.is_main, store, env)
    acfg = scfg.get("aux", {})
    heads = targets = None
    if acfg.get("enabled", False):  # auxiliary grounding targets (training/aux_heads.py)
        from training.aux_heads import AuxHeads, AuxTargetCache

        heads = AuxHeads(model.config.text_config.hidden_size, int(acfg.get("layer", 1)), int(acfg.get("time_layer", 0)),
                         int(acfg.get("order_layer", 0)), int(acfg.get("option_layer", 0)),
                         int(acfg.get("pair_layer", 0)))
        if float(acfg.get("weights", {}).get("mention_attention", 0.0)) > 0:  # the mention layer's attention
            from training.aux_heads import AttentionCapture

            heads.attention = AttentionCapture(model, heads.layer - 1)
        targets = AuxTargetCache(encoder.tokenizer, model.connector.temporal_patch_size)
        groups = groups + [{"params": list(heads.parameters()), "lr": float(acfg.get("lr", 1e-3)),
                            "weight_decay": 0.0, "name": "aux_heads"}]
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    grad_sync = None
    if env.distributed:  # data parallel: rank r takes rows [r*bs, (r+1)*bs) of each step's world*bs
        import torch.distributed as dist

        for p in trainable:  # one starting point (the auxiliary heads are drawn per process)
            dist.broadcast(p.data, 0)
        grad_sync = functools.partial(average_gradients, trainable, env.world_size)
    max_steps = int(scfg.get("max_steps", 100))
    scheduler = cosine_with_warmup(optimizer, int(scfg.get("warmup_steps", max(1, max_steps * 3 // 100))), max_steps)
    bs = int(scfg.get("batch_size", 16))
    weights = {"token_cat": 0.1, "token_xyz": 1.0, "token_time": 1.0, "mention_seen": 0.3, "mention_reg": 1.0, "room": 0.3,
               "mention_attention": 0.0, "option": 1.0, "order": 1.0, "pair": 1.0,
               **{k: float(v) for k, v in acfg.get("weights", {}).items()}}

    def compute_loss(step: int, micro: int):
        idx = batch_records(len(records), bs, seed, step * int(scfg.get("grad_accum", 1)) + micro, env.rank,
                            env.world_size)
        recs = [records[i] for i in idx]
        batch = cache.batch(recs)
        if heads is None:
            return cached_answer_loss(model, batch)
        return aux_step_loss(model, heads, targets, cache, recs, batch, weights)

    signal_log: list[dict] = []

    def on_step_end(step: int, row: dict) -> None:
        every = int(scfg.get("eval_every", 0))
        if not val or not every or (step % every and step != max_steps) or not env.is_main:
            return
        res = frame_signal(model, cache, val, batch_size=64)
        signal_log.append({"step": step, **res["overall"]})
        (out_dir / "signal.json").write_text(json.dumps({"history": signal_log, "last": res}, indent=1))
        (out_dir / "signal.md").write_text(f"step {step}\n\n" + format_table(res) + "\n")
        tqdm.write(f"[cached_sft] step {step}: val loss true {res['overall']['loss_true']:.4f} "
                   f"shuffled {res['overall']['loss_shuffled']:.4f} gap {res['overall']['gap']:.4f}")
        model.train()

    loop_cfg = LoopConfig.from_dict(section, scfg, out_dir)
    loop_cfg.resume = cfg.get("resume", loop_cfg.resume)
    loop_cfg.plot_keys = ("loss", "token_acc", "lr", "grad_norm")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = train_loop(loop_cfg, env, model, optimizer, scheduler, compute_loss, processor=assets_dir,
                        on_step_end=on_step_end, training_modules={"aux_heads": heads} if heads is not None else None,
                        grad_sync=grad_sync)
    return {**result, "trainable": counts, "signal": signal_log[-1] if signal_log else None}


def aux_step_loss(model, heads, targets, cache, recs: list[dict], batch: dict, weights: dict):
    """Answer loss + weighted auxiliary grounding terms (training/aux_heads.py) for one batch."""
    import torch.nn.functional as F

    from training.feature_cache import cached_answer_logits

    keys = [cache.frame_key(r) for r in recs]
    merge = model.connector.spatial_merge_size ** 2
    toks = [cache.record_tokens(r, int(cache.visual(k)["grid"].prod()) // merge) for r, k in zip(recs, keys)]
    aux = targets.batch(recs, keys, [t["prompt_text"] for t in toks], [t["prompt_len"] for t in toks],
                        batch["video_grid_thw"])
    states: dict = {}
    capture = getattr(heads, "attention", None)
    if capture is not None:
        capture.mask = batch["attention_mask"]
    try:
        logits, tgt = cached_answer_logits(model, batch, states=states)
    finally:
        if capture is not None:
            capture.mask = None
    answer = F.cross_entropy(logits.float(), tgt)
    video_mask = batch["input_ids"] == int(model.config.video_token_id)
    terms = aux_losses(heads, states["fused"], states["hidden_states"], aux, video_mask)
    if capture is not None:
        from training.aux_heads import mention_attention_loss

        terms["mention_attention"] = mention_attention_loss(capture.weights, aux, video_mask)
    fields = terms.pop("fields", {})
    total = answer + sum(weights[k] * v for k, v in terms.items())
    with torch.no_grad():
        acc = (logits.argmax(-1) == tgt).float().mean() if len(tgt) else torch.tensor(0.0)
    return total, {"answer_loss": float(answer.detach()), "token_acc": float(acc),
                   **{f"aux_{k}": float(v.detach()) for k, v in terms.items()},
                   **{f"mention_{k}": v for k, v in fields.items()}}


__all__ = ["run_cached_sft", "aux_step_loss", "select_records", "batch_records", "epoch_order", "IGNORE_INDEX"]
