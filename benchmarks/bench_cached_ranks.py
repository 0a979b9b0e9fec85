"""Cached-SFT step time in one two-thread process against two one-thread gloo processes.

    .venv/bin/python benchmarks/bench_cached_ranks.py --data runs/data/tiny_frames \
        --feature-store runs/tiny_default/feature_store       # the whole data set (its store filled)
    .venv/bin/python benchmarks/bench_cached_ranks.py --out benchmarks/results/cached_ranks_40rooms.json   # 40 rooms
    .venv/bin/python benchmarks/bench_cached_ranks.py --scenes 6 --steps 12 --last 6   # tiny CPU run

The default recipe's cached stages (align, cached SFT, polish: 12,000 steps of a whole run) are
many small ops on a 2-core CPU. The pipeline can run each as N one-thread processes that split
every step's batch (`cached_ranks: N`, training/pipeline.py `run_cached_stage`; gradients
averaged in one all-reduce). This renders `--scenes` rooms with the recipe's data settings
(tiny_default.yaml), then runs its cached-SFT stage (auxiliary heads included, the embedded
weights as the start) for `--steps` steps twice on the same feature store: in this process at
two threads, and as two ranks. With `--data` an existing data set is used instead (the whole
2,000 rooms: each process then holds every room's tokens, as in a real run), best with the
`--feature-store` of a run on it (otherwise its frame sets are encoded first). Writes benchmarks/results/cached_ranks.json: the median and mean
seconds per step over the last `--last` steps of each way (the first ones read the renderer's
ground truth for the auxiliary targets) and their ratio.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "cached_ranks.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=40, help="rooms rendered for the run (recipe settings)")
    parser.add_argument("--data", default=None, help="an existing data engine root instead of rendering --scenes")
    parser.add_argument("--feature-store", default=None, help="feature store to read and fill (default: a fresh one)")
    parser.add_argument("--steps", type=int, default=300, help="cached-SFT steps of each way")
    parser.add_argument("--last", type=int, default=100, help="steps at the end that are timed")
    parser.add_argument("--batch", type=int, default=32, help="rows per step (split over the ranks)")
    parser.add_argument("--ranks", type=int, default=2, help="processes of the parallel way")
    parser.add_argument("--work", default=None, help="scratch folder (default: a fresh temp dir)")
    parser.add_argument("--out", default=str(RESULT), help="result JSON path")
    return parser.parse_args(argv)


def step_times(stage_dir: Path, last: int) -> list[float]:
    with open(stage_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [float(r["sec_per_step"]) for r in rows][-last:]


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import torch

    from training.pipeline import _stage_cfg, add_grounding, ensure_data, run_cached_stage
    from training.trainer_utils import load_config

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_ranks_"))
    cfg = load_config("training/configs/tiny_default.yaml", [
        f"data.root={args.data or work / 'data'}", f"data.generate.num_scenes={args.scenes}", "data.generate.workers=1"])
    add_grounding(cfg, ensure_data(cfg))
    cfg["cached_sft"] = {**cfg["cached_sft"], "max_steps": args.steps, "log_every": 1, "save_every": 0,
                         "eval_every": 0, "batch_size": args.batch}
    init = str(ROOT / "ros2_spatial_mllm" / "assets" / "tiny")
    times, walls = {}, {}
    for way, ranks in (("one_process_2_threads", 1), (f"{args.ranks}_processes_1_thread", args.ranks)):
        stage = _stage_cfg(cfg, "cached_sft", work / way, init)
        stage["cached_ranks"] = ranks
        stage["feature_store"] = args.feature_store or str(work / "feature_store")  # encoded once, by the first way
        torch.set_num_threads(2)
        os.environ["OMP_NUM_THREADS"] = "2"  # the same two-thread budget for both ways: ranks get 2 // N (rank_threads)
        started = time.perf_counter()
        run_cached_stage(stage, "cached_sft")
        walls[way] = round(time.perf_counter() - started, 1)
        times[way] = step_times(work / way / "cached_sft", args.last)
    (one, par) = (statistics.median(v) for v in times.values())
    out = {
        "what": "seconds per cached-SFT step (auxiliary heads on), tiny preset, embedded weights as the start",
        "data": args.data or f"{args.scenes} rooms rendered", "steps": args.steps, "timed_last": args.last, "batch": args.batch,
        "median_s_per_step": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "mean_s_per_step": {k: round(statistics.fmean(v), 4) for k, v in times.items()},
        "parallel_over_one_process": round(par / one, 3),
        "stage_wall_s": walls,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("median_s_per_step", "parallel_over_one_process")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
