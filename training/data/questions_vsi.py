"""VSI-Bench question generators (all 8 task types) over a SceneMeta, real or synthetic.

``generate_vsibench(meta, rng, visibility=None, per_task=...) -> list[QA]``.

``visibility`` ({instance_id: first frame index where it is visible}, from instance masks) is
needed for appearance order and makes every other task ask only about objects the video shows;
without it (real annotations, no video) all objects count as seen and appearance order is skipped.

Ambiguity filters (each generator documents its own):
- unique anchors: size, distance and direction questions name categories with one instance;
- counting: categories with >= 2 instances (as in VSI-Bench), every instance seen in the video;
- absolute distance: objects at least 0.15 m apart (touching boxes make tiny, noisy answers);
- relative distance: the closest option beats the runner-up by >= 0.15 m (and by 15 %);
- relative direction: pairwise distances in [0.3, 5] m, the centroid's angle >= 10 deg from a
  class border, and at most 2 of the query box's 8 corners fall in another class;
- appearance order: first appearances in distinct frames (``min_gap`` >= 1 frame apart);
- route planning: legs >= 0.8 m, turn angles >= 15 deg from the left/right/back borders and no
  'go straight' turns (|turn| < 30 deg).
"""
from __future__ import annotations

import itertools
import math
import random
from typing import Dict, List, Optional, Sequence

import numpy as np

from training.data import spatial_gt as gt
from training.data.meta_info import ObjectBox, SceneMeta
from training.data.qa import QA, multiple_choice

VSI_TASKS = ("object_counting", "object_size_estimation", "room_size_estimation", "object_abs_distance",
             "object_rel_distance", "object_rel_direction_easy", "object_rel_direction_medium",
             "object_rel_direction_hard", "route_planning", "obj_appearance_order")

HARD_SUFFIX = ("\nThe directions refer to the quadrants of a Cartesian plane (if I am standing at the "
               "origin and facing along the positive y-axis).")
MEDIUM_SUFFIX = "\nAn object is to my back if I would have to turn at least 135 degrees in order to face it."


class _Ctx:
    def __init__(self, meta: SceneMeta, rng: random.Random, visibility: Optional[Dict[int, int]]):
        self.meta, self.rng, self.vis = meta, rng, visibility
        self._dist: Dict[tuple, float] = {}

    def seen(self, box: ObjectBox) -> bool:
        return self.vis is None or (box.instance_id is not None and self.vis.get(box.instance_id) is not None)

    def seen_categories(self) -> List[str]:
        return [c for c, boxes in self.meta.objects.items() if boxes and all(self.seen(b) for b in boxes)]

    def unique(self) -> List[str]:
        return [c for c in self.seen_categories() if len(self.meta.objects[c]) == 1]

    def dist(self, a: str, b: str) -> float:
        key = tuple(sorted((a, b)))
        if key not in self._dist:
            self._dist[key] = gt.category_distance(self.meta.objects[a], self.meta.objects[b])
        return self._dist[key]


def _qa(ctx: _Ctx, task: str, question: str, answer: str, answer_type: str, truth: str, options=None, **extra) -> QA:
    return QA(question=question, answer=answer, task_type=task, answer_type=answer_type,
              options=list(options or []), ground_truth=truth, family="vsibench",
              scene_id=ctx.meta.name, extra=extra)


def gen_counting(ctx: _Ctx) -> List[QA]:
    out = []
    for cat in ctx.seen_categories():
        n = len(ctx.meta.objects[cat])
        if n < 2:
            continue
        out.append(_qa(ctx, "object_counting", f"How many {cat}(s) are in this room?", str(n), "number", str(n), category=cat))
    return out


def gen_size(ctx: _Ctx) -> List[QA]:
    return [_qa(ctx, "object_size_estimation",
                f"What is the length of the longest dimension (length, width, or height) of the {cat}, measured in centimeters?",
                str(gt.object_size_cm(ctx.meta.objects[cat])), "number", str(gt.object_size_cm(ctx.meta.objects[cat])), category=cat)
            for cat in ctx.unique()]


def gen_room_size(ctx: _Ctx) -> List[QA]:
    value = f"{gt.round1(ctx.meta.room_size):.1f}"
    return [_qa(ctx, "room_size_estimation", "What is the size of this room (in square meters)? \n"
                "If multiple rooms are shown, estimate the size of the combined space.", value, "number", value)]


def gen_abs_distance(ctx: _Ctx) -> List[QA]:
    out = []
    for a, b in itertools.combinations(ctx.unique(), 2):
        d = ctx.dist(a, b)
        if d < 0.15:
            continue
        a1, b1 = (a, b) if ctx.rng.random() < 0.5 else (b, a)
        value = f"{gt.round1(d):.1f}"
        out.append(_qa(ctx, "object_abs_distance", "Measuring from the closest point of each object, what is the "
                       f"distance between the {a1} and the {b1} (in meters)?", value, "number", value, categories=[a1, b1]))
    return out


def gen_rel_distance(ctx: _Ctx, max_per_anchor: int = 2) -> List[QA]:
    out = []
    cats = ctx.seen_categories()
    for anchor in ctx.unique():
        others = [c for c in cats if c != anchor]
        if len(others) < 4:
            continue
        for _ in range(max_per_anchor):
            opts = ctx.rng.sample(others, 4)
            dists = sorted((ctx.dist(anchor, o), o) for o in opts)
            (d0, best), (d1, _) = dists[0], dists[1]
            if d1 - d0 < 0.15 or d1 < 1.15 * d0:
                continue
            rng_opts = opts[:]
            ctx.rng.shuffle(rng_opts)
            letter = "ABCD"[rng_opts.index(best)]
            out.append(_qa(ctx, "object_rel_distance", "Measuring from the closest point of each object, which of these "
                           f"objects ({', '.join(rng_opts)}) is the closest to the {anchor}?", letter, "choice", best,
                           [f"{'ABCD'[i]}. {o}" for i, o in enumerate(rng_opts)], anchor=anchor))
    return out


def gen_rel_direction(ctx: _Ctx, max_triples: int = 8) -> List[QA]:
    out = []
    uniq = ctx.unique()
    triples = list(itertools.combinations(uniq, 3))
    ctx.rng.shuffle(triples)
    for triple in triples[:max_triples]:
        if any(not (0.3 <= ctx.dist(a, b) <= 5.0) for a, b in itertools.combinations(triple, 2)):
            continue
        for s, f, q in ((triple[0], triple[1], triple[2]), (triple[0], triple[2], triple[1]), (triple[1], triple[0], triple[2])):
            bs, bf, bq = (ctx.meta.objects[c][0] for c in (s, f, q))
            for diff in ("easy", "medium", "hard"):
                label, ang = gt.rel_direction(bs, bf, bq, diff)
                if gt.direction_margin_deg(ang, diff) < 10 or not gt.corner_votes_agree(bs, bf, bq, diff):
                    continue
                head = f"If I am standing by the {s} and facing the {f}, "
                if diff == "easy":
                    text, choices = head + f"is the {q} to the left or the right of the {f}?", ["left", "right"]
                elif diff == "medium":
                    text, choices = head + f"is the {q} to my left, right, or back?" + MEDIUM_SUFFIX, ["left", "right", "back"]
                else:
                    text, choices = (head + f"is the {q} to my front-left, front-right, back-left, or back-right?" + HARD_SUFFIX,
                                     list(gt.HARD_LABELS))
                options, letter = multiple_choice(ctx.rng, label, [c for c in choices if c != label])
                out.append(_qa(ctx, f"object_rel_direction_{diff}", text, letter, "choice", label, options,
                               standing=s, facing=f, query=q, angle_deg=round(ang, 2)))
    return out


def gen_appearance_order(ctx: _Ctx, min_gap: int = 1, tries: int = 30) -> List[QA]:
    if ctx.vis is None:
        return []
    first: Dict[str, int] = {}
    for cat, boxes in ctx.meta.objects.items():
        frames = [ctx.vis.get(b.instance_id) for b in boxes if b.instance_id is not None]
        frames = [f for f in frames if f is not None]
        if frames:
            first[cat] = min(frames)
    cats = list(first)
    out, seen = [], set()
    for _ in range(tries):
        if len(cats) < 4:
            break
        pick = ctx.rng.sample(cats, 4)
        order = sorted(pick, key=first.get)
        gaps = [first[b] - first[a] for a, b in zip(order, order[1:])]
        if min(gaps) < min_gap or tuple(order) in seen:
            continue
        seen.add(tuple(order))
        correct = ", ".join(order)
        wrong = set()
        while len(wrong) < 3:
            perm = pick[:]
            ctx.rng.shuffle(perm)
            if perm != order:
                wrong.add(", ".join(perm))
        options, letter = multiple_choice(ctx.rng, correct, sorted(wrong))
        out.append(_qa(ctx, "obj_appearance_order", "What will be the first-time appearance order of the following "
                       f"categories in the video: {', '.join(pick)}?", letter, "choice", correct, options,
                       first_frames={c: first[c] for c in pick}))
    return out


def turn_label(h1: np.ndarray, h2: np.ndarray) -> tuple[Optional[str], float]:
    """Turn from heading h1 to h2 (xy): 'Turn Left' (30-150 deg CCW), 'Turn Back' (150-210),
    'Turn Right' (210-330); None for nearly straight or within 15 deg of a border."""
    ang = math.degrees(math.atan2(h1[0] * h2[1] - h1[1] * h2[0], h1[0] * h2[0] + h1[1] * h2[1])) % 360.0
    borders = (30.0, 150.0, 210.0, 330.0)
    if min(abs(ang - b) for b in borders) < 15.0 or ang < 30.0 or ang > 330.0:
        return None, ang
    return ("Turn Left" if ang < 150 else "Turn Back" if ang <= 210 else "Turn Right"), ang


def gen_route_planning(ctx: _Ctx, tries: int = 20) -> List[QA]:
    uniq = ctx.unique()
    out, used = [], set()
    for _ in range(tries):
        k = ctx.rng.choice([3, 4])
        if len(uniq) < k:
            continue
        stops = ctx.rng.sample(uniq, k)
        pts = [ctx.meta.objects[c][0].centroid[:2] for c in stops]
        legs = [b - a for a, b in zip(pts, pts[1:])]
        if min(np.linalg.norm(l) for l in legs) < 0.8 or tuple(stops) in used:
            continue
        turns = [turn_label(a, b)[0] for a, b in zip(legs, legs[1:])]
        if any(t is None for t in turns):
            continue
        used.add(tuple(stops))
        steps, n = [f"1. Go forward until the {stops[1]}"], 2
        for t_i, nxt in zip(turns, stops[2:]):
            steps += [f"{n}. [please fill in]", f"{n + 1}. Go forward until the {nxt}"]
            n += 2
        question = (f"You are a robot beginning at the {stops[0]} and facing the {stops[1]}. You want to navigate to "
                    f"the {stops[-1]}. You will perform the following actions (Note: for each [please fill in], choose "
                    f"either 'turn back,' 'turn left,' or 'turn right.'): {' '.join(steps)}. You have reached the final destination.")
        correct = ", ".join(turns)
        all_combos = [", ".join(c) for c in itertools.product(["Turn Left", "Turn Right", "Turn Back"], repeat=len(turns))]
        wrong = [c for c in all_combos if c != correct]
        ctx.rng.shuffle(wrong)
        options, letter = multiple_choice(ctx.rng, correct, wrong[:3])
        out.append(_qa(ctx, "route_planning", question, letter, "choice", correct, options, stops=stops))
    return out


GENERATORS = {"object_counting": gen_counting, "object_size_estimation": gen_size,
              "room_size_estimation": gen_room_size, "object_abs_distance": gen_abs_distance,
              "object_rel_distance": gen_rel_distance, "object_rel_direction": gen_rel_direction,
              "route_planning": gen_route_planning, "obj_appearance_order": gen_appearance_order}


def generate_vsibench(meta: SceneMeta, rng: random.Random, visibility: Optional[Dict[int, int]] = None,
                      tasks: Sequence[str] = tuple(GENERATORS)) -> Dict[str, List[QA]]:
    """All candidate questions of a scene grouped by task type (callers subsample)."""
    ctx = _Ctx(meta, rng, visibility)
    grouped: Dict[str, List[QA]] = {}
    for name in tasks:
        for qa in GENERATORS[name](ctx):
            grouped.setdefault(qa.task_type, []).append(qa)
    return grouped
