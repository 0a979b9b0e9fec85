"""Scoring rules.

VSI-Bench (exactly as the benchmark): the reply (after ``strip_answer_tags``, a no-op for plain
replies) is reduced to its first word with a trailing '.' stripped (``parsing.first_word``);
multiple choice scores 1 if that word equals the answer letter (case-insensitive), else 0;
numeric tasks score ``mean_relative_accuracy(float(word), gt)`` (θ ∈ {0.50, 0.55, …, 0.95}),
0 when the word is not a number. Overall = mean of the 8 task scores, the three
object_rel_direction_{easy,medium,hard} sub-types averaged into one task first.

MultiSPA: scalar answers (``number_rel20``) are correct when |pred − gt| ≤ 0.2 |gt|; vectors when
‖pred − gt‖ ≤ 0.2 ‖gt‖ (all numbers of the reply, same length as the answer); pixel answers are
(x, y) normalised to 0–1000 and correct within 5 % of the image width (in pixels, using the
record's image size; 50 units when unknown); multiple choice as above.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Optional

from ros2_spatial_mllm.parsing import first_word, mean_relative_accuracy, parse_answer, strip_answer_tags

VSI_REL_DIRECTION = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard")
VSI_MAIN_TASKS = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation",
                  "object_rel_distance", "object_rel_direction", "route_planning", "obj_appearance_order")
VSI_NUMERIC = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _to_float(text: str) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def vsibench_word(reply: str) -> str:
    """The token VSI-Bench scores: first word of the (tag-stripped) reply, trailing '.' removed."""
    return first_word(strip_answer_tags(reply))


def score_vsibench(reply: str, answer: str, numeric: bool) -> float:
    """One VSI-Bench question: exact letter (multiple choice) or MRA (numeric)."""
    word = vsibench_word(reply)
    if not numeric:
        return 1.0 if word.strip().lower() == str(answer).strip().lower() else 0.0
    pred = _to_float(word)
    if pred is None:
        return 0.0
    return float(mean_relative_accuracy(pred, float(answer)))


def numbers_in(text: str) -> List[float]:
    return [float(x) for x in _NUMBER.findall(strip_answer_tags(text) or "")]


def score_multispa(reply: str, answer: str, answer_type: str, image_width: Optional[float] = None,
                   image_height: Optional[float] = None) -> float:
    """One MultiSPA question (1.0 correct / 0.0 wrong) under the rules in the module docstring."""
    if answer_type == "choice":
        return score_vsibench(reply, answer, numeric=False)
    gt = numbers_in(answer)
    if answer_type == "number_rel20":
        parsed = parse_answer(strip_answer_tags(reply))
        pred = parsed.value if parsed.kind == "number" else None
        if pred is None or not gt:
            return 0.0
        return 1.0 if abs(pred - gt[0]) <= 0.2 * abs(gt[0]) + 1e-12 else 0.0
    pred_v = numbers_in(reply)
    if len(pred_v) < len(gt) or not gt:
        return 0.0
    pred_v = pred_v[:len(gt)]
    if answer_type == "vector":
        err = math.sqrt(sum((p - g) ** 2 for p, g in zip(pred_v, gt)))
        return 1.0 if err <= 0.2 * math.sqrt(sum(g * g for g in gt)) + 1e-12 else 0.0
    if answer_type == "pixel":
        w = float(image_width) if image_width else 1000.0
        h = float(image_height) if image_height else w
        dx = (pred_v[0] - gt[0]) * w / 1000.0
        dy = (pred_v[1] - gt[1]) * h / 1000.0
        return 1.0 if math.hypot(dx, dy) <= 0.05 * w + 1e-12 else 0.0
    raise ValueError(f"unknown answer_type {answer_type!r}")


def score_record(record: Mapping, reply: str) -> float:
    """Score one dataset record (fields: answer, answer_type, task_type, family, extra)."""
    answer_type = record.get("answer_type") or ("number" if not record.get("options") else "choice")
    if record.get("family", "vsibench") == "vsibench" or answer_type == "number":
        return score_vsibench(reply, record["answer"], numeric=answer_type == "number")
    extra = record.get("extra") or {}
    return score_multispa(reply, record["answer"], answer_type, extra.get("image_width"), extra.get("image_height"))


def family_overall(task_scores: Mapping, family_of: Mapping[str, str]) -> Dict:
    """Task means -> {"vsibench": {"tasks", "overall", "complete"}, "multispa": {"overall"}} by
    the rules of the module docstring. Values may be floats or equal-shape numpy arrays (one entry
    per bootstrap round, training/eval/compare.py); the arithmetic is the same."""
    vsi: Dict = {}
    for t in VSI_MAIN_TASKS:
        if t == "object_rel_direction":
            subs = [task_scores[s] for s in VSI_REL_DIRECTION if s in task_scores]
            if subs:
                vsi[t] = sum(subs) / len(subs)
        elif t in task_scores:
            vsi[t] = task_scores[t]
    multi = [v for t, v in task_scores.items() if family_of.get(t) == "multispa"]
    return {"vsibench": {"tasks": vsi, "overall": (sum(vsi.values()) / len(vsi)) if vsi else None,
                         "complete": len(vsi) == len(VSI_MAIN_TASKS)},
            "multispa": {"overall": (sum(multi) / len(multi)) if multi else None}}


def aggregate(scored: Iterable[Mapping]) -> Dict:
    """Per-task means and overall figures.

    ``scored``: items with ``task_type``, ``family`` and ``score``. Returns
    {"tasks": {task: {"n", "score"}}, "vsibench": {"tasks": {8 main tasks}, "overall"},
     "multispa": {"overall"}, "n"} with scores in [0, 1].
    """
    sums: Dict[str, List[float]] = defaultdict(list)
    family_of: Dict[str, str] = {}
    for item in scored:
        sums[item["task_type"]].append(float(item["score"]))
        family_of[item["task_type"]] = item.get("family", "vsibench")
    tasks = {t: {"n": len(v), "score": sum(v) / len(v), "family": family_of[t]} for t, v in sorted(sums.items())}
    overall = family_overall({t: v["score"] for t, v in tasks.items()}, family_of)
    return {"n": sum(v["n"] for v in tasks.values()), "tasks": tasks, **overall}
