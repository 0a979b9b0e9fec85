"""The one optimisation loop every stage shares (SFT, GRPO, geometry pre-training).

A stage supplies `compute_loss(step, micro) -> (loss tensor, {metric: float})`, where the batch
is a pure function of (seed, step, micro, rank) — never of consumed RNG draws — so that a resumed
run sees exactly the batches the uninterrupted run would have seen. The loop does gradient
accumulation (DDP `no_sync` on all but the last micro-step), clipping, the optimizer/scheduler
step, the tqdm bar, the CSV + PNG metrics, and resumable checkpoints (training/checkpointing.py).

Why not transformers.Trainer / TRL: see the docstrings of sft.py and grpo.py.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from training.checkpointing import load_checkpoint, resolve_resume, save_checkpoint, save_model_files
from training.metrics import MetricsLog
from training.trainer_utils import DistEnv, state_dict_hash, unwrap


@dataclass
class LoopConfig:
    stage: str
    out_dir: Path
    max_steps: int
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    log_every: int = 1
    save_every: int = 0          # 0 -> only the final checkpoint
    keep_last: int = 2
    resume: str | None = None    # None | "auto" | path to checkpoint-N
    plot_keys: Sequence[str] = ("loss", "lr")
    stop_after: int = 0          # > 0: checkpoint and stop after this step (simulated preemption)

    @classmethod
    def from_dict(cls, stage: str, cfg: dict, out_dir: Path) -> "LoopConfig":
        keys = ("max_steps", "grad_accum", "max_grad_norm", "log_every", "save_every", "keep_last", "resume",
                "stop_after")
        return cls(stage=stage, out_dir=Path(out_dir), **{k: cfg[k] for k in keys if k in cfg})


def _full_params(wrapper):
    """FSDP: gather the full (unsharded) weights onto rank 0 while saving (collective; every rank
    enters). Other wrappers: nothing to do. Note: FSDP optimizer state stays per-rank and is not
    gathered, so FSDP checkpoints resume weights + schedule + RNG but restart Adam moments."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    if isinstance(wrapper, FSDP):
        return FSDP.summon_full_params(wrapper, writeback=False, rank0_only=True, offload_to_cpu=True)
    return contextlib.nullcontext()


def train_loop(cfg: LoopConfig, env: DistEnv, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any, compute_loss: Callable[[int, int], tuple[torch.Tensor, dict]],
               processor: Any = None, ddp_module: torch.nn.Module | None = None,
               on_step_end: Callable[[int, dict], None] | None = None,
               training_modules: dict[str, torch.nn.Module] | None = None,
               grad_sync: Callable[[], None] | None = None) -> dict:
    """Run steps [start, max_steps); returns {'final_dir', 'last_metrics', 'start_step'}.

    model: the module whose weights are checkpointed (unwrapped inside);
    ddp_module: the DDP/FSDP wrapper used in compute_loss (for no_sync), if any;
    training_modules: training-only modules (aux heads, probes) checkpointed and resumed with the run;
    grad_sync: called once per step after the last backward, before clipping (a stage whose loss
    bypasses the DDP wrapper averages its gradients over ranks there)."""
    out_dir = cfg.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = resolve_resume(cfg.resume, out_dir)
    start = 0
    if ckpt is not None:
        start = load_checkpoint(ckpt, unwrap(model), optimizer, scheduler, training_modules)["step"]
        if env.is_main:
            tqdm.write(f"[{cfg.stage}] resumed from {ckpt} at step {start}")

    def save_at(step: int) -> None:  # main rank only, inside _full_params
        save_checkpoint(out_dir, step, model, optimizer, scheduler, processor=processor, keep_last=cfg.keep_last,
                        training_modules=training_modules)

    log = MetricsLog(out_dir / "metrics.csv", resume_step=start if ckpt is not None else None) if env.is_main else None
    if log is not None and ckpt is None:
        log.rows = []
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    bar = tqdm(total=cfg.max_steps, initial=start, desc=cfg.stage, disable=not env.is_main, dynamic_ncols=True)
    last: dict = {}
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            sync = micro == cfg.grad_accum - 1
            ctx = ddp_module.no_sync() if (ddp_module is not None and not sync and hasattr(ddp_module, "no_sync")) \
                else contextlib.nullcontext()
            with ctx:
                loss, metrics = compute_loss(step, micro)
                (loss / cfg.grad_accum).backward()
            for k, v in {"loss": float(loss.detach()), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
        if grad_sync is not None:
            grad_sync()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row = env.mean_dict(sums)
        row.update({f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)})
        row["lr"] = optimizer.param_groups[0]["lr"]
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        row["sec_per_step"] = time.perf_counter() - t0
        last = row
        done = step + 1
        if log is not None and (done % max(1, cfg.log_every) == 0 or done == cfg.max_steps):
            log.log(step=done, **row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if on_step_end is not None:
            on_step_end(done, row)
        stop = bool(cfg.stop_after) and done >= cfg.stop_after and done < cfg.max_steps
        if stop or (cfg.save_every and done % cfg.save_every == 0 and done < cfg.max_steps):
            with _full_params(ddp_module):
                if env.is_main:
                    save_at(done)
            env.barrier()
        if stop:
            bar.close()
            return {"final_dir": None, "last_metrics": last, "start_step": start, "stopped_at": done}
    bar.close()
    if env.distributed:  # every rank records its weights' hash: DDP ranks must agree bit for bit
        (out_dir / f"weights_rank{env.rank}.sha256").write_text(state_dict_hash(model) + "\n")
    final_dir = out_dir / "final"
    with _full_params(ddp_module):
        if env.is_main:
            if start < cfg.max_steps or not list(out_dir.glob("checkpoint-*")):
                save_at(cfg.max_steps)
            save_model_files(model, final_dir, processor)
    if env.is_main:
        if log is not None and log.rows:
            log.plot(out_dir / "curves.png", keys=[k for k in cfg.plot_keys if log.series(k)[0]],
                     title=f"{cfg.stage}: {out_dir}")
    env.barrier()
    return {"final_dir": final_dir, "last_metrics": last, "start_step": start}
