"""Resumable checkpoints in the Hugging Face layout the core loads.

    out_dir/checkpoint-<step>/config.json, model-0000i-of-0000n.safetensors + index,
                             tokenizer/processor files, trainer_state.pt (optimizer, scheduler,
                             RNG states, step)
    out_dir/final/           the same model files, no trainer state

The model files are written by B's ros2_spatial_mllm.model.checkpoint (official key names, the
layout SpatialMLLM.load reads); trainer_state.pt is ours. Resuming loads the safetensors into the already
built model (strict except for tied weights), so the continued run is bit-exact.

trainer_state.pt holds only tensors, dicts, lists, tuples, str, int, float, bool and None (the Python
and NumPy RNG states are converted to tensors), so it is read with `torch.load(weights_only=True)`:
nothing is ever unpickled; a file holding any other object is refused with TrainerStateError.
"""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training.trainer_utils import rng_state, set_rng_state, unwrap

TRAINER_STATE = "trainer_state.pt"


class TrainerStateError(RuntimeError):
    """trainer_state.pt is not loadable with weights_only=True (holds an arbitrary pickled object)."""


def _plain_rng_state(state: dict) -> dict:
    """rng_state() with the Python and NumPy states as tensors (weights_only-loadable)."""
    plain = dict(state)
    version, internal, gauss_next = state["python"]  # (int, tuple of 625 ints < 2**32, float | None)
    plain["python"] = {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": None if gauss_next is None else float(gauss_next)}
    name, keys, pos, has_gauss, cached = state["numpy"]  # ('MT19937', uint32 [624], int, int, float)
    plain["numpy"] = {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return plain


def _native_rng_state(plain: dict) -> dict:
    """Inverse of _plain_rng_state: the tuples random.setstate / np.random.set_state take."""
    state = dict(plain)
    py = plain["python"]
    state["python"] = (py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"])
    npy = plain["numpy"]
    state["numpy"] = (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                      npy["cached_gaussian"])
    return state


def load_trainer_state(path: Path) -> dict:
    """Read trainer_state.pt with torch.load(weights_only=True); TrainerStateError if the file
    holds anything but tensors and plain containers/scalars (never unpickles arbitrary objects)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        detail = detail.split(". Please use")[0]  # torch's hint is how to allow-list it; we never do
        raise TrainerStateError(
            f"{path}: refusing to load, the trainer state holds objects other than tensors and plain "
            f"containers (weights_only=True); {detail}") from None


def save_model_files(model: torch.nn.Module, out: Path, processor: Any = None) -> None:
    """The official Spatial-MLLM layout through B's ros2_spatial_mllm.model.checkpoint
    (config.json, safetensors shards + index, tokenizer/processor files copied from
    `processor` = a directory holding them); other modules -> a plain model.safetensors."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    if getattr(getattr(model, "config", None), "model_type", None) == "spatial-mllm":
        from ros2_spatial_mllm.model.checkpoint import save_checkpoint as save_spatial_mllm

        save_spatial_mllm(model, out, assets_from=processor if isinstance(processor, (str, Path)) else None)
        return
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


def load_model_files(model: torch.nn.Module, ckpt: Path) -> None:
    """Load every *.safetensors shard of `ckpt` into `model` in place; only tied/non-persistent
    keys may be missing."""
    model = unwrap(model)
    if getattr(getattr(model, "config", None), "model_type", None) == "spatial-mllm":
        from ros2_spatial_mllm.model.checkpoint import _weight_files, load_state_into

        report = load_state_into(model, _weight_files(Path(ckpt)))
        if not report.ok:
            raise RuntimeError(f"checkpoint {ckpt} does not match the model: {report.summary()} "
                               f"missing={report.missing[:3]} unexpected={report.unexpected[:3]}")
        return
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(Path(ckpt).glob("*.safetensors")):
        state.update(load_file(str(shard)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors in {ckpt}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = _tied_names(model)
    real_missing = [k for k in missing if k not in tied]
    if unexpected or real_missing:
        raise RuntimeError(f"checkpoint {ckpt} does not match the model: missing={real_missing[:5]} "
                           f"unexpected={list(unexpected)[:5]}")


def _tied_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that share storage with an earlier one (e.g. lm_head <-> embeddings)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = tensor.data_ptr() if tensor.numel() else id(tensor)
        if key in seen:
            tied.add(name)
        else:
            seen[key] = name
    return tied


TRAINING_MODULES = "training_modules"


def save_checkpoint(out_dir: Path, step: int, model: torch.nn.Module, optimizer=None, scheduler=None,
                    extra: dict | None = None, processor: Any = None, keep_last: int = 2,
                    training_modules: dict[str, torch.nn.Module] | None = None) -> Path:
    """Write checkpoint-<step>/ (model files + trainer state); keep the newest `keep_last`.
    `training_modules` (training-only heads and probes, never part of the model) go to
    checkpoint-<step>/training_modules/<name>.safetensors, so a resumed run continues them too."""
    ckpt = Path(out_dir) / f"checkpoint-{step}"
    tmp = Path(out_dir) / f".checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_files(model, tmp, processor)
    if training_modules:
        (tmp / TRAINING_MODULES).mkdir()
        for name, module in training_modules.items():
            save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()},
                      str(tmp / TRAINING_MODULES / f"{name}.safetensors"))
    torch.save({"step": step, "optimizer": optimizer.state_dict() if optimizer else None,
                "scheduler": scheduler.state_dict() if scheduler else None,
                "rng": _plain_rng_state(rng_state()), "extra": extra or {}}, tmp / TRAINER_STATE)
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.rename(ckpt)
    for old in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt


def list_checkpoints(out_dir: Path) -> list[Path]:
    found = [p for p in Path(out_dir).glob("checkpoint-*") if p.is_dir() and (p / TRAINER_STATE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, out_dir: Path) -> Path | None:
    """'auto' -> newest checkpoint in out_dir (or None); a path -> that checkpoint; None -> None."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not (path / TRAINER_STATE).exists():
        raise FileNotFoundError(f"{path} is not a checkpoint (no {TRAINER_STATE})")
    return path


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer=None, scheduler=None,
                    training_modules: dict[str, torch.nn.Module] | None = None) -> dict:
    """Restore model, optimizer, scheduler, RNG states and `training_modules` (as saved by
    save_checkpoint); returns {'step', 'extra'}.
    Raises TrainerStateError (before touching the model) if trainer_state.pt is not weights_only-loadable."""
    state = load_trainer_state(Path(ckpt) / TRAINER_STATE)
    load_model_files(model, ckpt)
    for name, module in (training_modules or {}).items():
        path = Path(ckpt) / TRAINING_MODULES / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} has no {TRAINING_MODULES}/{name}.safetensors to resume from")
        module.load_state_dict(load_file(str(path)))
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(_native_rng_state(state["rng"]))
    return {"step": int(state["step"]), "extra": state.get("extra", {})}
