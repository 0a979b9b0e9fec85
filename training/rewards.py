"""Rewards for GRPO (and the scores the curriculum reads): format reward + task reward.

    task reward   multiple choice  1 if the parsed option letter equals the ground truth, else 0
                  number (VSI)     mean relative accuracy (VSI-Bench MRA, 0..1)
                  vector/scalar    1 if ||pred - gt|| <= 0.2 ||gt||  (MultiSPA rule), else 0
                  pixel            1 if (x, y), normalised to 0..1000, lies within 5% of the image
                                   width of the truth (Euclidean, in pixels; 50 units if no size)
                  text             1 if the first word matches (case-insensitive), else 0
    format reward mode "tags": the reply is `[<think>...</think>] <answer>X</answer>` with X
                  non-empty; mode "bare": the reply (tags stripped) parses as the expected kind.

Parsing is engineer C's (ros2_spatial_mllm.parsing); it is imported, never re-written.

    >>> task_reward("B.", {"answer": "B", "options": ["A. x", "B. y"]})
    1.0
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ros2_spatial_mllm.parsing import first_word, mean_relative_accuracy, parse_answer, strip_answer_tags

_TAGGED = re.compile(r"^\s*(?:<think>.*?</think>\s*)?<answer>\s*(.+?)\s*</answer>\s*$", re.DOTALL)
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
MULTISPA_REL_TOL = 0.2
PIXEL_TOL_FRACTION = 0.05
PIXEL_COORD_RANGE = 1000.0


@dataclass(frozen=True)
class RewardWeights:
    format: float = 0.5
    task: float = 1.0
    format_mode: str = "bare"  # "tags" | "bare"


def answer_kind(sample: dict) -> str:
    """'choice' | 'number' | 'vector' | 'pixel' | 'text' for a question record.

    An explicit `answer_kind` / the data engine's `answer_type` (choice, number, number_rel20 ->
    vector, vector, pixel) / `metric` ( accuracy/exact -> choice or text, mra -> number,
    rel20/vector -> vector, pixel -> pixel) wins; otherwise options -> choice, a list answer ->
    vector, a numeric answer -> number, anything else -> text."""
    explicit = sample.get("answer_kind") or sample.get("answer_type") or sample.get("metric")
    aliases = {"number_rel20": "vector", "mc": "choice", "multiple_choice": "choice", "choice": "choice", "mra": "number",
               "number": "number", "numeric": "number", "vector": "vector", "rel20": "vector",
               "scalar_rel20": "vector", "pixel": "pixel", "text": "text", "exact": "text"}
    if explicit in ("accuracy", "exact_match"):
        return "choice" if sample.get("options") else "text"
    if explicit in aliases:
        return aliases[explicit]
    gt = sample.get("answer")
    if sample.get("options"):
        return "choice"
    if isinstance(gt, (list, tuple)):
        return "vector"
    if isinstance(gt, (int, float)) and not isinstance(gt, bool):
        return "number"
    try:
        float(str(gt))
        return "number"
    except ValueError:
        return "text"


def parse_vector(text: str) -> list[float]:
    """Every number in the text, in order: '(0.1, -2, 3e-1)' -> [0.1, -2.0, 0.3]."""
    return [float(m) for m in _FLOAT.findall(text or "")]


def _gt_letter(sample: dict) -> str | None:
    gt = str(sample.get("answer", "")).strip()
    if len(gt) >= 1 and gt[0].isalpha() and (len(gt) == 1 or not gt[1].isalpha()):
        return gt[0].upper()
    options = sample.get("options") or []
    for i, opt in enumerate(options):  # ground truth given as the option text
        text = re.sub(r"^\s*[A-Z][.):]\s*", "", str(opt))
        if text.strip().casefold() == gt.casefold():
            return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i]
    return None


def _image_size(sample: dict) -> tuple[float, float]:
    extra = sample.get("extra") or sample.get("extra_json") or {}
    if isinstance(extra, str):
        import json
        extra = json.loads(extra or "{}")
    width = float(sample.get("image_width") or extra.get("image_width") or PIXEL_COORD_RANGE)
    height = float(sample.get("image_height") or extra.get("image_height") or width)
    return width, height


def _as_vector(value: Any) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    if isinstance(value, (int, float)):
        return [float(value)]
    return parse_vector(str(value))


def task_reward(completion: str, sample: dict) -> float:
    """Correctness of one reply against the record's ground truth (0..1, see module docstring)."""
    text = strip_answer_tags(completion or "")
    kind = answer_kind(sample)
    gt = sample.get("answer")
    if kind == "choice":
        parsed = parse_answer(text, sample.get("options"))
        letter = _gt_letter(sample)
        return float(parsed.kind == "choice" and letter is not None and (parsed.choice or "").upper() == letter)
    if kind == "number":
        parsed = parse_answer(text)
        if parsed.kind != "number" or parsed.value is None or not math.isfinite(parsed.value):
            return 0.0
        return float(mean_relative_accuracy(parsed.value, float(gt)))
    if kind in ("vector", "pixel"):
        pred, target = parse_vector(text), _as_vector(gt)
        if not target or len(pred) < len(target):
            return 0.0
        pred = pred[: len(target)]
        if kind == "pixel":
            width, height = _image_size(sample)
            dx = (pred[0] - target[0]) * width / PIXEL_COORD_RANGE
            dy = (pred[1] - target[1]) * height / PIXEL_COORD_RANGE
            return float(math.hypot(dx, dy) <= PIXEL_TOL_FRACTION * width + 1e-12)
        err = math.sqrt(sum((p - t) ** 2 for p, t in zip(pred, target)))
        norm = math.sqrt(sum(t * t for t in target))
        return float(err <= MULTISPA_REL_TOL * norm)
    return float(first_word(text).casefold() == first_word(str(gt)).casefold() and bool(first_word(text)))


def format_reward(completion: str, sample: dict, mode: str = "bare") -> float:
    """1 if the reply has the expected shape, else 0 (see module docstring for the modes)."""
    completion = completion or ""
    if mode == "tags":
        match = _TAGGED.match(completion)
        return float(match is not None and bool(match.group(1).strip()))
    if mode != "bare":
        raise ValueError(f"format mode must be 'tags' or 'bare', got {mode!r}")
    text = strip_answer_tags(completion).strip()
    if not text:
        return 0.0
    kind = answer_kind(sample)
    if kind == "choice":
        return float(parse_answer(text, sample.get("options")).kind == "choice")
    if kind == "number":
        return float(parse_answer(text).kind == "number")
    if kind in ("vector", "pixel"):
        return float(len(parse_vector(text)) >= len(_as_vector(sample.get("answer"))))
    return float(bool(first_word(text)))


def total_reward(completion: str, sample: dict, weights: RewardWeights = RewardWeights()) -> dict:
    """{'format', 'task', 'total'} for one reply."""
    fmt = format_reward(completion, sample, weights.format_mode)
    task = task_reward(completion, sample)
    return {"format": fmt, "task": task, "total": weights.format * fmt + weights.task * task}


def batch_rewards(completions: Sequence[str], samples: Sequence[dict], weights: RewardWeights = RewardWeights()) -> list[dict]:
    return [total_reward(c, s, weights) for c, s in zip(completions, samples)]
