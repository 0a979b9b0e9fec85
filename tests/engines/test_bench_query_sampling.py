"""Smoke test of benchmarks/bench_query_sampling.py --quick (tiny CPU run, ~15 s)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_measures_both_sides_from_the_cached_index(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_query_sampling",
                                                  ROOT / "benchmarks" / "bench_query_sampling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "qs.json"
    assert bench.main(["--quick", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    tiny, official = result["tiny"], result["official"]
    assert tiny["candidates"] == 16 and tiny["ours_background"]["frames_with_geometry"] == 16
    assert tiny["index_selects"] >= 2  # every timed query hit the worker's VoxelIndex
    assert len(tiny["picks"]["ours"]) == len(tiny["picks"]["reference"]) == 4
    ref = tiny["reference_ms"]
    assert ref["predict_geometry_median"] > ref["selection_median"] > 0
    assert tiny["ratio_reference_over_ours"] > 1
    flops = official["flops"]
    assert flops["aggregator_camera_depth_heads"] > flops["aggregator"] > flops["aggregator_one_frame"] > 0
    assert official["reference_floor_ms"]["H100"]["aggregator"] > 0
    assert official["ratio_floor_over_ours"]["H100_aggregator_floor"] > 0


def test_published_timings_interpolate_between_points():
    spec = importlib.util.spec_from_file_location("bench_query_sampling",
                                                  ROOT / "benchmarks" / "bench_query_sampling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert abs(bench.published_h100_s(100) - 3.12) < 1e-9
    assert 3.12 < bench.published_h100_s(128) < 8.75
    assert abs(bench.published_h100_s(200) - 8.75) < 1e-9
