"""Recompute VSI-Bench answers from 3D boxes and compare them with the published ones.

``run_conformance(meta_path, questions_path) -> dict``: one report, per task type:
``checked`` (questions whose answer the boxes determine), ``agree`` (multiple choice: same
letter; numbers: equal at the published precision), ``agree_rate``, ``mra`` (mean VSI-Bench MRA
of our value against the published one, numeric tasks), ``within_0.1m`` for absolute distance,
and ``unresolved`` (count + reasons + problem ids) for questions that could not be recomputed
(unknown scene, category not in the annotation, ...). Video-only tasks (appearance order,
route planning) are listed under ``skipped`` with their counts, never silently dropped.

Question records follow the published JSON: ``problem``, ``options``, ``solution``
(``<answer>X</answer>``), ``original_question_type``, ``path`` ('./scannet/<scene>.mp4'); the
raw VSI-Bench fields (``question``, ``ground_truth``, ``question_type``, ``scene_name``) work too.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from ros2_spatial_mllm.parsing import mean_relative_accuracy, strip_answer_tags
from training.data import spatial_gt as gt
from training.data.meta_info import SceneMeta, load_meta_info

VIDEO_ONLY_TASKS = ("obj_appearance_order", "route_planning")

_PATTERNS = {
    "object_counting": re.compile(r"How many (?P<c>.+?)\(s\) are in this room", re.I),
    "object_size_estimation": re.compile(r"longest dimension .*? of the (?P<c>.+?), measured in", re.I | re.S),
    "object_abs_distance": re.compile(r"distance between the (?P<a>.+?) and the (?P<b>.+?) \(in meters\)", re.I),
    "object_rel_distance": re.compile(r"which of these objects \((?P<opts>.+?)\) is the (?P<which>closest|farthest) to the (?P<c>.+?)\?", re.I),
    "object_rel_direction": re.compile(r"standing by the (?P<s>.+?) and facing the (?P<f>.+?), is the (?P<q>.+?) to (?:my|the) ", re.I),
}


class Unresolved(Exception):
    """A question whose answer the annotation cannot determine; the message is the reason."""


def scene_name_of(record: Mapping) -> str:
    if record.get("scene_name"):
        return str(record["scene_name"])
    return Path(str(record.get("path", ""))).stem


def published_answer(record: Mapping) -> str:
    if "solution" in record:
        return strip_answer_tags(str(record["solution"])).strip()
    return str(record.get("mc_answer") or record.get("ground_truth", "")).strip()


def task_type(record: Mapping) -> str:
    return str(record.get("original_question_type") or record.get("question_type"))


def option_texts(record: Mapping) -> List[str]:
    """'A. table' -> 'table', in letter order."""
    return [re.sub(r"^\s*[A-Z][.)]\s*", "", str(o)).strip() for o in (record.get("options") or [])]


def _boxes(scene: SceneMeta, category: str):
    boxes = scene.boxes(category)
    if not boxes:
        raise Unresolved(f"category '{category}' has no boxes in scene {scene.name}")
    return boxes


def _letter_of(answer: str, options: List[str]) -> str:
    for i, text in enumerate(options):
        if text.strip().lower() == answer.lower():
            return chr(ord("A") + i)
    raise Unresolved(f"computed answer '{answer}' is not among the options {options}")


def recompute(record: Mapping, scene: SceneMeta) -> Tuple[str, Optional[float]]:
    """Our answer for one question: (answer string as published, numeric value or None)."""
    task = task_type(record)
    text = str(record.get("problem") or record.get("question"))
    key = "object_rel_direction" if task.startswith("object_rel_direction") else task
    if task == "room_size_estimation":
        value = gt.round1(scene.room_size)
        return f"{value:.1f}", value
    pattern = _PATTERNS.get(key)
    if pattern is None:
        raise Unresolved(f"task '{task}' is not determined by 3D boxes")
    m = pattern.search(text)
    if m is None:
        raise Unresolved(f"question text does not match the {task} template")
    if task == "object_counting":
        n = scene.count(m["c"])
        if n is None:
            raise Unresolved(f"category '{m['c']}' not in scene {scene.name}")
        return str(n), float(n)
    if task == "object_size_estimation":
        value = gt.object_size_cm(_boxes(scene, m["c"]))
        return str(value), float(value)
    if task == "object_abs_distance":
        value = gt.round1(gt.category_distance(_boxes(scene, m["a"]), _boxes(scene, m["b"])))
        return f"{value:.1f}", value
    options = option_texts(record)
    if task == "object_rel_distance":
        cands = {o: _boxes(scene, o) for o in options}
        pick, _ = gt.closest_category(_boxes(scene, m["c"]), cands, farthest=m["which"].lower() == "farthest")
        return _letter_of(pick, options), None
    difficulty = task.rsplit("_", 1)[-1]
    if difficulty not in ("easy", "medium", "hard"):
        raise Unresolved(f"unknown relative-direction variant '{task}'")
    label, _ = gt.rel_direction(_boxes(scene, m["s"])[0], _boxes(scene, m["f"])[0],
                                _boxes(scene, m["q"])[0], difficulty)
    return _letter_of(label, options), None


def _agree(task: str, ours: str, value: Optional[float], published: str) -> bool:
    if value is None:
        return ours.strip().upper() == published.strip().upper()
    try:
        pub = float(published)
    except ValueError:
        return False
    decimals = len(published.split(".")[1]) if "." in published else 0
    return round(value, decimals) == round(pub, decimals)


def run_conformance(meta_path: str | Path, questions_path: str | Path,
                    max_unresolved_listed: int = 20) -> Dict:
    """Check every question of ``questions_path`` against the boxes in ``meta_path``."""
    scenes = load_meta_info(meta_path)
    with open(questions_path, "r", encoding="utf-8") as f:
        records = json.load(f)
    if isinstance(records, dict):
        records = records.get("questions") or list(records.values())
    per_task: Dict[str, Dict] = defaultdict(lambda: {"checked": 0, "agree": 0, "mra_sum": 0.0,
                                                      "within_0.1m": 0, "unresolved": 0,
                                                      "unresolved_examples": [], "disagree_examples": []})
    skipped: Dict[str, int] = defaultdict(int)
    for rec in records:
        task = task_type(rec)
        if task in VIDEO_ONLY_TASKS:
            skipped[task] += 1
            continue
        row = per_task[task]
        pid = rec.get("problem_id", rec.get("id"))
        try:
            scene = scenes.get(scene_name_of(rec))
            if scene is None:
                raise Unresolved(f"scene '{scene_name_of(rec)}' not in meta_info")
            ours, value = recompute(rec, scene)
        except Unresolved as exc:
            row["unresolved"] += 1
            if len(row["unresolved_examples"]) < max_unresolved_listed:
                row["unresolved_examples"].append({"id": pid, "reason": str(exc)})
            continue
        published = published_answer(rec)
        row["checked"] += 1
        ok = _agree(task, ours, value, published)
        row["agree"] += int(ok)
        if value is not None:
            row["mra_sum"] += mean_relative_accuracy(value, float(published))
            if task == "object_abs_distance" and abs(value - float(published)) <= 0.1 + 1e-9:
                row["within_0.1m"] += 1
        if not ok and len(row["disagree_examples"]) < max_unresolved_listed:
            row["disagree_examples"].append({"id": pid, "ours": ours, "published": published})
    report = {}
    for task in sorted(per_task):
        row = per_task[task]
        n = row["checked"]
        out = {"checked": n, "agree": row["agree"], "agree_rate": row["agree"] / n if n else None,
               "unresolved": row["unresolved"], "unresolved_examples": row["unresolved_examples"],
               "disagree_examples": row["disagree_examples"]}
        if task in ("object_counting", "object_size_estimation", "room_size_estimation", "object_abs_distance"):
            out["mra"] = row["mra_sum"] / n if n else None
        if task == "object_abs_distance":
            out["within_0.1m"] = row["within_0.1m"]
            out["within_0.1m_rate"] = row["within_0.1m"] / n if n else None
        report[task] = out
    total_checked = sum(r["checked"] for r in report.values())
    return {"meta": str(meta_path), "questions": str(questions_path), "tasks": report,
            "skipped_video_only": dict(skipped),
            "total": {"checked": total_checked, "agree": sum(r["agree"] for r in report.values()),
                      "unresolved": sum(r["unresolved"] for r in report.values())}}
