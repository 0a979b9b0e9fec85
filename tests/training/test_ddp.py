"""Scale-out: the same `spatial-mllm-train sft` entry point under torchrun with two CPU
processes (gloo) trains a few steps; both ranks must end with bit-identical weights, and the
weights must differ from a single-process run (the ranks really saw different batches)."""
import os
import subprocess
import sys

import yaml

from training.fixtures import make_qa_fixture, tiny_assets_for_tests


def _config(tmp_path, assets, data, out):
    cfg = {"seed": 1, "output_dir": str(out), "strategy": "ddp",
           "model": {"preset": "tiny", "init": "random", "assets_dir": str(assets)},
           "data": {"root": str(data), "num_frames": 4},
           "sft": {"max_steps": 3, "batch_size": 1, "warmup_steps": 1, "grad_accum": 2,
                   "lr": {"connector": 1e-3, "llm": 1e-3}}}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    assets = tiny_assets_for_tests(tmp_path)
    data = make_qa_fixture(tmp_path / "data", n_scenes=2, n_frames=4)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.cli", "sft", "--config", str(_config(tmp_path, assets, data, out))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    h0 = (out / "weights_rank0.sha256").read_text()
    h1 = (out / "weights_rank1.sha256").read_text()
    assert h0 == h1 and len(h0.strip()) == 64
    # one process with the same config ends elsewhere: the second rank contributed other batches
    from training.model_io import build_model
    from training.sft import run_sft
    from training.trainer_utils import load_config, state_dict_hash

    single = run_sft(load_config(_config(tmp_path, assets, data, tmp_path / "single")))
    ddp_final = state_dict_hash(build_model({"init": str(out / "final")})[0])
    assert state_dict_hash(build_model({"init": str(single["final_dir"])})[0]) != ddp_final
