"""Optimisation profiles (shape ranges) for TensorRT engines, and the choice of profile per call.

Pure Python: no TensorRT import. A TensorRT engine is built with one or more optimisation
profiles; each profile declares, for every dynamic input, a min / opt / max shape. At run time
the caller must pick a profile whose ranges contain the actual input shapes; the closest `opt`
gives the fastest kernels. `select_profile` implements that choice and is what the runtime uses.

The spatial encoder takes images [B, S, 3, H, W]; S (frame count) and H, W (multiples of 14 for
VGGT, 28 for Qwen's merged grid) vary, so profiles are usually split by frame count:
`frame_count_profiles("images", [(1, 1, 4), (4, 16, 32)], ...)`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

Shape = tuple[int, ...]


class NoProfileFitsError(ValueError):
    """No optimisation profile of an engine accepts the given input shapes."""


@dataclass(frozen=True)
class TensorShapeRange:
    """min / opt / max shape of one engine input (same rank; min <= opt <= max per dim)."""

    name: str
    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape

    def __post_init__(self) -> None:
        shapes = (self.min_shape, self.opt_shape, self.max_shape)
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"input '{self.name}': min/opt/max shapes differ in rank: {shapes}")
        for lo, mid, hi in zip(*shapes):
            if not (1 <= lo <= mid <= hi):
                raise ValueError(
                    f"input '{self.name}': need 1 <= min <= opt <= max per dim, got "
                    f"min={self.min_shape} opt={self.opt_shape} max={self.max_shape}")

    def contains(self, shape: Sequence[int]) -> bool:
        """True when `shape` has the same rank and each dim lies in [min, max]."""
        shape = tuple(int(d) for d in shape)
        return len(shape) == len(self.min_shape) and all(
            lo <= d <= hi for d, lo, hi in zip(shape, self.min_shape, self.max_shape))

    def distance_to_opt(self, shape: Sequence[int]) -> float:
        """Sum over dims of |log(d / opt)|: 0 at the opt shape, grows with relative distance."""
        return sum(abs(math.log(int(d) / o)) for d, o in zip(shape, self.opt_shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "min": list(self.min_shape), "opt": list(self.opt_shape),
                "max": list(self.max_shape)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorShapeRange":
        return cls(str(d["name"]), tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


@dataclass(frozen=True)
class OptimizationProfile:
    """One TensorRT optimisation profile: a shape range for every dynamic input."""

    ranges: tuple[TensorShapeRange, ...]

    def __post_init__(self) -> None:
        names = [r.name for r in self.ranges]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate input names in profile: {names}")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.ranges)

    def range_of(self, name: str) -> TensorShapeRange:
        for r in self.ranges:
            if r.name == name:
                return r
        raise KeyError(name)

    def fits(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        """True when every profiled input is given and inside its range."""
        return all(r.name in shapes and r.contains(shapes[r.name]) for r in self.ranges)

    def distance(self, shapes: Mapping[str, Sequence[int]]) -> float:
        return sum(r.distance_to_opt(shapes[r.name]) for r in self.ranges)

    def describe(self) -> str:
        return "; ".join(f"{r.name} min={list(r.min_shape)} max={list(r.max_shape)}"
                         for r in self.ranges)

    def to_dict(self) -> dict:
        return {"inputs": [r.to_dict() for r in self.ranges]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "OptimizationProfile":
        return cls(tuple(TensorShapeRange.from_dict(r) for r in d["inputs"]))


def profiles_to_json(profiles: Sequence[OptimizationProfile]) -> str:
    """Canonical JSON (sorted keys, no spaces): part of the engine cache key."""
    return json.dumps([p.to_dict() for p in profiles], sort_keys=True, separators=(",", ":"))


def profiles_from_json(text: str) -> list[OptimizationProfile]:
    return [OptimizationProfile.from_dict(d) for d in json.loads(text)]


def select_profile(profiles: Sequence[OptimizationProfile],
                   shapes: Mapping[str, Sequence[int]]) -> int:
    """Index of the profile that accepts `shapes` with the smallest distance to its opt shape.

    Ties go to the lower index. Raises NoProfileFitsError naming the shapes and every range.
    """
    if not profiles:
        raise NoProfileFitsError("engine has no optimisation profiles")
    fitting = [(p.distance(shapes), i) for i, p in enumerate(profiles) if p.fits(shapes)]
    if not fitting:
        given = ", ".join(f"{k}={list(v)}" for k, v in shapes.items())
        ranges = " | ".join(f"profile {i}: {p.describe()}" for i, p in enumerate(profiles))
        raise NoProfileFitsError(
            f"no optimisation profile accepts {given}; engine ranges: {ranges}. Rebuild the "
            f"engine with wider ranges (spatial-mllm-engines build --frames MIN:OPT:MAX ...)")
    return min(fitting)[1]


def parse_range(text: str) -> tuple[int, int, int]:
    """'MIN:OPT:MAX' or a single 'N' (fixed) -> (min, opt, max) ints, validated."""
    parts = [p for p in str(text).split(":")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"range '{text}' is not MIN:OPT:MAX integers") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not (1 <= values[0] <= values[1] <= values[2]):
        raise ValueError(f"range '{text}' must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX")
    return values[0], values[1], values[2]


def frame_count_profiles(input_name: str,
                         frame_ranges: Sequence[tuple[int, int, int]],
                         height: tuple[int, int, int],
                         width: tuple[int, int, int],
                         batch: int = 1,
                         channels: int = 3,
                         frame_multiple: int = 1) -> list[OptimizationProfile]:
    """One profile per frame-count range for a video input [B, S, C, H, W].

    `frame_multiple` rounds S bounds up to a multiple (Qwen's temporal patch is 2: even S).
    """
    profiles = []
    for lo, mid, hi in frame_ranges:
        lo, mid, hi = (_round_up(v, frame_multiple) for v in (lo, mid, hi))
        rng = TensorShapeRange(
            input_name,
            (batch, lo, channels, height[0], width[0]),
            (batch, mid, channels, height[1], width[1]),
            (batch, hi, channels, height[2], width[2]))
        profiles.append(OptimizationProfile((rng,)))
    return profiles


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)
