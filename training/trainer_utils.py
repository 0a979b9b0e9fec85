"""Shared plumbing for every training stage: config, seeding, distributed set-up, per-component
freezing and learning rates, the cosine schedule, and small tensor helpers.

Nothing here knows about a particular stage; sft.py, grpo.py and geometry_pretrain.py use it.
Distributed runs are detected from the environment `torchrun` / `accelerate launch` set
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a plain `python` run is one process.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import yaml

# Which parameters belong to which model component (first matching pattern wins; the last
# component, "llm", takes everything not matched earlier). Names follow the official checkpoint
# (`visual.*`, `spatial_encoder.vggt_model.*`, `connector.*`, `model.*`/`lm_head.*`) and the
# transformers-5 module tree (`model.visual.*`, `model.language_model.*`).
DEFAULT_COMPONENTS: dict[str, str] = {
    "spatial_encoder": r"(^|\.)spatial_encoder\.",
    "connector": r"(^|\.)connector\.",
    "vision_merger": r"(^|\.)visual\.merger\.",  # Qwen's patch merger (ViT -> LLM width)
    "vision": r"(^|\.)visual\.",
    "llm": r".*",
}


# ----------------------------------------------------------------------------------- config
def deep_update(base: dict, extra: dict) -> dict:
    """Recursively merge `extra` into a copy of `base` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """'sft.max_steps=20' -> {'sft': {'max_steps': 20}} (value parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"override must look like key.sub=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    if isinstance(value, str):  # YAML 1.1 reads "2e-5" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    out: dict = {}
    node = out
    keys = dotted.strip().split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> dict:
    """Read a stage YAML; `base: other.yaml` (relative to the file) is merged underneath."""
    cfg: dict = {}
    if path is not None:
        path = Path(path)
        with open(path) as fh:
            cfg = yaml.safe_load(fh) or {}
        if "base" in cfg:
            base_cfg = load_config(path.parent / cfg.pop("base"))
            cfg = deep_update(base_cfg, cfg)
    for item in overrides:
        cfg = deep_update(cfg, parse_override(item))
    return cfg


# ----------------------------------------------------------------------------------- seeding
def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices); deterministic kernels where cheap."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict:
    """Every RNG state a resumed run needs to continue bit-exact."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------- distributed
@dataclass
class DistEnv:
    """Process-group facts; `world_size == 1` means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean_dict(self, values: dict[str, float]) -> dict[str, float]:
        """Average each metric over the ranks that logged it this step (ranks may log different
        keys, e.g. an auxiliary loss whose targets only one rank's rows had), in two collectives."""
        if not self.distributed:
            return {k: float(v) for k, v in values.items()}
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, sorted(values))
        keys = sorted(set().union(*gathered))
        t = torch.tensor([[float(values.get(k, 0.0)), float(k in values)] for k in keys], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")  # NCCL reduces CUDA tensors only
        if t.numel():
            dist.all_reduce(t)
        return {k: float(t[i, 0] / t[i, 1]) for i, k in enumerate(keys)}


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group torchrun/accelerate set up (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


class StageStart(NamedTuple):
    """What every stage reads first: its process group, its config block, its seed, its folder
    (a tuple, so a stage unpacks it: `env, scfg, seed, out_dir = start_stage(...)`)."""
    env: DistEnv
    stage_cfg: dict
    seed: int
    out_dir: Path


def start_stage(cfg: dict, section: str, env: DistEnv | None = None, device: str = "auto",
                default_out: str | None = None) -> StageStart:
    """Join (or start) the process group, set the run's seed, and name the output folder
    (`output_dir`, else `default_out`, else runs/<section>). The seed is set before the model is
    built (a stage's own draws follow `seed`; a fresh model's weights follow `model.seed`)."""
    env = env or init_distributed(cfg.get("device", device))
    seed = int(cfg.get("seed", 0))
    set_seed(seed)
    out_dir = Path(cfg.get("output_dir", default_out or f"runs/{section}"))
    return StageStart(env=env, stage_cfg=cfg.get(section, {}), seed=seed, out_dir=out_dir)


def wrap_for_strategy(model: torch.nn.Module, env: DistEnv, strategy: str = "ddp") -> torch.nn.Module:
    """Wrap a model for data parallelism: 'ddp' (DistributedDataParallel), 'fsdp' (torch FSDP,
    full sharding), or 'none'. One process -> the model itself. DeepSpeed ZeRO-3 is driven by
    `accelerate launch --config_file training/configs/accelerate_zero3.yaml` instead (see
    training/configs/README.md)."""
    if not env.distributed or strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [env.local_rank] if env.device.type == "cuda" else None
        # find_unused_parameters: frozen towers and the unused VGGT heads produce no grads.
        return DDP(model, device_ids=ids, find_unused_parameters=True)
    if strategy == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP(model, device_id=env.device if env.device.type == "cuda" else None, use_orig_params=True)
    raise ValueError(f"unknown strategy {strategy!r} (ddp, fsdp, none)")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


# ---------------------------------------------------------------------- components and lrs
def component_of(name: str, patterns: dict[str, str] | None = None) -> str:
    for comp, pattern in (patterns or DEFAULT_COMPONENTS).items():
        if re.search(pattern, name):
            return comp
    return "llm"


def apply_freeze(model: torch.nn.Module, train: dict[str, bool], patterns: dict[str, str] | None = None) -> dict[str, int]:
    """Set requires_grad per component ({'vision': False, 'connector': True, ...}; components
    missing from `train` are trained). Returns trainable parameter counts per component."""
    counts: dict[str, int] = {}
    for name, param in model.named_parameters():
        comp = component_of(name, patterns)
        param.requires_grad_(bool(train.get(comp, True)))
        if param.requires_grad:
            counts[comp] = counts.get(comp, 0) + param.numel()
    return counts


def build_param_groups(model: torch.nn.Module, lrs: dict[str, float], default_lr: float,
                       weight_decay: float = 0.0, patterns: dict[str, str] | None = None) -> list[dict]:
    """One optimizer group per trained component with its own lr (connector 2e-5 vs LLM 7e-6 in
    the reference). Biases and norm weights (1-D) get no weight decay."""
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        comp = component_of(name, patterns)
        decay = param.ndim >= 2
        key = (comp, decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": float(lrs.get(comp, default_lr)),
                           "weight_decay": weight_decay if decay else 0.0, "name": f"{comp}{'' if decay else '_nodecay'}"}
        groups[key]["params"].append(param)
    return list(groups.values())


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to each group's lr, then cosine decay to min_ratio * lr at total_steps."""
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, max(0.0, progress))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ------------------------------------------------------------------------------ precision
def autocast_context(device: torch.device, bf16: str | bool = "auto"):
    """bf16 autocast where the hardware has it (CUDA with bf16 support), else a no-op.
    bf16='auto' -> on for capable GPUs only (CPU bf16 matmuls are slow on most laptops)."""
    want = bf16 is True or (bf16 == "auto" and device.type == "cuda")
    if want and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if bf16 is True and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def state_dict_hash(model: torch.nn.Module, keep: Callable[[str], bool] | None = None) -> str:
    """sha256 over every tensor (name, dtype, bytes) — equal iff weights are bit-identical.
    `keep(name)` restricts it to some tensors (e.g. one component's)."""
    h = hashlib.sha256()
    for name, tensor in sorted(unwrap(model).state_dict().items()):
        if keep is not None and not keep(name):
            continue
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
    return h.hexdigest()


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
