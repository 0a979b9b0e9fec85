"""Smoke test of benchmarks/bench_backends.py: the GPU section's code path on CPU, tiny sizes."""
import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_backends",
                                                  ROOT / "benchmarks" / "bench_backends.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_section_code_path_runs_on_cpu_with_tiny_sizes(bench):
    sizes = {"spatial": ((2, 56, 56),), "query": (2, 56, 84), "candidates": (6, 56, 56),
             "new_tokens": 4}
    out = bench.gpu_section(argparse.Namespace(repeats=1), device="cpu", preset="tiny",
                            sizes=sizes)
    assert out["spatial_encoder_2f_56x56"]["ms"] > 0 and out["spatial_encoder_2f_56x56"]["tflop"] > 0
    assert out["prefill_2f_56x84"]["tflop"] > out["spatial_encoder_2f_56x56"]["tflop"]
    assert out["decode_eager"]["tokens_per_s"] > 0
    assert out["incremental_pick_ms"] > 0 and out["sampling_speedup"] > 0


def test_flop_count_of_official_query_matches_hand_count(bench):
    """Connector FLOPs are 2 * tokens * (16384*16384 + 16384*2048) matmul FLOPs."""
    paper = bench.official_flops(2, 56, 56, preset="official")
    tokens = 1 * 2 * 2
    assert paper["video_tokens"] == tokens
    assert paper["flops"]["connector"] == 2 * tokens * (16384 * 16384 + 16384 * 2048)
    assert paper["llm_params"] == 3_085_938_688
