"""benchmarks/bench_train_device.py on CPU: the real CLI's SFT steps are timed and reported, and a
CUDA mode on a machine without CUDA is one line and exit 1."""
import json
import math
import os
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


def test_default_modes_without_a_gpu_leave_the_gpu_figures_alone(tmp_path):
    """`make bench` runs every benchmark with its defaults: on a CPU machine this one must neither
    fail the loop nor overwrite the GPU run's train_devices.json."""
    gpu_run = '{"runs": {"sft/cuda-bf16": {"median_ms": 12.5}}}'
    (tmp_path / "train_devices.json").write_text(gpu_run)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever this machine has
    proc = subprocess.run([sys.executable, str(SCRIPT), "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]
    assert "no CUDA GPU" in proc.stderr and "--modes cpu" in proc.stderr
    assert (tmp_path / "train_devices.json").read_text() == gpu_run
