"""Space-aware frame picks from a model's own geometry, for training on the frames the node picks.

    python -m training.model_picks --data runs/data/tiny_frames --split train val \
        --out runs/data/tiny_frames/model_picks.json                    # embedded model, ~7 min
    python -m training.model_picks --data DIR --model CKPT --limit 4 --out /tmp/picks.json   # tiny CPU run

Space-aware sampling in the node (and in `spatial-mllm-eval --sampling space_aware`) picks K of a
video's candidate frames by voxel coverage of the model's predicted depth and cameras. The
training mix (`data.frame_sampling: mixed`) draws its space-aware sets from the renderer's depth
instead, which covers the room better (docs/frame_signal.md) and so is not what the model meets
at query time. This writes, per video of the chosen splits, the positions the model's own
geometry picks; `data.space_aware_picks: FILE` makes `mixed` and `space_aware` use them.
The file records the model's encoder fingerprint: the picks are only valid for that encoder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def picks_key(frames_path: str, indices) -> str:
    """The file's key for one video: its frames dir and candidate frame numbers."""
    return f"{frames_path}|{','.join(str(int(i)) for i in indices)}"


def compute_picks(model, data_dir: Path, splits, k: int, limit: int = 0, progress: bool = True) -> dict:
    """{picks_key: positions into the record's frame list} for every distinct video with more
    than k frames in the splits' question files (first `limit` videos per split when > 0)."""
    from tqdm import tqdm

    from training.evaluate import FrameSelector
    from training.qa_records import load_qa_records

    selector = FrameSelector(model, data_dir, k, "space_aware")
    out: dict[str, list[int]] = {}
    for split in splits:
        videos: dict[str, tuple[str, list[int]]] = {}     # key -> (frames dir, candidate frames)
        for rec in load_qa_records({"root": str(data_dir)}, split=split):
            idx = [int(i) for i in (rec.get("frame_indices") or range(int(rec.get("num_frames", 0))))]
            if rec.get("frames_path") and len(idx) > k:
                videos.setdefault(picks_key(rec["frames_path"], idx), (rec["frames_path"], idx))
        if not videos:
            raise ValueError(f"{data_dir}: no {split} question with a video of more than {k} frames")
        items = list(videos.items())[: limit or None]
        for key, (frames_path, idx) in tqdm(items, desc=f"model picks ({split})", disable=not progress, mininterval=5):
            chosen = selector.select(frames_path, idx)
            pos = {f: p for p, f in enumerate(idx)}
            out[key] = sorted(pos[f] for f in chosen)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data engine root (train.jsonl, val.jsonl, scenes/)")
    p.add_argument("--model", default=None, help="checkpoint dir (default: the embedded tiny model)")
    p.add_argument("--split", nargs="+", default=["train", "val"], help="question files to cover")
    p.add_argument("--num-frames", type=int, default=8, help="frames picked per video (K)")
    p.add_argument("--limit", type=int, default=0, help="first N videos per split (0: all)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        from ros2_spatial_mllm.inference import SpatialMLLM
        from training.feature_store import encoder_fingerprint

        model = SpatialMLLM.load(args.model, preset="tiny")
        t0 = time.perf_counter()
        picks = compute_picks(model, Path(args.data), args.split, args.num_frames, args.limit, not args.no_progress)
        doc = {"num_frames": args.num_frames, "model": args.model or "embedded tiny",
               "encoder": encoder_fingerprint(model.model, model.processing), "picks": picks}
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"model_picks: {e}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc))
    print(f"model_picks: {len(picks)} videos in {time.perf_counter() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
