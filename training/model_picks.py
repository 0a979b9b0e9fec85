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
The file records the fingerprint of the model's encoders, pair-pose head included (the cameras
come from it): a training stage whose model has other encoders refuses the file
(`check_picks`). The pipeline's polish stage writes it for the model it continues.
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


def geometry_fingerprint(model) -> str:
    """Fingerprint of every encoder tensor and the encoders' config, pair-pose head included
    (feature_store.encoder_fingerprint with tokens_only=False, no video config: the selector
    resizes frames with the model's own processing config)."""
    from training.feature_store import encoder_fingerprint

    return encoder_fingerprint(model, None, tokens_only=False)


def write_picks(model_dir, data_dir: Path, splits, k: int, out: Path, limit: int = 0, progress: bool = True,
                reuse: bool = False) -> dict:
    """Compute the picks of the checkpoint in model_dir (None: the embedded tiny model) and write
    {num_frames, data, splits, limit, model, geometry_fingerprint, picks} to `out`; returns that
    document. reuse: keep an existing `out` made by the same encoders for the same data, K, splits, limit."""
    from ros2_spatial_mllm.inference import SpatialMLLM
    from training.qa_records import forget_picks

    model = SpatialMLLM.load(None if model_dir is None else str(model_dir), preset="tiny")
    fingerprint = geometry_fingerprint(model.model)
    if reuse and out.is_file():
        doc = json.loads(out.read_text())
        if (doc.get("geometry_fingerprint"), doc.get("data"), doc.get("num_frames"), doc.get("splits"),
                doc.get("limit")) == (fingerprint, str(data_dir), k, list(splits), limit):
            return doc
    picks = compute_picks(model, Path(data_dir), splits, k, limit, progress)
    doc = {"num_frames": k, "data": str(data_dir), "splits": list(splits), "limit": limit,
           "model": str(model_dir) if model_dir else "embedded tiny", "geometry_fingerprint": fingerprint,
           "picks": picks}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(out)  # a half-written file is never read as picks
    forget_picks(out)
    return doc


def check_picks(path, model) -> None:
    """Raise ValueError unless the picks file was made by a model with `model`'s encoders."""
    doc = json.loads(Path(path).read_text())
    made_by = doc.get("geometry_fingerprint")
    if made_by is None:
        raise ValueError(f"{path}: no geometry fingerprint (an older picks file): rerun python -m training.model_picks")
    if made_by != geometry_fingerprint(model):
        raise ValueError(f"{path}: picks were made by {doc.get('model', 'another model')}, whose encoders differ from "
                         f"this stage's model (rerun python -m training.model_picks --model <this model>)")


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
        t0 = time.perf_counter()
        doc = write_picks(args.model, Path(args.data), args.split, args.num_frames, Path(args.out), args.limit,
                          not args.no_progress)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"model_picks: {e}", file=sys.stderr)
        return 2
    print(f"model_picks: {len(doc['picks'])} videos in {time.perf_counter() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
