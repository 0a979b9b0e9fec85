"""Cost of numeric answers by expected MRA against greedy digits, tiny preset on CPU.

    python benchmarks/bench_numeric_answers.py                  # 8 frames, 7 rounds, 2 threads
    python benchmarks/bench_numeric_answers.py --rounds 2       # quick check

The demo clip's four numeric questions (count, absolute distance, object size, room size;
ros2_spatial_mllm/assets/demo/room.json) are asked with `numeric_answers` greedy and
expected_mra alternating question by question in the same process, after one warm-up each.
Writes benchmarks/results/numeric_answers.json: per question the median decode and total
milliseconds of each mode, the ratio expected_mra / greedy of the totals, and the replies.
Accuracy is not measured here (one clip): see README
"Training" for the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "numeric_answers.json"
DEMO = ROOT / "ros2_spatial_mllm" / "assets" / "demo"
MODES = ("greedy", "expected_mra")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="uniform frames of the demo clip per query")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (each asks every question in both modes)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", default=str(RESULT), help="result JSON path")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from ros2_spatial_mllm.inference import SpatialMLLM
    from ros2_spatial_mllm.video import read_frames

    torch.set_num_threads(args.threads)
    frames = list(read_frames(str(DEMO / "room.mp4"), max_candidates=args.frames).frames)
    questions = [q for q in json.loads((DEMO / "room.json").read_text())["qa"] if not q["options"]]
    mllm = SpatialMLLM.load()
    for question in questions:  # warm-up, both modes
        for mode in MODES:
            mllm.set_numeric_answers(mode)
            mllm.answer(frames, question["question"])
    timings = {(q["task_type"], mode): [] for q in questions for mode in MODES}
    replies = {}
    started = time.perf_counter()
    for _ in range(args.rounds):
        for question in questions:
            for mode in MODES:
                mllm.set_numeric_answers(mode)
                result = mllm.answer(frames, question["question"])
                timings[(question["task_type"], mode)].append(result.timings_ms)
                replies[(question["task_type"], mode)] = result.text
    rows = []
    for question in questions:
        task = question["task_type"]
        row = {"task_type": task, "answer": question["answer"]}
        for mode in MODES:
            runs = timings[(task, mode)]
            row[mode] = {"reply": replies[(task, mode)],
                         "decode_ms": round(statistics.median(r["decode"] for r in runs), 2),
                         "total_ms": round(statistics.median(r["total"] for r in runs), 2)}
        row["total_ratio"] = round(row["expected_mra"]["total_ms"] / row["greedy"]["total_ms"], 3)
        rows.append(row)
    result = {"benchmark": "numeric_answers", "frames": args.frames, "rounds": args.rounds, "threads": args.threads,
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "loadavg_1min": os.getloadavg()[0]},
              "elapsed_s": round(time.perf_counter() - started, 1), "questions": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{row['task_type']:24s} greedy {row['greedy']['reply']:>6s} {row['greedy']['total_ms']:8.1f} ms   "
              f"expected_mra {row['expected_mra']['reply']:>6s} {row['expected_mra']['total_ms']:8.1f} ms   "
              f"x{row['total_ratio']}  (truth {row['answer']})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
