"""Grounding questions: simple questions that only the frames can answer, as a curriculum that
teaches connector + LLM to read the visual tokens before the VSI-Bench tasks need it.

    python -m training.grounding_questions --data runs/exp_signal/data --per-scene 12
    # writes <data>/grounding_<split>.jsonl for train and val (test is never touched)

From the data engine's instance masks and meta.json, each question on its own K frames (a random
span of the clip, evenly spaced; `draw_frames`):
  - grounding_presence: "Is there a {category} in this video?"  A. yes / B. no (balanced: as
    many absent categories, drawn from the catalogue or the scene's objects these frames miss,
    as visible ones);
  - grounding_visible_count: "How many {category} instances are visible in this video?" (the
    instances of that category covering >= min_pixels pixels in some sampled frame);
  - grounding_caption: "List the kinds of objects visible in this video, in order of first
    appearance." -> "chair, lamp, table" (every answer token depends on the frames);
  - grounding_first_of_two: "Which appears first in this video, the {a} or the {b}?" (A/B, first
    appearances in different sampled frames) and grounding_appearance_order: VSI-Bench's appearance
    order question with the first appearances taken on these K frames (the two-way question is the
    easier step towards the four-way one);
  - grounding_closer_of_two: "... which is closer to the {anchor}, the {a} or the {b}?" (A/B; the
    answer is the scene's 3-D distance, as VSI-Bench relative distance, with its 0.15 m / 15 %
    margin), on frames that show all three objects.
Rows use the data engine's JSONL schema (frames_path + frame_indices = the K sampled frames,
so the features SFT caches are exactly the frames the answer was computed on).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np


def visible_instances(scene: Path, frame_ids: list[int], min_pixels: int = 20,
                      first_seen: dict[int, int] | None = None) -> dict[int, int]:
    """instance id -> largest pixel count over the given frames (ids >= 1, >= min_pixels);
    `first_seen`, when given, is filled with instance id -> position of its first such frame."""
    import cv2

    best: dict[int, int] = {}
    for pos, f in enumerate(frame_ids):
        inst = cv2.imread(str(scene / "instance" / f"{f:06d}.png"), cv2.IMREAD_UNCHANGED)
        ids, counts = np.unique(inst, return_counts=True)
        for i, c in zip(ids.tolist(), counts.tolist()):
            if i > 0 and c >= min_pixels:
                best[i] = max(best.get(i, 0), c)
                if first_seen is not None:
                    first_seen.setdefault(i, pos)
    return best


def draw_frames(n: int, k: int, rng: random.Random) -> list[int]:
    """K of n frame numbers for one question: evenly spaced over a random span of the clip
    (between half and all of it) at a random offset, sorted. Questions of one scene then see
    different frames, so the grounding stage has many distinct visual inputs per scene instead
    of one (with one, connector + LLM can learn the scene rather than how to read it)."""
    k = min(k, n)
    span = rng.uniform(0.5, 1.0) * (n - 1)
    start = rng.uniform(0.0, (n - 1) - span)
    picks = sorted({int(round(start + span * j / max(k - 1, 1))) for j in range(k)})
    spare = [f for f in range(n) if f not in picks]
    return sorted(picks + rng.sample(spare, k - len(picks)))


# one scene's questions cycle through `kinds` (config data.grounding.kinds); the default keeps the
# reading questions (presence and visible count 4/8 and 3/8, a caption 1/8), RELATION_CYCLE adds the
# relation questions (presence and visible count 2/8 each, the rest 1/8)
BASIC_CYCLE = ("presence", "count", "presence", "count", "presence", "count", "presence", "caption")
RELATION_CYCLE = ("presence", "count", "appearance_order", "first_of_two", "presence", "closer_of_two", "count", "caption")
KINDS = ("presence", "count", "caption", "appearance_order", "first_of_two", "closer_of_two")
RELATION_KINDS = ("appearance_order", "first_of_two", "closer_of_two")


def relation_row(kind: str, meta, first: dict[str, int], rng: random.Random) -> dict | None:
    """The question fields of one relation question over the categories these frames show
    (`first`: category -> position of its first sampled frame), or None when none can be posed."""
    from training.data import spatial_gt as gt
    from training.data.qa import multiple_choice
    from training.data.questions_vsi import generate_vsibench

    cats = sorted(first)
    if kind == "appearance_order":
        vis = {b.instance_id: first[c] for c in cats for b in meta.objects.get(c, []) if b.instance_id is not None}
        qas = generate_vsibench(meta, rng, vis, tasks=("obj_appearance_order",)).get("obj_appearance_order", [])
        if not qas:
            return None
        qa = rng.choice(qas)
        return {"question": qa.question, "options": qa.options, "answer": qa.answer, "ground_truth": qa.ground_truth,
                "task_type": "grounding_appearance_order", "answer_type": "choice"}
    if kind == "first_of_two":
        pairs = [(a, b) for i, a in enumerate(cats) for b in cats[i + 1:] if first[a] != first[b]]
        if not pairs:
            return None
        a, b = rng.sample(rng.choice(pairs), 2)
        truth = min((a, b), key=first.get)
        question = f"Which appears first in this video, the {a} or the {b}?"
    else:  # closer_of_two: as VSI-Bench relative distance, over two options
        unique = [c for c in cats if len(meta.objects.get(c, [])) == 1]
        triples = [(x, a, b) for x in unique for a in cats for b in cats if x not in (a, b) and a < b]
        rng.shuffle(triples)
        for x, a, b in triples[:6]:
            (d0, near), (d1, _) = sorted((gt.category_distance(meta.objects[x], meta.objects[o]), o) for o in (a, b))
            if d1 - d0 >= 0.15 and d1 >= 1.15 * d0:
                break
        else:
            return None
        a, b = rng.sample([a, b], 2)
        truth = near
        question = f"Measuring from the closest point of each object, which is closer to the {x}, the {a} or the {b}?"
    options, letter = multiple_choice(rng, truth, [b if truth == a else a])
    return {"question": question, "options": options, "answer": letter, "ground_truth": truth,
            "task_type": f"grounding_{kind}", "answer_type": "choice"}


def scene_questions(scene: Path, split: str, k: int, per_scene: int, rng: random.Random,
                    min_pixels: int = 20, kinds: tuple[str, ...] = BASIC_CYCLE) -> list[dict]:
    """About `per_scene` grounding rows for one data-engine scene (frames/, instance/, meta.json),
    each on its own K frames (`draw_frames`), the j-th of kind kinds[j % len(kinds)]; a question
    these frames cannot pose (too few objects seen) becomes a presence question."""
    from training.data.categories import SYNTHETIC_CATEGORIES
    from training.data.meta_info import SceneMeta

    name, meta = next(iter(json.loads((scene / "meta.json").read_text()).items()))
    scene_meta = SceneMeta.from_json(name, meta)
    cat_of = {int(b["instance_id"]): cat for cat, boxes in meta["object_bbox"].items() for b in boxes}
    n = len(list((scene / "frames").glob("*.jpg")))
    absent = [c.name for c in SYNTHETIC_CATEGORIES if c.name not in meta["object_counts"]]
    base = {"scene_id": scene.name, "split": split, "num_frames": n,
            "frames_path": str(Path("scenes") / split / scene.name / "frames"), "family": "grounding"}
    rows = []
    for j in range(per_scene):
        frame_ids = draw_frames(n, k, rng)
        first_seen: dict[int, int] = {}
        visible = visible_instances(scene, frame_ids, min_pixels, first_seen)
        counts: dict[str, int] = {}
        for iid in visible:
            if iid in cat_of:
                counts[cat_of[iid]] = counts.get(cat_of[iid], 0) + 1
        present = sorted(counts)
        q = {**base, "frame_indices": frame_ids}
        kind = kinds[j % len(kinds)]
        first = {c: min(first_seen[i] for i in visible if cat_of.get(i) == c) for c in present}
        relation = relation_row(kind, scene_meta, first, rng) if kind in RELATION_KINDS else None
        if relation is not None:
            rows.append({**q, **relation})
        elif kind == "caption" and present:  # every answer token depends on the frames (as LLaVA's stage 1)
            order = ", ".join(sorted(present, key=lambda c: (first[c], c)))
            rows.append({**q, "question": "List the kinds of objects visible in this video, in order of first appearance.",
                         "options": [], "answer_text": order, "answer": order, "ground_truth": order,
                         "task_type": "grounding_caption", "answer_type": "text"})
        elif kind == "count" and present:
            cat = rng.choice(present)
            rows.append({**q, "question": f"How many {cat} instances are visible in this video?", "options": [],
                         "answer": str(counts[cat]), "ground_truth": str(counts[cat]),
                         "task_type": "grounding_visible_count", "answer_type": "number"})
        else:
            # present or absent with equal odds; "absent" includes the scene's own objects that
            # these frames miss, so the answer depends on the frames and not only on the scene
            unseen = absent + [c for c in meta["object_counts"] if c not in counts]
            yes = bool(present) and (not unseen or rng.random() < 0.5)
            cat = rng.choice(present if yes else unseen)
            rows.append({**q, "question": f"Is there a {cat} in this video?", "options": ["A. yes", "B. no"],
                         "answer": "A" if yes else "B", "ground_truth": "yes" if yes else "no",
                         "task_type": "grounding_presence", "answer_type": "choice"})
    for j, r in enumerate(rows):
        r["id"] = f"{scene.name}_g{j:03d}"
    return rows


def write_grounding(root: str | Path, split: str, k: int = 8, per_scene: int = 12, seed: int = 0,
                    kinds: tuple[str, ...] = BASIC_CYCLE) -> Path:
    """<root>/grounding_<split>.jsonl for every scene of the split with instance masks."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"grounding kinds {unknown or '[]'}: choose from {', '.join(KINDS)}")
    root = Path(root)
    rng = random.Random(f"{seed}-{split}")
    rows = []
    for scene in sorted((root / "scenes" / split).glob("*")):
        if (scene / "instance").is_dir() and (scene / "meta.json").is_file():
            rows += scene_questions(scene, split, k, per_scene, rng, kinds=tuple(kinds))
    out = root / f"grounding_{split}.jsonl"
    with open(out, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="write grounding questions for a data-engine dataset")
    p.add_argument("--data", required=True, help="data engine root (scenes/<split>/*/instance)")
    p.add_argument("--frames", type=int, default=8, help="frames SFT samples per question")
    p.add_argument("--per-scene", type=int, default=12, help="questions per scene (about)")
    p.add_argument("--splits", default="train,val", help="comma-separated splits")
    p.add_argument("--kinds", default=",".join(BASIC_CYCLE),
                   help=f"comma-separated cycle of question kinds ({', '.join(KINDS)}); "
                        f"the relation mix is {','.join(RELATION_CYCLE)}")
    args = p.parse_args(argv)
    for split in args.splits.split(","):
        print(write_grounding(args.data, split, args.frames, args.per_scene, kinds=tuple(args.kinds.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
