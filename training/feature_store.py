"""On-disk store of frozen-encoder outputs, shared by the stages that train on cached tokens.

The align stage and the cached SFT stage of a pipeline train connector + LLM on the same frozen
encoders, and their question sets overlap (the grounding questions are in both): on a 2-core
CPU encoding ~16k frame sets takes ~12 minutes, which the second stage should not pay again.
A store lives under `<root>/<fingerprint>/`, where the fingerprint hashes every frozen encoder
tensor (2D tower, its merger, the spatial encoder), the model config and the video-processing
config; a stage whose encoders differ in any bit gets a different directory, so a stale entry
can never be read back.

Layout: `index.json` {"fingerprint", "shards": {file: [key, ...]}} and shards
`shard_NNNN.safetensors` holding `{j}.video` [N, H], `{j}.spatial` [N, Dm], `{j}.grid` [1, 3],
`{j}.second_per_grid_ts` [1] for the j-th key of that shard (a key is the frame files joined by
newlines). safetensors only: nothing here unpickles.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from ros2_spatial_mllm.model.vggt.config import VGGTConfig

FIELDS = ("video", "spatial", "grid", "second_per_grid_ts")
FROZEN_COMPONENTS = ("vision", "vision_merger", "spatial_encoder")


# Parts of the spatial encoder that read its tokens but never feed them: the pair-pose head (added
# after SFT, training/pair_pose.py) changes the predicted cameras, not the cached visual tokens.
# Its config keys are hashed at their defaults (VGGTConfig: no head), so a model without the head
# keeps the fingerprint it had before the head was left out, and the stores written for it.
TOKEN_NEUTRAL_TENSORS = ".pair_pose_head."
TOKEN_NEUTRAL_CONFIG = {f.name: f.default for f in dataclasses.fields(VGGTConfig)
                        if f.name in ("pair_pose_head", "pair_pose_dim")}


def encoder_fingerprint(model: torch.nn.Module, video_cfg: object = None, tokens_only: bool = True) -> str:
    """sha256 (hex) over the frozen encoders' tensors (trainer_utils.state_dict_hash), the model
    config and the video-processing config: equal fingerprints mean equal cached features.
    tokens_only leaves out the pair-pose head, so a stage after the head (the pipeline's polish
    stage) reads the store the SFT stage wrote; tokens_only=False covers every encoder tensor, as
    the predicted geometry (and so the frames space-aware sampling picks) depends on them all."""
    from training.trainer_utils import component_of, state_dict_hash

    def keep(name: str) -> bool:
        return component_of(name) in FROZEN_COMPONENTS and not (tokens_only and TOKEN_NEUTRAL_TENSORS in name)

    h = hashlib.sha256(state_dict_hash(model, keep=keep).encode())
    config = getattr(model, "config", None)
    # the LLM's own config does not change what the encoders compute (an LLM of another depth
    # reads the same cached features)
    neutral = TOKEN_NEUTRAL_CONFIG if tokens_only else {}
    encoders = {k: v for k, v in _public(config.to_dict(), neutral).items()
                if k not in ("text_config", "frame_time_positions")} if config is not None else {}
    h.update(json.dumps(encoders, sort_keys=True, default=str).encode())
    h.update(repr(video_cfg).encode())  # a dataclass: its repr lists every field
    return h.hexdigest()


def _public(d, neutral: dict | None = None):
    """A config dict without bookkeeping keys ('_name_or_path' names the checkpoint a stage
    started from, not what its encoders compute), the keys in `neutral` set to its values."""
    neutral = neutral or {}
    if isinstance(d, dict):
        return {k: neutral[k] if k in neutral else _public(v, neutral) for k, v in d.items()
                if not str(k).startswith("_") and k != "transformers_version"}
    return d


class FeatureStore:
    """Shards of cached visual features for one encoder fingerprint."""

    def __init__(self, root: str | Path, fingerprint: str):
        self.fingerprint = fingerprint
        self.dir = Path(root) / fingerprint[:20]
        self.index_path = self.dir / "index.json"
        self.refresh()

    def refresh(self) -> None:
        """(Re-)read the index: shards another process has written since count too."""
        self.shards: dict[str, list[str]] = {}
        if self.index_path.exists():
            index = json.loads(self.index_path.read_text())
            if index.get("fingerprint") == self.fingerprint:
                self.shards = {str(k): list(v) for k, v in index.get("shards", {}).items()}
        self.where = {key: (shard, j) for shard, keys in self.shards.items() for j, key in enumerate(keys)}

    @staticmethod
    def key_name(key: tuple) -> str:
        return "\n".join(key)

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, key: tuple) -> bool:
        return self.key_name(key) in self.where

    def load_into(self, features: dict, keys: list[tuple]) -> int:
        """Read the stored entries among `keys` (not already in `features`) into `features`;
        returns how many were read."""
        from safetensors import safe_open

        wanted: dict[str, list[tuple[int, tuple]]] = {}
        for key in keys:
            hit = self.where.get(self.key_name(key))
            if hit is not None and key not in features:
                wanted.setdefault(hit[0], []).append((hit[1], key))
        for shard, items in wanted.items():
            with safe_open(str(self.dir / shard), framework="pt") as f:
                for j, key in items:
                    features[key] = {field: f.get_tensor(f"{j}.{field}") for field in FIELDS}
        return sum(len(v) for v in wanted.values())

    def save(self, features: dict, keys: list[tuple], shard_size: int = 4096) -> int:
        """Write the entries of `keys` that the store lacks, in new shards of at most
        `shard_size` entries (safetensors builds a shard in memory: ~0.8 GiB at the tiny preset's
        ~200 KiB per entry); returns how many were written."""
        new = [k for k in dict.fromkeys(keys) if k in features and k not in self]
        for start in range(0, len(new), shard_size):
            self._write_shard(features, new[start:start + shard_size])
        return len(new)

    def _write_shard(self, features: dict, new: list[tuple]) -> None:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        shard = f"shard_{len(self.shards):04d}.safetensors"
        tensors = {f"{j}.{field}": features[k][field].contiguous() for j, k in enumerate(new) for field in FIELDS}
        tmp = self.dir / (shard + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(self.dir / shard)  # the index names only complete shards
        self.shards[shard] = [self.key_name(k) for k in new]
        self.where.update({self.key_name(k): (shard, j) for j, k in enumerate(new)})
        tmp_index = self.index_path.with_suffix(".json.tmp")
        tmp_index.write_text(json.dumps({"fingerprint": self.fingerprint, "shards": self.shards}))
        tmp_index.replace(self.index_path)


__all__ = ["FeatureStore", "encoder_fingerprint", "FIELDS"]
