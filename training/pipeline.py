"""The trained default: data -> geometry pre-training -> SFT -> (optional GRPO, polish) -> export ->
evaluation tables, one command with a fixed seed.

    spatial-mllm-train default --config training/configs/tiny_default.yaml       # ~1.5-2.2 h, 2 CPU cores
    spatial-mllm-train default --config training/configs/tiny_smoke.yaml         # minutes

Steps (each resumable: a finished step is skipped when its `final/` exists, unless force):
  1. data      the data engine renders the synthetic scenes with depth (training/data/generate.py)
  2. geometry  spatial-encoder pre-training on depth + poses (geometry_pretrain.py)
  2b. semantic optional (semantic.enabled): 2D-tower pre-training on instance masks (semantic_pretrain.py)
  2c. align    optional (align.enabled): cached SFT on the grounding questions only (cached_sft.py)
  3. sft       SFT from the geometry checkpoint (sft.py), or with cached_sft.enabled SFT of
               connector + LLM on cached frozen-encoder tokens (cached_sft.py)
  4. grpo      optional (grpo.enabled)
  4b. pair_pose optional (pair_pose.enabled): the spatial encoder's pair-pose head trained on the
               final model's frozen tokens (pair_pose.py); only the head is new, so the weights
               the language model uses are unchanged
  4c. polish   optional (polish.enabled): cached SFT continued from that model, part of the
               whole-video questions on the frames its own geometry picks (run_polish)
  5. export    official-layout checkpoint into export.dir (ros2_spatial_mllm/assets/tiny for the
               shipped default), float32 safetensors, size checked against export.max_mb
  6. eval      test split with the data engine's evaluator at the same frame count with uniform
               and space-aware sampling, plus the answer-prior baseline (most frequent option /
               median number per task, from the training split); report.md + report.json
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

from training.trainer_utils import deep_update


def _stage_cfg(cfg: dict, name: str, out: Path, init: str | None) -> dict:
    stage = deep_update({k: v for k, v in cfg.items()
                         if k not in ("geometry", "semantic", "align", "sft", "cached_sft", "grpo", "pair_pose", "polish",
                                       "export", "eval")},
                        {"output_dir": str(out / name), name: cfg.get(name, {})})
    if init is not None:
        model = {**stage.get("model", {}), "init": init}
        if init != cfg.get("model", {}).get("init", "random"):
            model.pop("fresh_llm", None)  # only the run's first stage starts the LLM afresh
        stage["model"] = model
    return stage


def usable_cores() -> int:
    """The thread budget of this process: OMP_NUM_THREADS when the user set it, else the CPUs it
    may run on, capped by a cgroup v2 CPU quota (a container started with --cpus 2 on a 64-core
    host gets 2)."""
    import os

    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cores


def rank_threads(ranks: int, cores: Optional[int] = None) -> int:
    """Threads for each of `ranks` processes out of `cores` (default: usable_cores()), so that
    the ranks together use no more threads than there are cores (two ranks on the 2-core VM:
    one thread each; on 16 cores: eight; at least one)."""
    cores = cores or usable_cores()
    return max(1, cores // max(1, ranks))


def run_cached_stage(stage: dict, section: str) -> None:
    """A cached stage (align, cached_sft, polish): in this process, or with `cached_ranks: N`
    (N > 1) as N gloo processes (torch.distributed.run) that split each step's batch (`batch_size`
    is the whole step's; each rank takes batch_size / N rows) and the new frame sets, each with
    rank_threads(N) threads (one on the 2-core VM). A cached step is many small ops, which two cores run
    faster as two one-thread processes than as one two-thread process (docs/training_results.md);
    the rows of a step are the same, the sums are taken in another order, so the weights differ
    within float rounding."""
    import os
    import subprocess
    import sys

    import yaml

    from training.cached_sft import run_cached_sft

    ranks = int(stage.get("cached_ranks", 1))
    if ranks <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:  # already one of several processes
        run_cached_sft(stage, section=section)
        return
    block = dict(stage.get(section, {}))
    batch = int(block.get("batch_size", 16))
    if batch % ranks:
        raise ValueError(f"{section}.batch_size {batch} does not split over cached_ranks {ranks}")
    sub = {**stage, section: {**block, "batch_size": batch // ranks}, "cached_section": section, "cached_ranks": 1}
    out = Path(stage["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage.yaml").write_text(yaml.safe_dump(sub, sort_keys=False))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
           "-m", "training.cli", "cached-sft", "--config", str(out / "stage.yaml")]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": str(rank_threads(ranks))})
    if proc.returncode != 0:
        raise RuntimeError(f"{section}: the {ranks} cached-SFT processes failed (exit {proc.returncode}; "
                           f"their config: {out / 'stage.yaml'})")


def _done(out: Path, name: str) -> bool:
    return (out / name / "final" / "config.json").is_file()


def _weights_digest(model_dir: Path) -> str:
    """sha256 over a checkpoint's safetensors files (sorted by name)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _made_from_other_weights(out: Path, name: str, digest: str) -> bool:
    """A stage folder (finished or interrupted) whose input.json does not record `digest` (or is
    missing) is stale."""
    marker = out / name / "input.json"
    if not (out / name).is_dir():
        return False
    return not marker.is_file() or json.loads(marker.read_text()).get("sha256") != digest


def ensure_data(cfg: dict) -> Path:
    """Render the synthetic dataset with the data engine unless data.root already has it.

    Scenes go through the engine's own `process_scene` (same files, same seeds, resumable);
    a scene the engine fails on is skipped and listed in generation_failures.json instead of
    aborting the whole run; the split files are then assembled as the engine does."""
    import multiprocessing as mp
    from dataclasses import asdict

    from training.data.dataset import read_jsonl, write_jsonl
    from training.data.generate import GenerateConfig
    from training.data.splits import SPLITS, scene_jobs

    import os
    import time

    data = cfg.get("data", {})
    root = Path(data["root"])
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun only rank 0 renders; the others wait
        while not (root / "summary.json").is_file():
            time.sleep(5)
        return root
    if (root / "train.jsonl").is_file() and (root / "summary.json").is_file():
        return root
    gen = dict(data.get("generate", {}))
    workers = int(gen.pop("workers", 2))
    if "split_fractions" in gen:
        gen["split_fractions"] = tuple(gen["split_fractions"])
    gcfg = GenerateConfig(**gen)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), split, seed, sid, asdict(gcfg)) for split, seed, sid in scene_jobs(gcfg.num_scenes, gcfg.split_fractions)]
    from tqdm import tqdm

    results = []
    with mp.get_context("fork").Pool(max(1, workers)) as pool:
        for res in tqdm(pool.imap_unordered(_safe_scene, jobs), total=len(jobs), desc="scenes"):
            results.append(res)
    failures = [r for r in results if "error" in r]
    (root / "generation_failures.json").write_text(json.dumps(failures, indent=1))
    summary = {"scenes": len(jobs), "failed": len(failures), "splits": {}}
    for split in SPLITS:
        rows = []
        for job in jobs:
            qa = root / "scenes" / split / job[3] / "qa.jsonl"
            if job[1] == split and (root / "scenes" / split / job[3] / "done.json").is_file():
                rows.extend(read_jsonl(qa))
        write_jsonl(rows, root / f"{split}.jsonl")
        summary["splits"][split] = {"questions": len(rows)}
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return root


def add_grounding(cfg: dict, data_root: Path) -> None:
    """data.grounding (per_scene: N, kinds: [cycle]): write grounding questions
    (training/grounding_questions.py) for train and val, and train/validate on them next to the
    data engine's questions (the test split and its evaluation are unchanged). The files are
    rewritten only when their parameters (grounding.json next to them) differ."""
    g = cfg.get("data", {}).get("grounding")
    if not g:
        return
    from training.grounding_questions import BASIC_CYCLE, write_grounding

    params = {"k": int(cfg["data"].get("num_frames", 8)), "per_scene": int(g.get("per_scene", 12)),
              "seed": int(cfg.get("seed", 0)), "kinds": list(g.get("kinds", BASIC_CYCLE))}
    record = data_root / "grounding.json"
    fresh = record.is_file() and json.loads(record.read_text()) == params
    for split in ("train", "val"):
        if not fresh or not (data_root / f"grounding_{split}.jsonl").is_file():
            write_grounding(data_root, split, **{**params, "kinds": tuple(params["kinds"])})
        cfg["data"][f"{split}_jsonl"] = [str(data_root / f"{split}.jsonl"), str(data_root / f"grounding_{split}.jsonl")]
    record.write_text(json.dumps(params))


def _safe_scene(job) -> dict:
    import os

    from training.data.generate import process_scene

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        return process_scene(job)
    except Exception as exc:  # engine failure on one scene: skip it, keep going
        return {"scene_id": job[3], "error": f"{type(exc).__name__}: {exc}"[:300]}


def prior_baseline(train: list[dict], test: list[dict]) -> dict:
    """Answer-prior baseline: per task the most frequent option letter (multiple choice) or the
    median answer (numbers; per component for vectors/pixels), from the training split."""
    from training.data.dataset import record_extra
    from training.eval.scorer import aggregate, score_record
    from training.rewards import parse_vector

    by_task = defaultdict(list)
    for r in train:
        by_task[r["task_type"]].append(r)
    guess = {}
    for task, rows in by_task.items():
        if rows[0].get("answer_type") == "choice" or rows[0].get("options"):
            guess[task] = Counter(str(r["answer"]) for r in rows).most_common(1)[0][0]
        else:
            vecs = [parse_vector(str(r["answer"])) for r in rows]
            width = Counter(len(v) for v in vecs).most_common(1)[0][0]
            med = [statistics.median(v[i] for v in vecs if len(v) == width) for i in range(width)]
            guess[task] = (f"{med[0]:g}" if width == 1 else "(" + ", ".join(f"{m:g}" for m in med) + ")")
    scored = []
    for r in test:
        reply = guess.get(r["task_type"], "")
        scored.append({"task_type": r["task_type"], "family": r.get("family", "vsibench"),
                       "score": score_record(dict(r, extra=record_extra(r)), reply)})
    return {"summary": aggregate(scored), "guesses": guess}


def macro(summary: dict) -> dict:
    """VSI-Bench macro (mean of its task scores), MultiSPA mean, and the mean over every task."""
    tasks = summary["tasks"]
    return {"vsibench": summary["vsibench"]["overall"], "multispa": summary["multispa"]["overall"],
            "all_tasks": sum(t["score"] for t in tasks.values()) / len(tasks) if tasks else None}


def _evaluate_argv(argv: list, threads: int = 0) -> dict:
    """One evaluation (training/evaluate.py) from its command line; threads > 0 pins torch's."""
    import torch

    from training.evaluate import _parser, evaluate

    if threads:
        torch.set_num_threads(threads)
    return evaluate(_parser().parse_args(argv))["summary"]


def run_eval(model_dir: Path, data_root: Path, out: Path, ecfg: dict) -> dict:
    """Each sampler of `ecfg.samplings` scored on the split, then the answer-prior baseline. With
    two or more cores the samplers run side by side, one process each with rank_threads(N)
    threads (greedy decoding of independent questions: many small ops, like a cached step);
    `eval.parallel: false` runs them one after the other in this process."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from training.data.dataset import read_jsonl
    from training.eval.tables import write_tables

    split = ecfg.get("split", "test")
    samplings = list(ecfg.get("samplings", ["uniform", "space_aware"]))
    argvs = {}
    for sampling in samplings:
        argv = ["--model", str(model_dir), "--data", str(data_root), "--split", split, "--num-frames",
                str(ecfg.get("num_frames", 8)), "--sampling", sampling, "--out", str(out / sampling), "--no-progress",
                "--max-new-tokens", str(ecfg.get("max_new_tokens", 12)),
                "--numeric-answers", str(ecfg.get("numeric_answers", "expected_mra"))]
        if ecfg.get("limit"):
            argv += ["--limit", str(ecfg["limit"])]
        argvs[sampling] = argv
    cores = usable_cores()
    if ecfg.get("parallel", True) and len(samplings) > 1 and cores >= 2:
        threads = rank_threads(len(samplings), cores)
        with ProcessPoolExecutor(len(samplings), mp_context=get_context("spawn")) as pool:
            jobs = {s: pool.submit(_evaluate_argv, argvs[s], threads) for s in samplings}
            results = {s: job.result() for s, job in jobs.items()}
    else:
        results = {s: _evaluate_argv(argvs[s]) for s in samplings}
    test = read_jsonl(data_root / f"{split}.jsonl")[: ecfg.get("limit") or None]
    base = prior_baseline(read_jsonl(data_root / "train.jsonl"), test)
    write_tables(base["summary"], out / "prior_baseline", title=f"{split}: answer-prior baseline")
    results["prior_baseline"] = base["summary"]
    return results


def report(results: dict, out: Path, header: str, eval_dir: Optional[Path] = None) -> dict:
    """report.md (one row per task, a column per run) and report.json with the macro figures;
    with eval_dir (run_eval's out), each space-aware run's VSI difference from uniform also gets
    its 95 % interval over rooms (training/eval/compare.py, paired on the same questions)."""
    runs = list(results)
    tasks = sorted({t for r in results.values() for t in r["tasks"]})
    lines = [f"## {header}", "", "| task | n | " + " | ".join(runs) + " |", "|---|---:|" + "---:|" * len(runs)]
    for t in tasks:
        n = next((r["tasks"][t]["n"] for r in results.values() if t in r["tasks"]), 0)
        cells = [f"{100 * r['tasks'][t]['score']:.1f}" if t in r["tasks"] else "" for r in results.values()]
        lines.append(f"| {t} | {n} | " + " | ".join(cells) + " |")
    macros = {k: macro(v) for k, v in results.items()}
    for key, label in (("vsibench", "VSI-Bench macro"), ("multispa", "MultiSPA mean"), ("all_tasks", "all-task macro")):
        cells = [f"**{100 * m[key]:.1f}**" if m[key] is not None else "" for m in macros.values()]
        lines.append(f"| {label} | | " + " | ".join(cells) + " |")
    best = [r for r in runs if r != "prior_baseline"]
    checks = {}
    if "prior_baseline" in macros and best:
        for r in best:
            for key in ("vsibench", "all_tasks"):
                if macros[r][key] is not None and macros["prior_baseline"][key] is not None:
                    checks[f"{r}_minus_prior_{key}_points"] = round(100 * (macros[r][key] - macros["prior_baseline"][key]), 2)
    for sa in ("space_aware", "space_aware_sensor"):
        if sa in macros and "uniform" in macros and macros["uniform"]["vsibench"] is not None:
            checks[f"{sa}_minus_uniform_vsibench_points"] = round(
                100 * (macros[sa]["vsibench"] - macros["uniform"]["vsibench"]), 2)
            if eval_dir is not None and (eval_dir / sa / "predictions.jsonl").is_file():
                from training.eval.compare import compare, load_predictions
                paired = compare(load_predictions(eval_dir / "uniform"), load_predictions(eval_dir / sa))
                vsi = paired["vsibench"]  # interval None: too few test rooms for one (a short eval.limit)
                checks[f"{sa}_minus_uniform_vsibench_interval95"] = (
                    None if vsi["low"] is None else [round(100 * vsi[k], 2) for k in ("low", "high")])
    lines += ["", "Checks (points): " + ", ".join(f"{k} = {v}" for k, v in checks.items())]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"macro": macros, "checks": checks, "results": results}, indent=1))
    return {"macro": macros, "checks": checks}


def export_model(model_dir: Path, export_dir: Path, max_mb: float) -> dict:
    """Copy the final checkpoint (official layout + tokenizer/processor files) to export_dir."""
    from ros2_spatial_mllm.model.checkpoint import load_checkpoint, save_checkpoint

    model, rep = load_checkpoint(model_dir)
    if not rep.ok:
        raise RuntimeError(f"export: {model_dir}: {rep.summary()}")
    export_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, export_dir, assets_from=model_dir)
    size = sum(p.stat().st_size for p in export_dir.glob("*.safetensors")) / 2**20
    if size > max_mb:
        raise RuntimeError(f"export: {size:.1f} MB of safetensors exceeds export.max_mb={max_mb}")
    return {"dir": str(export_dir), "safetensors_mb": round(size, 2)}


def _redo_if_stale(out: Path, name: str, init: str, force: bool) -> bool:
    """Whether stage `name` (a whole model made from `init`) must run: not finished, or forced.
    A folder made from other weights is cleared first, checkpoints of an interrupted run too
    (--resume auto must not continue them on another model): input.json records init's digest
    before the stage starts."""
    digest = _weights_digest(Path(init))
    if _made_from_other_weights(out, name, digest):
        import shutil
        shutil.rmtree(out / name)
    run = force or not _done(out, name)
    if run:
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "input.json").write_text(json.dumps({"init": init, "sha256": digest}))
    return run


def run_polish(cfg: dict, out: Path, init: str, data_root: Path, force: bool) -> str:
    """The polish stage: cached SFT continued from the finished model (its pair-pose head
    included), with `polish.space_aware_share` of the whole-video questions on the frames that
    model's own geometry picks (training/model_picks.py; the node's path without a depth camera);
    `polish.frame_time_positions` sets that model flag for this stage and the model it exports.
    Its settings are cached_sft's with the `polish` block on top; it reads the SFT stage's feature
    store (the head does not change the cached tokens). Returns the final checkpoint dir."""
    from training.model_picks import write_picks

    pcfg = dict(cfg["polish"])
    if _redo_if_stale(out, "polish", init, force):
        picks = out / "polish" / "model_picks.json"  # kept when a resumed stage finds it made by this model
        k = int(cfg.get("data", {}).get("num_frames", 8))
        write_picks(init, data_root, pcfg.pop("picks_splits", ["train", "val"]), k, picks, reuse=True)
        stage = _stage_cfg(cfg, "polish", out, init)
        stage["data"] = {**stage.get("data", {}), "space_aware_picks": str(picks),
                         "space_aware_share": float(pcfg.pop("space_aware_share", 0.5))}
        if "frame_time_positions" in pcfg:  # from this stage on (the exported model keeps the flag)
            stage["model"] = {**stage.get("model", {}), "frame_time_positions": bool(pcfg.pop("frame_time_positions"))}
        stage["polish"] = deep_update(cfg.get("cached_sft", {}), pcfg)
        stage.setdefault("feature_store", str(out / "feature_store"))  # the SFT stage's store
        run_cached_stage(stage, "polish")
    return str(out / "polish" / "final")


def run_default(cfg: dict) -> dict:
    from training.geometry_pretrain import run_geometry
    from training.sft import run_sft

    out = Path(cfg.get("output_dir", "runs/tiny_default"))
    out.mkdir(parents=True, exist_ok=True)
    force = bool(cfg.get("force", False))
    data_root = ensure_data(cfg)
    add_grounding(cfg, data_root)
    init = cfg.get("model", {}).get("init", "random")
    if cfg.get("geometry", {}).get("enabled", True) and cfg.get("model", {}).get("preset", "tiny") == "tiny":
        if force or not _done(out, "geometry"):
            run_geometry(_stage_cfg(cfg, "geometry", out, init))
        init = str(out / "geometry" / "final")
    if cfg.get("semantic", {}).get("enabled", False):  # 2D-tower pre-training on instance masks
        from training.semantic_pretrain import run_semantic
        if force or not _done(out, "semantic"):
            run_semantic(_stage_cfg(cfg, "semantic", out, init))
        init = str(out / "semantic" / "final")
    if cfg.get("align", {}).get("enabled", False):  # cached SFT on grounding questions only (alignment)
        if force or not _done(out, "align"):
            run_cached_stage(_stage_cfg(cfg, "align", out, init), "align")
        init = str(out / "align" / "final")
    sft_stage = "cached_sft" if cfg.get("cached_sft", {}).get("enabled", False) else "sft"
    if sft_stage == "cached_sft" or cfg.get("sft", {}).get("enabled", True):  # sft.enabled: false skips it
        if force or not _done(out, sft_stage):
            if sft_stage == "cached_sft":  # frozen encoders, SFT on cached visual tokens
                run_cached_stage(_stage_cfg(cfg, "cached_sft", out, init), "cached_sft")
            else:
                run_sft(_stage_cfg(cfg, "sft", out, init))
        init = str(out / sft_stage / "final")
    if cfg.get("grpo", {}).get("enabled", False):
        from training.grpo import run_grpo
        if force or not _done(out, "grpo"):
            run_grpo(_stage_cfg(cfg, "grpo", out, init))
        init = str(out / "grpo" / "final")
    if cfg.get("pair_pose", {}).get("enabled", False) and cfg.get("model", {}).get("preset", "tiny") == "tiny":
        from training.pair_pose import run_pair_pose
        # pair_pose/final is a whole model: redo the head when the model it was added to has
        # changed (e.g. cached_sft deleted and rerun), or the export would carry the old weights
        if _redo_if_stale(out, "pair_pose", init, force):
            run_pair_pose(_stage_cfg(cfg, "pair_pose", out, init))
        init = str(out / "pair_pose" / "final")
    if cfg.get("polish", {}).get("enabled", False):
        init = run_polish(cfg, out, init, data_root, force)
    result = {"final_dir": init}
    if int(__import__("os").environ.get("RANK", "0")) > 0:
        return result  # export and evaluation run once, on rank 0
    ex = cfg.get("export", {})
    if ex.get("dir"):
        result["export"] = export_model(Path(init), Path(ex["dir"]), float(ex.get("max_mb", 30)))
    ecfg = cfg.get("eval", {})
    if ecfg.get("enabled", True):
        results = run_eval(Path(init), data_root, out / "eval", ecfg)
        result["report"] = report(results, out, f"{Path(init)} on {data_root} ({ecfg.get('split', 'test')} split, "
                                                f"{ecfg.get('num_frames', 8)} frames)", eval_dir=out / "eval")
    (out / "pipeline.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def main(argv=None) -> int:  # python -m training.pipeline CONFIG  (same as spatial-mllm-train default)
    from training.cli import main as cli_main

    parser = argparse.ArgumentParser(description="run the trained-default pipeline")
    parser.add_argument("config", help="YAML config, e.g. training/configs/tiny_default.yaml")
    args = parser.parse_args(argv)
    return cli_main(["default", "--config", args.config])


if __name__ == "__main__":
    raise SystemExit(main())
