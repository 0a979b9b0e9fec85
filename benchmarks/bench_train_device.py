"""Training step time of the tiny preset per device and precision (SFT and GRPO stages).

    .venv/bin/python benchmarks/bench_train_device.py --modes cpu --steps 6 --data DIR   # tiny CPU run
    python3 benchmarks/bench_train_device.py --data DIR                                  # GPU machine

Runs `spatial-mllm-train sft` (training/configs/sft_tiny.yaml) and `spatial-mllm-train grpo`
(grpo_tiny.yaml) for --steps steps from the shipped tiny weights, once per mode: cuda-bf16
(bf16 autocast, what `bf16: auto` picks on a bf16 GPU), cuda-fp32, and cpu (fp32, all the
machine's cores). Each run is a fresh process of the real CLI on the same data, in the same
benchmark run, so the ratios compare like with like. Step time = median of the per-step
`sec_per_step` in metrics.csv after --warmup steps. Writes train_devices.json to --output-dir.
DIR: a data-engine dataset (train.jsonl + scenes/); default: training.fixtures' self-made set.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"cuda-bf16": ("cuda", "true"), "cuda-fp32": ("cuda", "false"), "cpu": ("cpu", "false")}
STAGES = {"sft": "sft_tiny.yaml", "grpo": "grpo_tiny.yaml"}


def run_stage(stage: str, mode: str, data: str, steps: int, out_dir: Path) -> dict:
    """One CLI run; returns the per-step times and the final loss (or the error line)."""
    device, bf16 = MODES[mode]
    cmd = [sys.executable, "-m", "training.cli", stage, "--config",
           str(ROOT / "training" / "configs" / STAGES[stage]), "--set", f"device={device}",
           "--set", f"data.root={data}", "--set", "model.init=assets", "--set", f"output_dir={out_dir}",
           "--set", f"{stage}.max_steps={steps}", "--set", f"{stage}.log_every=1",
           "--set", f"{stage}.save_every=0", "--set", f"{stage}.bf16={bf16}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        errors = [line for line in lines if "error" in line.lower()] or lines  # not tqdm's last bar
        return {"error": errors[-1][:300]}
    with open(out_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {"sec_per_step": [float(r["sec_per_step"]) for r in rows],
            "last_loss": float(rows[-1]["loss"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset root (default: a self-made fixture in a temp folder)")
    p.add_argument("--modes", default="",
                   help=f"comma list of {sorted(MODES)}; default: all three on a CUDA machine. Without a "
                        "GPU the default measures nothing and leaves train_devices.json (the GPU run's "
                        "figures) as it is: `make bench` on a CPU machine; pass --modes cpu to time the CPU")
    p.add_argument("--stages", default="sft,grpo", help="comma list of sft, grpo")
    p.add_argument("--steps", type=int, default=40, help="training steps per run")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the median")
    p.add_argument("--output-dir", default=str(ROOT / "benchmarks" / "results"), help="where the JSON goes")
    args = p.parse_args(argv)
    import torch

    if not args.modes and not torch.cuda.is_available():
        print("bench_train_device: no CUDA GPU here, nothing timed (train_devices.json comes from "
              "benchmarks/gpu_check.sh on a GPU machine; --modes cpu times this CPU)", file=sys.stderr)
        return 0
    modes = [m for m in (args.modes or ",".join(MODES)).split(",") if m]
    if any(m not in MODES for m in modes) or args.steps <= args.warmup:
        print(f"bench_train_device: modes must be in {sorted(MODES)} and --steps > --warmup", file=sys.stderr)
        return 1
    if any(m.startswith("cuda") for m in modes) and not torch.cuda.is_available():
        print("bench_train_device: a cuda mode was asked for but this machine has no CUDA GPU", file=sys.stderr)
        return 1
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if not data:
            from training.fixtures import make_qa_fixture
            data = str(make_qa_fixture(Path(tmp) / "data", n_scenes=12, n_frames=8))
        result = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                              "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
                  "data": args.data or "training.fixtures (12 scenes, 8 frames)", "steps": args.steps,
                  "warmup": args.warmup, "runs": {}}
        for stage in args.stages.split(","):
            for mode in modes:
                run = run_stage(stage, mode, data, args.steps, Path(tmp) / f"{stage}_{mode}")
                if "sec_per_step" in run:
                    run["median_ms"] = round(1e3 * statistics.median(run["sec_per_step"][args.warmup:]), 1)
                    del run["sec_per_step"]
                result["runs"][f"{stage}/{mode}"] = run
                print(stage, mode, run, flush=True)
                # rewritten after every run: a benchmark stopped at its time limit keeps its results
                (out / "train_devices.json").write_text(json.dumps(result, indent=2))
            cpu = result["runs"].get(f"{stage}/cpu", {}).get("median_ms")
            for mode in modes:
                run = result["runs"][f"{stage}/{mode}"]
                if cpu and run.get("median_ms"):
                    run["speedup_over_cpu"] = round(cpu / run["median_ms"], 2)
    (out / "train_devices.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
