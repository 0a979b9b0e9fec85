"""spatial-mllm-data: the data engine's command line.

Commands (tiny CPU runs shown)::

    spatial-mllm-data conformance --meta tests/data/vsibench/scannet_meta_info_val.json \
        --questions tests/data/vsibench/scannet_questions.json [--out report.json]
    spatial-mllm-data generate --scenes 4 --questions-per-scene 30 --out /tmp/synth --workers 2 \
        [--frames 32 --width 640 --height 480 --split-fractions 0.8,0.1,0.1 --save-depth]
    spatial-mllm-data demo --out ros2_spatial_mllm/assets/demo
    spatial-mllm-data questions --meta META.json --out qa.jsonl     # VSI-Bench QA from real boxes

Errors print one line on stderr and exit non-zero.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from training.data.scenes import CAMERA_PACES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spatial-mllm-data", description="Spatial QA data engine")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("conformance", help="recompute published VSI-Bench answers from 3D boxes")
    c.add_argument("--meta", required=True, help="VSI-Bench meta_info JSON (scene -> boxes)")
    c.add_argument("--questions", required=True, help="published questions JSON (list of records)")
    c.add_argument("--out", default=None, help="also write the JSON report to this file")

    g = sub.add_parser("generate", help="render procedural scenes and write a QA dataset")
    g.add_argument("--scenes", type=int, required=True, help="number of scenes (over all splits)")
    g.add_argument("--questions-per-scene", type=int, default=30, help="QA pairs kept per scene")
    g.add_argument("--out", required=True, help="output directory (resumable: finished scenes are skipped)")
    g.add_argument("--workers", type=int, default=2, help="worker processes (use both cores: 2)")
    g.add_argument("--frames", type=int, default=32, help="frames rendered per scene")
    g.add_argument("--width", type=int, default=640, help="frame width in pixels")
    g.add_argument("--height", type=int, default=480, help="frame height in pixels")
    g.add_argument("--split-fractions", default="0.8,0.1,0.1", help="train,val,test scene fractions")
    g.add_argument("--save-depth", action="store_true", help="also store depth (uint16 mm) and instance masks")
    g.add_argument("--multispa-fraction", type=float, default=0.35, help="share of MultiSPA questions per scene")
    g.add_argument("--camera-pace", choices=CAMERA_PACES, default="steady",
                   help="the camera's walk: one speed, or stopping 2-3 times to look around (dwell)")
    g.add_argument("--no-progress", action="store_true", help="disable the progress bar")

    d = sub.add_parser("demo", help="(re)build the bundled demo clip and its ground truth")
    d.add_argument("--out", default="ros2_spatial_mllm/assets/demo", help="output directory")

    q = sub.add_parser("questions", help="VSI-Bench questions from a meta_info file (no video)")
    q.add_argument("--meta", required=True, help="meta_info JSON")
    q.add_argument("--out", required=True, help="output JSONL")
    q.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def _cmd_conformance(args) -> int:
    from training.data.conformance import run_conformance
    for path in (args.meta, args.questions):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
    report = run_conformance(args.meta, args.questions)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def _cmd_generate(args) -> int:
    from training.data.generate import GenerateConfig, generate_dataset
    fr = [float(x) for x in args.split_fractions.split(",")]
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError("--split-fractions needs three non-negative numbers summing to 1")
    if args.scenes < 1 or args.questions_per_scene < 1 or args.workers < 1:
        raise ValueError("--scenes, --questions-per-scene and --workers must be >= 1")
    cfg = GenerateConfig(num_scenes=args.scenes, questions_per_scene=args.questions_per_scene,
                         num_frames=args.frames, width=args.width, height=args.height,
                         split_fractions=tuple(fr), save_depth=args.save_depth,
                         multispa_fraction=args.multispa_fraction, camera_pace=args.camera_pace)
    summary = generate_dataset(args.out, cfg, workers=args.workers, progress=not args.no_progress)
    print(json.dumps(summary, indent=1))
    if summary["failures"]:  # recorded, not fatal: one line on stderr, the dataset is still written
        first = summary["failures"][0]
        print(f"warning: {len(summary['failures'])} scene(s) failed and were left out (see failures.json); "
              f"first: {first['scene_id']}: {first['error']}", file=sys.stderr)
    return 0


def _cmd_demo(args) -> int:
    from training.data.demo import build_demo
    info = build_demo(args.out)
    print(json.dumps({"out": args.out, "frames": info["num_frames"], "object_counts": info["object_counts"],
                      "qa": len(info["qa"])}))
    return 0


def _cmd_questions(args) -> int:
    import random
    from training.data.meta_info import load_meta_info
    from training.data.questions_vsi import generate_vsibench
    scenes = load_meta_info(args.meta)
    rng = random.Random(args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for scene in scenes.values():
            for items in generate_vsibench(scene, rng).values():
                for qa in items:
                    f.write(json.dumps(qa.to_record()) + "\n")
                    n += 1
    print(json.dumps({"scenes": len(scenes), "questions": n, "out": args.out}))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"conformance": _cmd_conformance, "generate": _cmd_generate, "demo": _cmd_demo,
                "questions": _cmd_questions}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("spatial-mllm-data: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback
        print(f"spatial-mllm-data {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
