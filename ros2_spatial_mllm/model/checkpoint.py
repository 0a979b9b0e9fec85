"""Save/load Spatial-MLLM checkpoints in the official v1.1 directory layout, offline only.

Layout (Diankun/Spatial-MLLM-v1.1-Instruct-135K): `config.json` (model_type "spatial-mllm" with
`spatial_config` / `connector_config`), `model-0000i-of-0000n.safetensors` shards +
`model.safetensors.index.json`, tokenizer and processor files.

Key prefixes: the official files use the transformers-4 names of Qwen's modules; transformers 5
nests them differently. Mapping (both ways, explicit):
    file (official)                 module (transformers 5)
    visual.*                   <->  model.visual.*
    model.*                    <->  model.language_model.*
    lm_head.*                  <->  lm_head.*
    spatial_encoder.vggt_model.*, connector.*   unchanged
Loading reads local directories only (never a Hub id, never a download) and safetensors only,
and returns a `CheckpointLoadReport` of missing / unexpected / shape-mismatched keys.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from .config import SpatialMLLMConfig

__all__ = [
    "ASSET_FILES",
    "CheckpointLoadReport",
    "ModelDirError",
    "to_official_key",
    "to_module_key",
    "official_state_dict",
    "resolve_model_dir",
    "save_checkpoint",
    "load_checkpoint",
    "load_tokenizer",
    "eos_token_ids",
]

INDEX_FILE = "model.safetensors.index.json"
# tokenizer / processor / generation files copied along with the weights
ASSET_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
)


class ModelDirError(FileNotFoundError):
    """The model directory is not a usable local checkpoint (message says why)."""


@dataclass
class CheckpointLoadReport:
    """Keys use the official (file) names. Empty lists = exact match."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, file, model)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        return f"missing={len(self.missing)} unexpected={len(self.unexpected)} mismatched={len(self.mismatched)}"


def to_official_key(key: str) -> str:
    """transformers-5 module key -> official checkpoint key."""
    if key.startswith("model.visual."):
        return "visual." + key[len("model.visual.") :]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model.") :]
    return key


def to_module_key(key: str) -> str:
    """Official checkpoint key (or an already transformers-5 key) -> module key."""
    if key.startswith(("model.visual.", "model.language_model.")):
        return key
    if key.startswith("visual."):
        return "model.visual." + key[len("visual.") :]
    if key.startswith("model."):
        return "model.language_model." + key[len("model.") :]
    return key


def _tied_keys(model) -> set:
    """Module keys that are tied copies and are not written (lm_head with tied embeddings)."""
    return {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()


def official_state_dict(model, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """Model state dict under official key names (tied lm_head dropped), contiguous, on CPU."""
    skip = _tied_keys(model)
    out: Dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if key in skip:
            continue
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[to_official_key(key)] = tensor.to("cpu").contiguous()
    return out


def _shards(state: Dict[str, torch.Tensor], max_shard_bytes: int) -> List[Dict[str, torch.Tensor]]:
    shards: List[Dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = state[key]
        size += nbytes
    return shards


def save_checkpoint(
    model,
    out_dir: str | Path,
    assets_from: str | Path | None = None,
    max_shard_bytes: int = 4 * 1024**3,
    dtype: Optional[torch.dtype] = None,
) -> Path:
    """Write config.json, safetensors shards + index (official keys) and, from `assets_from`,
    the tokenizer/processor files (`ASSET_FILES` that exist there). Returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = official_state_dict(model, dtype)
    shards = _shards(state, max_shard_bytes)
    weight_map: Dict[str, str] = {}
    for old in out.glob("model*.safetensors"):
        old.unlink()
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(str(out))
    if assets_from is not None and Path(assets_from).resolve() != out.resolve():
        for name in ASSET_FILES:
            src = Path(assets_from) / name
            if src.is_file():
                shutil.copyfile(src, out / name)
    return out


def resolve_model_dir(model_dir: str | Path) -> Path:
    """Check that `model_dir` is an existing local checkpoint directory (offline only)."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ModelDirError(
            f"model directory '{model_dir}' does not exist; loading is offline only (Hugging Face Hub ids are "
            "never downloaded): download the checkpoint yourself and pass its local directory"
        )
    if not (path / "config.json").is_file():
        raise ModelDirError(f"'{path}' has no config.json: not a Spatial-MLLM checkpoint directory")
    if not (path / INDEX_FILE).is_file() and not list(path.glob("*.safetensors")):
        hint = " (.bin/.pt weights are not loaded: convert them to safetensors)" if list(path.glob("*.bin")) else ""
        raise ModelDirError(f"'{path}' has no safetensors weights{hint}")
    return path


def _weight_files(path: Path) -> List[Path]:
    index = path / INDEX_FILE
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise ModelDirError(f"'{path}': shards listed in {INDEX_FILE} are missing: {missing}")
        return [path / n for n in names]
    return sorted(path.glob("*.safetensors"))


def load_config(model_dir: str | Path) -> SpatialMLLMConfig:
    """Read config.json of a local directory into a `SpatialMLLMConfig`."""
    values = json.loads((resolve_model_dir(model_dir) / "config.json").read_text())
    values.pop("model_type", None)
    values.pop("architectures", None)
    return SpatialMLLMConfig(**values)


def load_state_into(model, files: Iterable[Path], device: str | torch.device = "cpu") -> CheckpointLoadReport:
    """Copy tensors from safetensors `files` (official or module key names) into `model`."""
    params = dict(model.state_dict())
    tied = _tied_keys(model)
    report = CheckpointLoadReport()
    loaded = set()
    for file in files:
        tensors = load_file(str(file), device=str(device))
        usable = {}
        for key, tensor in tensors.items():
            module_key = to_module_key(key)
            if module_key not in params:
                report.unexpected.append(to_official_key(module_key))
            elif tuple(tensor.shape) != tuple(params[module_key].shape):
                report.mismatched.append((to_official_key(module_key), tuple(tensor.shape), tuple(params[module_key].shape)))
            else:
                usable[module_key] = tensor
        model.load_state_dict(usable, strict=False)
        loaded.update(usable)
        del tensors, usable
    for key in params:
        if key not in loaded and key not in tied:
            report.missing.append(to_official_key(key))
    if tied and "lm_head.weight" in loaded:  # an untied copy in the file: keep embeddings as source of truth
        model.tie_weights()
    return report


def load_checkpoint(
    model_dir: str | Path, device: str | torch.device = "cpu", dtype: Optional[torch.dtype] = None
):
    """Load a local Spatial-MLLM directory -> (SpatialMLLMForConditionalGeneration in eval mode,
    CheckpointLoadReport). Missing parameters are zero-filled and listed in the report."""
    from transformers.initialization import no_init_weights

    from .spatial_mllm import SpatialMLLMForConditionalGeneration

    path = resolve_model_dir(model_dir)
    config = load_config(path)
    files = _weight_files(path)
    previous = torch.get_default_dtype()
    try:
        if dtype is not None:
            torch.set_default_dtype(dtype)
        with torch.device(device), no_init_weights():
            model = SpatialMLLMForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    report = load_state_into(model, files, device="cpu")
    if report.missing:
        state = model.state_dict()
        with torch.no_grad():
            for key in report.missing:
                state[to_module_key(key)].zero_()
    model.tie_weights()
    return model.eval(), report


def load_tokenizer(model_dir: Path):
    """The checkpoint's Qwen2 tokenizer with its chat template (from the tokenizer config or
    chat_template.jinja/.json); ValueError when there is none. Local files only."""
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        for name in ("chat_template.jinja", "chat_template.json"):
            path = model_dir / name
            if path.is_file():
                text = path.read_text()
                tokenizer.chat_template = json.loads(text)["chat_template"] if name.endswith(".json") else text
                break
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"'{model_dir}' has no chat template (tokenizer_config.json or chat_template.*)")
    return tokenizer


def eos_token_ids(model_dir: Path, config, tokenizer) -> List[int]:
    """Every id that ends a reply: generation_config.json's, the text config's, <|im_end|>, <|endoftext|>."""
    ids: List[int] = []
    gen = model_dir / "generation_config.json"
    if gen.is_file():
        value = json.loads(gen.read_text()).get("eos_token_id")
        ids += value if isinstance(value, list) else [value] if value is not None else []
    text_eos = config.text_config.eos_token_id
    ids += text_eos if isinstance(text_eos, list) else [text_eos] if text_eos is not None else []
    for token in ("<|im_end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid >= 0:
            ids.append(tid)
    return sorted(set(int(i) for i in ids))
