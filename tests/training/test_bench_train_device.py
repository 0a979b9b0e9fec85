"""benchmarks/bench_train_device.py on CPU: the real CLI's SFT steps are timed and reported, and a
CUDA mode on a machine without CUDA is one line and exit 1."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_train_device.py"


def test_cpu_sft_steps_are_timed_from_metrics(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--modes", "cpu", "--stages", "sft", "--steps", "3",
                           "--warmup", "1", "--output-dir", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "train_devices.json").read_text())
    run = result["runs"]["sft/cpu"]
    assert run["median_ms"] > 0 and math.isfinite(run["last_loss"]) and run["speedup_over_cpu"] == 1.0
    assert result["steps"] == 3 and result["machine"]["cpu_count"] >= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_mode_without_cuda_is_one_line_and_exit_1(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--modes", "cuda-bf16", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
    assert "no CUDA GPU" in proc.stderr and not (tmp_path / "train_devices.json").exists()
