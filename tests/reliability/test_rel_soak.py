"""Soak: the real node under a 30 Hz 1920x1080 rgb8 stream with a question every second
(benchmarks/bench_soak.py:run_soak does the work; this pins its checks).

Pinned behaviour (CI: 40 s of streaming; slow: 600 s, the documented long run):
* the node process is alive at the end;
* every question got a reply (none lost), and only documented codes (OK, BUSY, TIMEOUT,
  NO_FRAMES, EMPTY_WINDOW) occur;
* frame counters are consistent: received == kept + never-kept drops (decimated, out_of_order,
  decode errors, ...) and received <= published (the difference is DDS transport loss);
* resident memory after warm-up (the byte-bounded buffer is full by then) does not grow by more
  than 64 MiB, and never exceeds RSS-at-idle + buffer_max_mb + 800 MiB (glibc heap fragmentation of
  6 MB frame buffers varies between runs: 1024-1208 MiB after warm-up measured; see docs).
Image QoS is RELIABLE here: with the default best-effort sensor QoS, 6 MB 1080p samples over
Fast DDS lose most frames on this machine (measured: 24 of 901 received in 30 s), see
docs/reliability.md.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _check(result: dict) -> None:
    print("\nsoak:", json.dumps({k: result[k] for k in ("rss_idle_mb", "rss_after_warmup_mb", "rss_end_mb",
                                                       "rss_growth_after_warmup_mb", "asked", "by_code", "latency_ms",
                                                       "node_input", "transport_loss")}))
    assert result["publisher"]["published"] >= 0.8 * result["config"]["rate_hz"] * result["config"]["duration_s"]
    assert result["node_input"]["received"] > 0 and result["node_input"]["kept"] > 0
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert not failed, (failed, {k: v for k, v in result.items() if k != "rss_mb"})


def test_short_soak_1080p_30hz(tmp_path):
    from bench_soak import run_soak
    result = run_soak(duration_s=40.0, warmup_s=15.0, log_dir=tmp_path)
    (tmp_path / "soak.json").write_text(json.dumps(result, indent=1))
    _check(result)
    assert result["asked"] >= 38 and result["by_code"].get("OK", 0) >= 0.8 * result["asked"], \
        {k: result[k] for k in ("asked", "by_code", "latency_ms", "model_diagnostics")}


@pytest.mark.slow
def test_long_soak_10_minutes(tmp_path):
    from bench_soak import run_soak
    result = run_soak(duration_s=600.0, warmup_s=60.0, log_dir=tmp_path)
    (tmp_path / "soak.json").write_text(json.dumps(result, indent=1))
    _check(result)
