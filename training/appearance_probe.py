"""Is an appearance-order question still answerable from the frames a sampler picked? Splits the
model's accuracy on obj_appearance_order by the answer, read off those frames' instance masks.

    python -m training.appearance_probe --data runs/data/tiny_frames \
        --predictions runs/eval/uniform/predictions.jsonl --predictions runs/eval/sensor/predictions.jsonl
    python -m training.appearance_probe --data DIR --predictions P --limit 20     # tiny CPU run

For each obj_appearance_order question of a predictions file (spatial-mllm-eval records the frames
it picked), the four categories' first sightings among the picked frames, in time order, are
`recoverable` (all four seen, in four different frames, in the true order), `tie` (two first seen
in the same picked frame), `unseen` (a category in none of them) or `reversed` (seen in another
order: a category visible early, then out of view until after a later one). "Visible" is the data
engine's rule (an instance covers >= 0.2 % of the frame). The same count over all the video's
frames checks the probe itself: every question should be recoverable there. Prints one JSON object
per predictions file: the share of each status and the model's accuracy within each.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

STATUSES = ("recoverable", "tie", "unseen", "reversed")


def sighting_status(visible: dict[str, set[int]], picked: list[int], order: list[str]) -> str:
    """visible: {category: frame ids where it is visible}; picked: frame ids; order: the true
    first-appearance order over the whole video -> one of STATUSES."""
    first: dict[str, int] = {}
    for pos, frame in enumerate(sorted(picked)):
        for cat in order:
            if cat not in first and frame in visible.get(cat, ()):
                first[cat] = pos
    if len(first) < len(order):
        return "unseen"
    positions = [first[c] for c in order]
    if len(set(positions)) < len(positions):
        return "tie"
    return "recoverable" if positions == sorted(positions) else "reversed"


def category_visibility(scene_dir: Path, frame_ids: list[int]) -> dict[str, set[int]]:
    """{category: frame ids (of frame_ids) where one of its instances is visible}, from the
    scene's instance masks and meta.json."""
    import cv2

    from training.data.meta_info import load_meta_info
    from training.data.visibility import MIN_VISIBLE_FRACTION, visible_counts

    meta = next(iter(load_meta_info(scene_dir / "meta.json").values()))
    masks = np.stack([cv2.imread(str(scene_dir / "instance" / f"{f:06d}.png"), cv2.IMREAD_UNCHANGED)
                      for f in frame_ids])                                # [N, H, W] instance ids
    need = max(20, int(round(MIN_VISIBLE_FRACTION * masks.shape[1] * masks.shape[2])))
    counts = visible_counts(masks)                                       # {iid: [N] pixels}
    out: dict[str, set[int]] = {}
    for box in meta.all_boxes():
        if box.instance_id in counts:
            seen = np.nonzero(counts[box.instance_id] >= need)[0]
            out.setdefault(box.category, set()).update(frame_ids[i] for i in seen)
    return out


def probe(data_dir: Path, predictions: Path, split: str = "test", limit: int | None = None) -> dict:
    """Status shares and accuracy per status for one predictions file (see the module doc)."""
    from training.data.dataset import read_jsonl

    preds = {p["id"]: p for p in read_jsonl(predictions) if p.get("task_type") == "obj_appearance_order"}
    if not preds:
        raise ValueError(f"{predictions}: no obj_appearance_order predictions")
    tally = {name: {s: [] for s in STATUSES} for name in ("picked", "all_frames")}
    cache: dict[str, dict] = {}
    done = 0
    for row in read_jsonl(data_dir / f"{split}.jsonl"):
        pred = preds.get(row["id"])
        if pred is None:
            continue
        ids = [int(i) for i in row["frame_indices"]]
        if row["frames_path"] not in cache:
            cache = {row["frames_path"]: category_visibility((data_dir / row["frames_path"]).parent, ids)}
        visible = cache[row["frames_path"]]
        order = [c.strip() for c in row["ground_truth"].split(",")]
        for name, frames in (("picked", pred["frames"]), ("all_frames", ids)):
            tally[name][sighting_status(visible, list(frames), order)].append(float(pred["score"]))
        done += 1
        if limit and done >= limit:
            break
    if not done:
        raise ValueError(f"{predictions}: none of its appearance-order ids are in {data_dir / (split + '.jsonl')}")
    out = {"predictions": str(predictions), "questions": done,
           "accuracy": round(float(np.mean(sum(tally["picked"].values(), []))), 4)}
    for name, by_status in tally.items():
        out[name] = {s: {"share": round(len(v) / done, 4), "accuracy": round(float(np.mean(v)), 4) if v else None}
                     for s, v in by_status.items()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory written by the data engine (with instance masks)")
    p.add_argument("--predictions", action="append", required=True,
                   help="predictions.jsonl written by spatial-mllm-eval (repeatable: one per sampler)")
    p.add_argument("--split", default="test", help="split the predictions were made on: DATA/<split>.jsonl")
    p.add_argument("--limit", type=int, help="first N appearance-order questions only")
    args = p.parse_args(argv)
    try:
        for path in args.predictions:
            print(json.dumps(probe(Path(args.data), Path(path), args.split, args.limit)))
    except Exception as exc:  # one line, no traceback
        print(f"appearance_probe: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
