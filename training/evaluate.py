"""spatial-mllm-eval: run a Spatial-MLLM over a dataset split and score it (VSI-Bench + MultiSPA).

Tiny CPU run (embedded tiny preset, 2 questions)::

    spatial-mllm-data generate --scenes 3 --questions-per-scene 4 --out /tmp/ds --frames 8 --width 160 --height 120
    spatial-mllm-eval --preset tiny --data /tmp/ds --split test --num-frames 4 --sampling uniform --limit 2 --out /tmp/eval

Full form::

    spatial-mllm-eval --model DIR|--preset tiny --data DIR --split test [--num-frames 8]
                      [--sampling space_aware|space_aware_sensor|uniform] [--confidence frame|batch]
                      [--numeric-answers expected_mra|greedy] [--device cpu|cuda] [--limit N] --out DIR

Reads ``DIR/<split>.jsonl`` (rows of training/data/dataset.py). VSI-Bench rows (whole-video
questions) get ``--num-frames`` frames chosen by the sampler (space-aware: one
``predict_geometry`` pass over up to 128 linspace candidates, then voxel max-coverage, cached per
video; the node's ``geometry_source: model``; ``--confidence frame`` keeps each frame's points above
its own median depth confidence as the node does, ``batch`` the reference's median over all
candidates); space_aware_sensor: the same voxel max-coverage over
the scene's rendered depth and camera poses (a robot with a depth camera and TF; the node's
``geometry_source: sensor``; scenes rendered with save_depth); MultiSPA rows use exactly their
frame pair. Writes predictions.jsonl and
results.{md,json,png} (training/eval/tables.py) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ros2_spatial_mllm.numeric_answer import NUMERIC_ANSWER_MODES


def _parser() -> argparse.ArgumentParser:
    from ros2_spatial_mllm.sampling.sources import add_confidence_option

    p = argparse.ArgumentParser(prog="spatial-mllm-eval", description="Evaluate a Spatial-MLLM on a dataset split")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local checkpoint directory")
    src.add_argument("--preset", choices=["tiny"], help="embedded preset (tiny: the bundled trained default)")
    p.add_argument("--data", required=True, help="dataset directory written by spatial-mllm-data generate")
    p.add_argument("--split", default="test", help="split name: DATA/<split>.jsonl")
    p.add_argument("--num-frames", type=int, default=8,
                   help="frames per video question (8: what the embedded tiny model was trained on)")
    p.add_argument("--sampling", choices=["space_aware", "space_aware_sensor", "uniform"], default="space_aware",
                   help="frame sampler: space_aware on the model's predicted geometry, space_aware_sensor on the "
                        "scene's depth + poses, or uniform")
    add_confidence_option(p)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    p.add_argument("--dtype", default=None, help="model dtype (default: float32 on cpu, bfloat16 on cuda)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="generation budget per answer")
    p.add_argument("--numeric-answers", choices=NUMERIC_ANSWER_MODES, default="expected_mra",
                   help="numbers: expected_mra (the number of highest expected MRA under the model) or greedy "
                        "(digit by digit, the reference's decoding); ros2_spatial_mllm/numeric_answer.py")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    p.add_argument("--out", required=True, help="output directory for predictions and tables")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    return p


def load_rows(data_dir: Path, split: str) -> List[Dict]:
    from training.data.dataset import read_jsonl
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no split file {path}")
    return read_jsonl(path)


def load_frames(data_dir: Path, frames_path: str, indices: Sequence[int]) -> List[np.ndarray]:
    """JPEG frames -> list of HxWx3 uint8 RGB."""
    import cv2
    out = []
    for i in indices:
        path = data_dir / frames_path / f"{int(i):06d}.jpg"
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"missing frame {path}")
        out.append(img[:, :, ::-1].copy())
    return out


class FrameSelector:
    """Chooses (and caches per video) the frames a VSI-Bench question is answered from."""

    def __init__(self, model, data_dir: Path, k: int, method: str, confidence: str = "frame"):
        self.model, self.data_dir, self.k, self.method = model, data_dir, k, method
        self.global_percentile = confidence == "batch"
        self._cache: Dict[tuple, List[int]] = {}

    def select(self, frames_path: str, indices: Sequence[int]) -> List[int]:
        from ros2_spatial_mllm.sampling import candidate_indices, predict_frame_voxels, space_aware_sample, uniform_sample
        from training.data.dataset import has_sensor_geometry, sensor_frame_voxels
        key = (frames_path, tuple(indices))
        if key not in self._cache:
            if len(indices) <= self.k:
                chosen = list(indices)
            elif self.method == "uniform":
                chosen = [indices[i] for i in uniform_sample(len(indices), self.k)]
            else:
                cands = [indices[i] for i in candidate_indices(len(indices))]
                if self.method == "space_aware_sensor":
                    scene = (self.data_dir / frames_path).parent
                    if not has_sensor_geometry(scene):
                        raise FileNotFoundError(f"{scene}: no depth/ or cameras.json (render with save_depth) "
                                                "for --sampling space_aware_sensor")
                    voxels = sensor_frame_voxels(scene, cands)
                else:
                    voxels = predict_frame_voxels(self.model, np.stack(load_frames(self.data_dir, frames_path, cands)),
                                                  global_percentile=self.global_percentile)
                chosen = [cands[i] for i in space_aware_sample(voxels, self.k).indices]
            self._cache[key] = chosen
        return self._cache[key]


def evaluate(args) -> Dict:
    from tqdm import tqdm

    from ros2_spatial_mllm.inference import SpatialMLLM
    from ros2_spatial_mllm.sampling.window import window_slots
    from training.data.dataset import record_extra
    from training.eval.scorer import aggregate, score_record
    from training.eval.tables import write_tables

    data_dir, out_dir = Path(args.data), Path(args.out)
    rows = load_rows(data_dir, args.split)
    if args.limit is not None:
        rows = rows[: args.limit]
    if not rows:
        raise ValueError(f"split '{args.split}' has no rows")
    if args.num_frames < 1:
        raise ValueError("--num-frames must be >= 1")
    model = SpatialMLLM.load(args.model, preset=args.preset or "tiny", device=args.device, dtype=args.dtype,
                             numeric_answers=args.numeric_answers)
    selector = FrameSelector(model, data_dir, args.num_frames, args.sampling, args.confidence)
    out_dir.mkdir(parents=True, exist_ok=True)
    scored, t0 = [], time.perf_counter()
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as pred_file:
        for row in tqdm(rows, desc=f"eval {args.split}", unit="q", disable=args.no_progress):
            indices, slots = row["frame_indices"], None
            if row.get("family", "vsibench") == "vsibench":
                window = list(indices)
                indices = selector.select(row["frames_path"], window)
                slots = window_slots([window.index(i) for i in indices], 0, len(window) - 1)
            frames = load_frames(data_dir, row["frames_path"], indices)
            result = model.answer(frames, row["question"], row.get("options") or None, max_new_tokens=args.max_new_tokens,
                                  frame_slots=slots)
            record = dict(row, extra=record_extra(row))
            score = score_record(record, result.text)
            item = {"id": row["id"], "task_type": row["task_type"], "family": row.get("family", "vsibench"),
                    "reply": result.text, "answer": row["answer"], "score": score, "frames": list(indices),
                    "frame_slots": None if slots is None else [round(x, 4) for x in slots],
                    "latency_ms": round(result.timings_ms.get("total", 0.0), 1)}
            pred_file.write(json.dumps(item) + "\n")
            scored.append(item)
    summary = aggregate(scored)
    info = {"model": model.info.get("model_dir") and str(model.info.get("model_dir")), "preset": args.preset,
            "split": args.split, "num_frames": args.num_frames, "sampling": args.sampling, "confidence": args.confidence,
            "numeric_answers": args.numeric_answers,
            "elapsed_s": round(time.perf_counter() - t0, 2)}
    paths = write_tables(summary, out_dir, title=f"{args.split} ({args.sampling}, {args.num_frames} frames)", extra={"run": info})
    model.close()
    return {"summary": summary, "paths": paths, "run": info}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = evaluate(args)
    except KeyboardInterrupt:
        print("spatial-mllm-eval: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback
        print(f"spatial-mllm-eval: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    vsi = result["summary"]["vsibench"]["overall"]
    multi = result["summary"]["multispa"]["overall"]
    print(json.dumps({"n": result["summary"]["n"], "vsibench_overall": vsi, "multispa_overall": multi,
                      **result["paths"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
