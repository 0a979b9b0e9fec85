"""Cost of filling the cached-SFT feature store: frame sets encoded one at a time against stacked.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_feature_encode.py                 # 96 sets per frame count, 3 rounds
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_feature_encode.py --sets 16 --rounds 1   # tiny CPU run

A whole default training run encodes about 44,000 frame sets with the frozen encoders (2D tower
and VGGT aggregator) before its cached steps (docs/training_results.md). This times, with the
embedded tiny weights on the data engine's training split (`--data`, default runs/data/tiny_frames;
without it `--scenes` rooms are rendered first), the same frame sets encoded
- one at a time (`VisualFeatureCache.visual`, eval mode set per set: how the store was filled
  before 2026-12-07), and
- stacked (`VisualFeatureCache.encode_many`, `--batch` sets of one frame count per encoder pass),
alternating round by round in one process after a warm-up, and checks that both give
bit-identical tokens, separately for each frame count of the split (8-frame videos, 2-frame
grounding questions, 1-2-frame MultiSPA pairs). It also times building every record's frame key
with the cache's per-video memo of candidate paths against building each record's paths anew
(both read the sensor-depth space-aware picks, which qa_records memoises per video). Writes
benchmarks/results/feature_encode.json (median ms per set of each way and count, their ratio, the key times).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "feature_encode.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "runs" / "data" / "tiny_frames"),
                        help="data engine root with a train split (rendered with --scenes when missing)")
    parser.add_argument("--scenes", type=int, default=6, help="rooms to render when --data does not exist")
    parser.add_argument("--sets", type=int, default=96, help="distinct frame sets timed per frame count and round")
    parser.add_argument("--batch", type=int, default=8, help="frame sets per stacked encoder pass")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each way (alternating)")
    parser.add_argument("--out", default=str(RESULT), help="result JSON path")
    return parser.parse_args(argv)


def data_root(args) -> Path:
    root = Path(args.data)
    if (root / "train.jsonl").is_file():
        return root
    from training.data.generate import GenerateConfig, generate_dataset

    root = Path(tempfile.mkdtemp(prefix="bench_encode_")) / "data"
    cfg = GenerateConfig(num_scenes=args.scenes, questions_per_scene=40, num_frames=32, width=112, height=84,
                         split_fractions=(1.0, 0.0, 0.0), save_depth=True)
    generate_dataset(root, cfg, workers=1, progress=False)
    return root


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from training.feature_cache import VisualFeatureCache
    from training.model_io import ExampleEncoder, build_model
    from training.qa_records import choose_frames, frame_paths, load_qa_records

    root = data_root(args)
    model, assets = build_model({"init": str(ROOT / "ros2_spatial_mllm" / "assets" / "tiny")})
    dcfg = {"root": str(root), "num_frames": 8, "frame_sampling": "mixed"}
    recs = load_qa_records(dcfg, "train")
    encoder = ExampleEncoder(model, assets, dcfg)

    def fresh():
        return VisualFeatureCache(model, encoder)

    # frame keys: per-video path memo (the cache's) against each record's paths built anew, both
    # after one untimed pass (it fills the sensor-depth voxel cache the space-aware rows read)
    for r in recs:
        choose_frames(len(frame_paths(r, dcfg)), 8, "mixed", r, dcfg)
    started = time.perf_counter()
    memo_cache = fresh()
    keys_all = [memo_cache.frame_key(r) for r in recs]
    keys_memo_s = time.perf_counter() - started
    started = time.perf_counter()
    anew = []
    for r in recs:
        paths = frame_paths(r, dcfg)
        anew.append(tuple(str(paths[i]) for i in choose_frames(len(paths), 8, "mixed", r, dcfg)))
    keys_anew_s = time.perf_counter() - started
    if anew != keys_all:
        raise SystemExit("bench_feature_encode: memoised frame keys differ from keys built anew")

    by_count: dict[int, list[tuple]] = {}
    for k in dict.fromkeys(keys_all):
        by_count.setdefault(len(k), []).append(k)
    # per frame count (8-frame videos, 2-frame grounding, 1-2-frame MultiSPA sets), spread over the split
    groups = {c: ks[args.batch:][:: max(1, (len(ks) - args.batch) // args.sets)][: args.sets]
              for c, ks in sorted(by_count.items()) if len(ks) > args.batch}
    ms, rounds, identical = {}, {}, True
    with torch.no_grad():
        for c, keys in groups.items():
            warm = by_count[c][: args.batch]
            fresh().encode_many(warm, batch_size=args.batch)
            for k in warm:
                fresh().visual(k)
            times = {"one_at_a_time": [], "stacked": []}
            results = {}
            for _ in range(args.rounds):
                for way in times:
                    cache = fresh()
                    started = time.perf_counter()
                    if way == "stacked":
                        cache.encode_many(keys, batch_size=args.batch)
                    else:
                        for k in keys:
                            cache.visual(k)
                    times[way].append((time.perf_counter() - started) * 1e3 / len(keys))
                    results[way] = cache.features
            identical &= all(torch.equal(results["one_at_a_time"][k][n], results["stacked"][k][n])
                             for k in keys for n in ("video", "spatial", "grid", "second_per_grid_ts"))
            ms[str(c)] = {way: round(statistics.median(v), 2) for way, v in times.items()}
            ms[str(c)]["ratio"] = round(ms[str(c)]["stacked"] / ms[str(c)]["one_at_a_time"], 3)
            rounds[str(c)] = {way: [round(x, 2) for x in v] for way, v in times.items()}
    out = {
        "what": "ms per frame set to fill the cached-SFT feature store, tiny preset, embedded weights",
        "data": str(root), "sets_per_frame_count": {c: len(k) for c, k in groups.items()},
        "batch": args.batch, "rounds": args.rounds,
        "ms_per_set_by_frame_count": ms, "ms_per_set_rounds": rounds, "bit_identical": identical,
        "frame_keys": {"records": len(recs), "memo_s": round(keys_memo_s, 2), "anew_s": round(keys_anew_s, 2)},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("ms_per_set_by_frame_count", "bit_identical", "frame_keys")}))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
