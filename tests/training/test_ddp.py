"""Scale-out: the same `spatial-mllm-train sft` entry point under torchrun with two CPU
processes (gloo) trains a few steps; both ranks must end with bit-identical weights, and the
weights must differ from a single-process run (the ranks really saw different batches)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training.fixtures import make_qa_fixture, tiny_assets_for_tests


def _config(tmp_path, assets, data, out, stage=None, **top):
    """A stage YAML on the random tiny preset; `stage` {name: settings} replaces the SFT block."""
    stage = stage or {"sft": {"max_steps": 3, "batch_size": 1, "warmup_steps": 1, "grad_accum": 2}}
    cfg = {"seed": 1, "output_dir": str(out), "strategy": "ddp", **top,
           "model": {"preset": "tiny", "init": "random", "assets_dir": str(assets)},
           "data": {"root": str(data), "num_frames": 4},
           **{name: {**block, "lr": {"connector": 1e-3, "llm": 1e-3}} for name, block in stage.items()}}
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


def test_cached_sft_on_two_gloo_ranks_shares_one_store_and_ends_with_identical_weights(tmp_path):
    """Cached SFT data parallel: the ranks split the new frame sets, write one store between them
    (each set once), average their gradients, and end bit-identical; one process with the same
    per-process batch (rank 0's rows only) ends elsewhere."""
    import json

    assets = tiny_assets_for_tests(tmp_path)
    data = make_qa_fixture(tmp_path / "data", n_scenes=6, n_frames=4)
    (data / "val.jsonl").write_text((data / "test.jsonl").read_text())  # the stage's frame-signal split

    def config(out, store):
        block = {"cached_sft": {"max_steps": 4, "batch_size": 2, "warmup_steps": 1, "eval_every": 0}}
        return _config(tmp_path, assets, data, out, block, feature_store=str(store))

    out, store = tmp_path / "cached_ddp", tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.cli", "cached-sft", "--config", str(config(out, store))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    h0 = (out / "weights_rank0.sha256").read_text()
    assert h0 == (out / "weights_rank1.sha256").read_text() and len(h0.strip()) == 64
    index = json.loads(next(store.glob("*/index.json")).read_text())
    names = [k for keys in index["shards"].values() for k in keys]
    # 4 training and 2 validation videos, half of each split encoded and written by each rank
    assert len(index["shards"]) == 4 and len(names) == len(set(names)) == 6

    from training.cached_sft import run_cached_sft
    from training.model_io import build_model
    from training.trainer_utils import load_config, state_dict_hash

    single = run_cached_sft(load_config(config(tmp_path / "cached_single", store)))
    assert (tmp_path / "cached_single" / "final").is_dir() and single["final_dir"]
    assert state_dict_hash(build_model({"init": str(out / "final")})[0]) != \
        state_dict_hash(build_model({"init": str(tmp_path / "cached_single" / "final")})[0])


def test_pipeline_runs_a_cached_stage_as_two_processes_splitting_the_batch(tmp_path):
    """`cached_ranks: 2`: the pipeline's align stage runs as two one-thread gloo processes, each
    on half of the step's batch, and leaves an ordinary final checkpoint."""
    from training.pipeline import run_cached_stage

    assets = tiny_assets_for_tests(tmp_path)
    data = make_qa_fixture(tmp_path / "data", n_scenes=6, n_frames=4)
    (data / "val.jsonl").write_text((data / "test.jsonl").read_text())
    out = tmp_path / "run" / "align"
    stage = {"seed": 2, "output_dir": str(out), "cached_ranks": 2,
             "model": {"preset": "tiny", "init": "random", "assets_dir": str(assets)},
             "data": {"root": str(data), "num_frames": 4},
             "align": {"max_steps": 2, "batch_size": 4, "warmup_steps": 1, "eval_every": 0,
                       "lr": {"connector": 1e-3, "llm": 1e-3}}}
    run_cached_stage(stage, "align")
    written = yaml.safe_load((out / "stage.yaml").read_text())
    assert written["align"]["batch_size"] == 2 and written["cached_section"] == "align"
    assert (out / "final" / "config.json").is_file()
    assert (out / "weights_rank0.sha256").read_text() == (out / "weights_rank1.sha256").read_text()
    assert len(list((tmp_path / "run" / "feature_store").glob("*/shard_*.safetensors"))) == 4
    with pytest.raises(ValueError, match="does not split"):
        run_cached_stage({**stage, "align": {**stage["align"], "batch_size": 3}}, "align")


def test_cached_ranks_each_get_their_share_of_the_cores():
    from training.pipeline import rank_threads

    assert [rank_threads(2, 2), rank_threads(2, 16), rank_threads(4, 2), rank_threads(3, 16)] == [1, 8, 1, 5]
    assert rank_threads(2) >= 1


def test_a_thread_budget_set_by_the_user_is_split_between_the_ranks(monkeypatch):
    from training.pipeline import rank_threads, usable_cores

    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert usable_cores() == 6 and rank_threads(2) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert usable_cores() >= 1


def _mean_dict_worker(rank: int, init_file: str, out_dir: str) -> None:
    import json

    import torch.distributed as dist

    from training.trainer_utils import DistEnv

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    logged = [{"loss": 1.0, "aux_order": 0.5}, {"loss": 3.0}][rank]  # rank 1's rows had no order targets
    row = DistEnv(rank=rank, world_size=2).mean_dict(logged)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(row))
    dist.destroy_process_group()


def test_metrics_average_over_the_ranks_that_logged_them(tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.spawn(_mean_dict_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert rows[0] == rows[1] == {"aux_order": 0.5, "loss": 2.0}
