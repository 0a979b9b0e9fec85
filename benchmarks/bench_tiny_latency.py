"""Tiny-preset end-to-end latency on CPU (16 frames, ~16 new tokens), per-stage breakdown.

    python benchmarks/bench_tiny_latency.py                       # 16 frames, 7 runs, 2 then 1 thread(s)
    python benchmarks/bench_tiny_latency.py --runs 3 --threads 1 --decode-runs 3  # quick check
    taskset -c 0,1 python benchmarks/bench_tiny_latency.py        # pin to 2 cores

Writes benchmarks/results/tiny_latency.json: median (and min/max) milliseconds of every stage of
`SpatialMLLM.answer` (preprocess, spatial_encoder, vision_encoder, connector, prefill, decode,
total) over --runs timed runs after --warmup untimed ones, plus the process CPU time per query
(wall-clock times are inflated when other processes share the cores; the JSON records the load). End-of-sequence tokens are ignored
so that every run decodes exactly --max-new-tokens tokens (a trained model stops after a few).
The stage table ("by_threads") uses the default decode mode (eager).

Decode modes ("decode_modes"): SpatialMLLM.answer with decode_mode eager (DynamicCache) vs static
(StaticCache reused across queries), --decode-new-tokens tokens per query, the modes alternating
query by query in the same run after one warm-up each; decode tokens/s = (tokens - 1) / decode
time (the first token comes from the prefill), median over --decode-runs, and the ratio
static / eager (> 1: static faster). "compiled" is CUDA only and not measured here.
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

RESULT = Path(__file__).resolve().parent / "results" / "tiny_latency.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="frames per query (default 16)")
    parser.add_argument("--height", type=int, default=480, help="input frame height in pixels")
    parser.add_argument("--width", type=int, default=640, help="input frame width in pixels")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens decoded per query")
    parser.add_argument("--runs", type=int, default=7, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs")
    parser.add_argument("--threads", default="2,1",
                        help="comma-separated torch CPU thread counts to measure (the target is a 2-core CPU)")
    parser.add_argument("--decode-modes", default="eager,static",
                        help="comma-separated decode modes compared in the same run (CPU: eager, static)")
    parser.add_argument("--decode-new-tokens", type=int, default=64,
                        help="tokens per query for the decode-mode comparison (default 64)")
    parser.add_argument("--decode-runs", type=int, default=15,
                        help="timed queries per decode mode (alternating; median reported)")
    parser.add_argument("--model", default=None, help="local model directory (default: embedded tiny preset)")
    parser.add_argument("--out", type=Path, default=RESULT, help="output JSON path")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    os.environ.setdefault("OMP_NUM_THREADS", str(max(threads)))
    import numpy as np
    import torch

    from ros2_spatial_mllm.backends.llm import check_decode_mode
    from ros2_spatial_mllm.inference import TIMING_KEYS, SpatialMLLM

    try:
        modes = [check_decode_mode(m, "cpu") for m in str(args.decode_modes).split(",") if m.strip()]
    except ValueError as exc:
        print(f"error: --decode-modes: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(threads[0])
    t0 = time.perf_counter()
    try:
        mllm = SpatialMLLM.load(args.model)
    except Exception as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    load_ms = (time.perf_counter() - t0) * 1000.0
    mllm.eos_ids = []
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.frames)]
    question = "How many chair(s) are in this room?"
    by_threads = {}
    for count in threads:
        torch.set_num_threads(count)
        by_threads[str(count)] = measure(mllm, frames, question, args, TIMING_KEYS)
        print(f"threads={count}: " + json.dumps({k: v["median"] for k, v in by_threads[str(count)]["timings_ms"].items()}))
    decode_modes = {}
    for count in threads:
        torch.set_num_threads(count)
        decode_modes[str(count)] = compare_decode_modes(mllm, frames, question, modes, args)
        print(f"threads={count} decode tokens/s: " + json.dumps(decode_modes[str(count)]))
    mllm.set_decode_mode("eager")
    inputs = mllm.prepare_inputs(frames, question)
    result = {
        "benchmark": "tiny_latency",
        "model": mllm.info,
        "frames": args.frames,
        "input_hw": [args.height, args.width],
        "model_hw": list(inputs["spatial_pixel_values"].shape[-2:]),
        "video_tokens": int((inputs["input_ids"] == mllm.model.config.video_token_id).sum()),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "new_tokens": args.max_new_tokens,
        "runs": args.runs,
        "warmup": args.warmup,
        "load_ms": round(load_ms, 1),
        "target_total_ms": 1000.0,
        "decode_mode": "eager",
        "by_threads": by_threads,
        "decode_modes": {"new_tokens": args.decode_new_tokens, "runs": args.decode_runs,
                         "tokens_per_s": "(tokens - 1) / decode time, median", "by_threads": decode_modes},
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    mllm.close()
    return 0


def measure(mllm, frames, question, args, timing_keys) -> dict:
    """Warm up, then time --runs answers: per-stage median/min/max ms and process CPU ms."""
    for _ in range(args.warmup):
        mllm.answer(frames, question, max_new_tokens=args.max_new_tokens)
    runs, cpu_ms = [], []
    for _ in range(args.runs):
        cpu0 = time.process_time()
        runs.append(mllm.answer(frames, question, max_new_tokens=args.max_new_tokens))
        cpu_ms.append((time.process_time() - cpu0) * 1000.0)
    stats = {
        key: {
            "median": round(statistics.median(r.timings_ms[key] for r in runs), 2),
            "min": round(min(r.timings_ms[key] for r in runs), 2),
            "max": round(max(r.timings_ms[key] for r in runs), 2),
        }
        for key in timing_keys
    }
    return {
        "timings_ms": stats,
        # CPU time of this process per query (all threads): robust against other load on the machine
        "process_cpu_ms": {"median": round(statistics.median(cpu_ms), 2), "min": round(min(cpu_ms), 2)},
        "new_tokens": runs[0].num_tokens,
        "meets_target": stats["total"]["median"] <= 1000.0,
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def compare_decode_modes(mllm, frames, question, modes, args) -> dict:
    """{mode: {decode_tokens_per_s, decode_ms, prefill_ms}, "<mode>_over_<first>": ratio}: the
    modes alternate query by query (same load on each), one warm-up query per mode first."""
    rates = {mode: [] for mode in modes}
    decode_ms = {mode: [] for mode in modes}
    prefill_ms = {mode: [] for mode in modes}
    cpu_ms = {mode: [] for mode in modes}  # process CPU time per query: less sensitive to other load
    for mode in modes:
        mllm.set_decode_mode(mode)
        mllm.answer(frames, question, max_new_tokens=args.decode_new_tokens)
    for _ in range(args.decode_runs):
        for mode in modes:
            mllm.set_decode_mode(mode)
            cpu0 = time.process_time()
            result = mllm.answer(frames, question, max_new_tokens=args.decode_new_tokens)
            cpu_ms[mode].append((time.process_time() - cpu0) * 1000.0)
            steps = max(result.num_tokens - 1, 0)
            decode_ms[mode].append(result.timings_ms["decode"])
            prefill_ms[mode].append(result.timings_ms["prefill"])
            rates[mode].append(steps / (result.timings_ms["decode"] / 1000.0) if steps else 0.0)
    out = {mode: {"decode_tokens_per_s": round(statistics.median(rates[mode]), 1),
                  "decode_ms": round(statistics.median(decode_ms[mode]), 2),
                  "prefill_ms": round(statistics.median(prefill_ms[mode]), 2),
                  "query_process_cpu_ms": round(statistics.median(cpu_ms[mode]), 2)} for mode in modes}
    base = modes[0]
    for mode in modes[1:]:
        out[f"{mode}_over_{base}"] = round(out[mode]["decode_tokens_per_s"] / out[base]["decode_tokens_per_s"], 3)
    out["loadavg_1min"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return out


if __name__ == "__main__":
    sys.exit(main())
