"""Load a facebook/VGGT-1B style state dict into `VGGT`, with an explicit report.

Checkpoint keys of heads not implemented here (point_head.*, track_head.*) are reported as
`ignored`, separately from genuinely `unexpected` keys; `missing` lists model keys the
checkpoint lacks (empty for a complete checkpoint of the parts we implement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

NOT_IMPLEMENTED_PREFIXES: Tuple[str, ...] = ("point_head.", "track_head.")


@dataclass
class LoadReport:
    """Outcome of `load_vggt_state_dict` (all lists sorted)."""

    missing: List[str] = field(default_factory=list)  # in the model, absent from the checkpoint
    unexpected: List[str] = field(default_factory=list)  # in the checkpoint, unknown to the model
    ignored: List[str] = field(default_factory=list)  # heads we do not implement (point/track)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)  # name, ckpt, model
    loaded: int = 0

    @property
    def ok(self) -> bool:
        """True when every model key was loaded and nothing unknown was found."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"loaded {self.loaded} tensors; missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape-mismatched {len(self.mismatched)}, ignored (not implemented) {len(self.ignored)}"
        )


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a .safetensors or torch (.pt/.pth/.bin) file -> {name: tensor} on CPU (no download)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    return dict(state)


def load_vggt_state_dict(
    model: nn.Module,
    state_dict: Union[Mapping[str, torch.Tensor], str, Path],
    strip_prefix: str = "",
    ignored_prefixes: Sequence[str] = NOT_IMPLEMENTED_PREFIXES,
    strict: bool = False,
) -> LoadReport:
    """Copy matching tensors into `model` (a VGGT) and report what did not match.

    state_dict: mapping or a file path (.safetensors / torch). strip_prefix: keep only keys
    starting with it and remove it (e.g. "spatial_encoder.vggt_model." for a Spatial-MLLM
    checkpoint). Keys under `ignored_prefixes` go to `ignored`; keys of heads disabled in the
    model's config (e.g. depth_head.* when enable_depth=False) are ignored too. Tensors with a
    wrong shape are not loaded and go to `mismatched`. strict=True raises RuntimeError unless
    the report is ok.
    """
    if isinstance(state_dict, (str, Path)):
        state_dict = read_state_dict(state_dict)
    if strip_prefix:
        state_dict = {k[len(strip_prefix) :]: v for k, v in state_dict.items() if k.startswith(strip_prefix)}
    skip = tuple(ignored_prefixes)
    for head in ("camera_head", "depth_head", "pair_pose_head", "point_head", "track_head"):
        if getattr(model, head, "absent") is None:
            skip += (head + ".",)

    own = model.state_dict()
    report = LoadReport()
    to_load: Dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name in own:
            if tuple(own[name].shape) != tuple(tensor.shape):
                report.mismatched.append((name, tuple(tensor.shape), tuple(own[name].shape)))
            else:
                to_load[name] = tensor
        elif name.startswith(skip):
            report.ignored.append(name)
        else:
            report.unexpected.append(name)
    report.missing = sorted(set(own) - set(state_dict))
    report.unexpected.sort()
    report.ignored.sort()
    if strict and not report.ok:
        raise RuntimeError(f"VGGT checkpoint does not match: {report.summary()}")
    model.load_state_dict(to_load, strict=False, assign=any(t.is_meta for t in own.values()))
    report.loaded = len(to_load)
    for module in model.modules():  # refresh pos_embed caches made from the old weights
        grid = getattr(module, "_cached_grid", None)
        if grid is not None and hasattr(module, "cache_pos_embed"):
            module.cache_pos_embed(*grid)
    return report
