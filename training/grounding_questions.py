"""Grounding questions: simple questions that only the frames can answer, as a curriculum that
teaches connector + LLM to read the visual tokens before the VSI-Bench tasks need it.

    python -m training.grounding_questions --data runs/exp_signal/data --per-scene 12
    # writes <data>/grounding_<split>.jsonl for train and val (test is never touched)

From the data engine's instance masks and meta.json, for the K frames SFT samples uniformly:
  - grounding_presence: "Is there a {category} in this video?"  A. yes / B. no (balanced: as
    many absent categories, drawn from the catalogue, as visible ones);
  - grounding_visible_count: "How many {category} instances are visible in this video?" (the
    instances of that category covering >= min_pixels pixels in some sampled frame);
  - grounding_caption: "List the kinds of objects visible in this video, in order of first
    appearance." -> "chair, lamp, table" (every answer token depends on the frames).
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


def scene_questions(scene: Path, split: str, k: int, per_scene: int, rng: random.Random,
                    min_pixels: int = 20) -> list[dict]:
    """Grounding rows for one data-engine scene (frames/, instance/, meta.json)."""
    from training.data.categories import SYNTHETIC_CATEGORIES
    from ros2_spatial_mllm.sampling import uniform_sample

    meta = next(iter(json.loads((scene / "meta.json").read_text()).values()))
    cat_of = {int(b["instance_id"]): cat for cat, boxes in meta["object_bbox"].items() for b in boxes}
    n = len(list((scene / "frames").glob("*.jpg")))
    frame_ids = [int(i) for i in uniform_sample(n, min(k, n))]
    first_seen: dict[int, int] = {}
    visible = visible_instances(scene, frame_ids, min_pixels, first_seen)
    counts: dict[str, int] = {}
    for iid in visible:
        if iid in cat_of:
            counts[cat_of[iid]] = counts.get(cat_of[iid], 0) + 1
    absent = [c.name for c in SYNTHETIC_CATEGORIES if c.name not in meta["object_counts"]]
    present = sorted(counts)
    base = {"scene_id": scene.name, "split": split, "frame_indices": frame_ids, "num_frames": n,
            "frames_path": str(Path("scenes") / split / scene.name / "frames"), "family": "grounding"}
    rows = []
    half = per_scene // 2
    for cat in rng.sample(present, min(len(present), half // 2 + 1)):
        rows.append({**base, "question": f"Is there a {cat} in this video?", "options": ["A. yes", "B. no"],
                     "answer": "A", "ground_truth": "yes", "task_type": "grounding_presence", "answer_type": "choice"})
        rows.append({**base, "question": f"How many {cat} instances are visible in this video?", "options": [],
                     "answer": str(counts[cat]), "ground_truth": str(counts[cat]),
                     "task_type": "grounding_visible_count", "answer_type": "number"})
    for cat in rng.sample(absent, min(len(absent), len(rows) // 2)):
        rows.append({**base, "question": f"Is there a {cat} in this video?", "options": ["A. yes", "B. no"],
                     "answer": "B", "ground_truth": "no", "task_type": "grounding_presence", "answer_type": "choice"})
    if present:  # caption-like: every answer token depends on the frames (alignment, as LLaVA's stage 1)
        first = {c: min(first_seen[i] for i in visible if cat_of.get(i) == c) for c in present}
        order = sorted(present, key=lambda c: (first[c], c))
        rows.append({**base, "question": "List the kinds of objects visible in this video, in order of first appearance.",
                     "options": [], "answer_text": ", ".join(order), "answer": ", ".join(order),
                     "ground_truth": ", ".join(order), "task_type": "grounding_caption", "answer_type": "text"})
    for j, r in enumerate(rows):
        r["id"] = f"{scene.name}_g{j:03d}"
    return rows


def write_grounding(root: str | Path, split: str, k: int = 8, per_scene: int = 12, seed: int = 0) -> Path:
    """<root>/grounding_<split>.jsonl for every scene of the split with instance masks."""
    root = Path(root)
    rng = random.Random(f"{seed}-{split}")
    rows = []
    for scene in sorted((root / "scenes" / split).glob("*")):
        if (scene / "instance").is_dir() and (scene / "meta.json").is_file():
            rows += scene_questions(scene, split, k, per_scene, rng)
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
    args = p.parse_args(argv)
    for split in args.splits.split(","):
        print(write_grounding(args.data, split, args.frames, args.per_scene))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
