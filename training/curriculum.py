"""Stage 3: confidence-driven curriculum ("self-evolving" data loop).

    spatial-mllm-train curriculum --config training/configs/curriculum_tiny.yaml
    # tiny CPU smoke run (2 rounds of a few steps):
    spatial-mllm-train curriculum --config training/configs/curriculum_tiny.yaml \
        --set curriculum.rounds=2 --set curriculum.steps_per_round=3 --set output_dir=runs/cur_smoke

Each round: SFT for `steps_per_round` on the current pool (continuing from the last round) ->
score the model on a probe split per task family x difficulty with the data engine's scorer
(training/eval/scorer.py) -> measure confidence (mean probability of the greedy answer's
tokens, or agreement of sampled answers with the greedy one) -> rank the cells by weakness
(1 - score and 1 - confidence, weighted) -> ask the data engine's generator for new scenes
and keep their questions of the weak cells -> add them to the pool. Every request is logged
as one JSON line in <output_dir>/requests.jsonl.

Difficulty of a question: an explicit `difficulty` field, the task's _easy/_medium/_hard suffix,
the number of options for multiple choice (<= 2 easy, 3 medium, >= 4 hard), else for numbers
whether |answer| is above the task's median on the probe set (hard) or not (easy).
"""
from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from training.model_io import ExampleEncoder, build_model
from training.qa_records import load_qa_records, task_family
from training.rewards import parse_vector
from training.trainer_utils import set_seed


def difficulty_of(rec: dict, medians: dict | None = None) -> str:
    if rec.get("difficulty"):
        return str(rec["difficulty"])
    task = task_family(rec)
    suffix = task.rsplit("_", 1)[-1]
    if suffix in ("easy", "medium", "hard"):
        return suffix
    if rec.get("options"):
        n = len(rec["options"])
        return "easy" if n <= 2 else "medium" if n == 3 else "hard"
    values = parse_vector(str(rec.get("answer", "")))
    if medians and task in medians and values:
        return "hard" if sum(v * v for v in values) ** 0.5 > medians[task] else "easy"
    return "all"


def task_medians(records: list[dict]) -> dict:
    mags = defaultdict(list)
    for r in records:
        values = parse_vector(str(r.get("answer", "")))
        if values and not r.get("options"):
            mags[task_family(r)].append(sum(v * v for v in values) ** 0.5)
    return {t: statistics.median(v) for t, v in mags.items()}


@torch.no_grad()
def greedy_with_confidence(model, prompt: dict, eos_ids: list[int], max_new_tokens: int = 16) -> tuple[list[int], float]:
    """Greedy reply token ids and the mean probability of its tokens (eos included)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model.eval()
    ids = torch.as_tensor(prompt["input_ids"])[None]
    fused = model.fuse_video(prompt["pixel_values_videos"], prompt["video_grid_thw"], prompt["spatial_pixel_values"][None])
    model.model.rope_deltas = None
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                mm_token_type_ids=torch.as_tensor(prompt["mm_token_type_ids"])[None],
                video_grid_thw=prompt["video_grid_thw"], second_per_grid_ts=prompt["second_per_grid_ts"],
                use_cache=True, logits_to_keep=1,
                mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(fused,))})
    tokens, probs = [], []
    cache, logits = out.past_key_values, out.logits[:, -1]
    for _ in range(max_new_tokens):
        p = F.softmax(logits[0].float(), -1)
        tok = int(p.argmax())
        probs.append(float(p[tok]))
        if tok in eos_ids:
            break
        tokens.append(tok)
        out = model(input_ids=torch.tensor([[tok]]), past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
    model.model.rope_deltas = None
    return tokens, sum(probs) / max(1, len(probs))


def evaluate_cells(model, encoder: ExampleEncoder, records: list[dict], mode: str = "token_prob",
                   samples: int = 4, temperature: float = 1.0, max_new_tokens: int = 16) -> tuple[list[dict], list[dict]]:
    """Score + confidence per record and per (task, difficulty) cell.
    Returns (per-record rows, cells sorted by task/difficulty)."""
    from training.data.dataset import record_extra
    from training.eval.scorer import score_record
    from training.grpo import completion_mask, sample_group

    medians = task_medians(records)
    rows = []
    for rec in records:
        prompt = encoder.encode_prompt(rec)
        tokens, token_prob = greedy_with_confidence(model, prompt, encoder.runtime.eos_ids, max_new_tokens)
        reply = encoder.tokenizer.decode(tokens, skip_special_tokens=True)
        conf = token_prob
        if mode == "agreement":
            comps = sample_group(model, prompt, samples, max_new_tokens, temperature, encoder.runtime.eos_ids, encoder.pad_id)
            texts = [encoder.tokenizer.decode(c[completion_mask(c[None], encoder.runtime.eos_ids)[0].bool()],
                                              skip_special_tokens=True) for c in comps]
            conf = sum(t.strip().split()[:1] == reply.strip().split()[:1] for t in texts) / len(texts)
        score = score_record({**rec, "extra": record_extra(rec)}, reply)
        rows.append({"id": rec.get("id"), "task_type": task_family(rec), "family": rec.get("family", "vsibench"),
                     "difficulty": difficulty_of(rec, medians), "reply": reply, "score": float(score),
                     "confidence": float(conf)})
    cells = defaultdict(list)
    for r in rows:
        cells[(r["task_type"], r["difficulty"])].append(r)
    table = [{"task_type": t, "difficulty": d, "n": len(v), "score": sum(x["score"] for x in v) / len(v),
              "confidence": sum(x["confidence"] for x in v) / len(v)} for (t, d), v in sorted(cells.items())]
    return rows, table


def choose_weak_cells(table: list[dict], top_k: int = 3, score_weight: float = 0.5) -> list[dict]:
    """Weakness = w (1 - score) + (1 - w)(1 - confidence); the top_k weakest cells, weakest first."""
    ranked = [{**c, "weakness": score_weight * (1 - c["score"]) + (1 - score_weight) * (1 - c["confidence"])} for c in table]
    ranked.sort(key=lambda c: (-c["weakness"], c["task_type"], c["difficulty"]))
    return ranked[:top_k]


def request_questions(weak: list[dict], total: int, out_root: Path, round_idx: int, scenes: int, gen_cfg: dict,
                      medians: dict) -> tuple[list[dict], list[dict]]:
    """Ask the data engine for `scenes` new training scenes and keep up to `total` of their
    questions, split over the weak cells in proportion to their weakness. Returns (kept rows,
    seeds the generator failed on)."""
    from training.data.dataset import read_jsonl
    from training.data.generate import GenerateConfig, process_scene

    cfg = GenerateConfig(**{k: v for k, v in gen_cfg.items() if k in GenerateConfig.__dataclass_fields__})
    weights = {(c["task_type"], c["difficulty"]): c["weakness"] for c in weak}
    norm = sum(weights.values()) or 1.0
    quota = {cell: max(1, round(total * w / norm)) for cell, w in weights.items()}
    kept: list[dict] = []
    made, failed = 0, []
    for i in range(3 * scenes):
        if made == scenes:
            break
        seed = 5_000_000 + round_idx * 10_000 + i  # train seed range, beyond the base dataset's scenes
        sid = f"train_{seed:08d}"
        try:
            process_scene((str(out_root), "train", seed, sid, asdict(cfg)))
        except Exception as exc:  # a scene the generator cannot build: skip it, log it, take the next seed
            failed.append({"seed": seed, "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        made += 1
        for row in read_jsonl(out_root / "scenes" / "train" / sid / "qa.jsonl"):
            cell = (task_family(row), difficulty_of(row, medians))
            if quota.get(cell, 0) > 0:
                quota[cell] -= 1
                kept.append({**row, "_root": str(out_root)})
    return kept, failed


def run_curriculum(cfg: dict) -> dict:
    """Rounds of SFT -> per-cell evaluation -> weak-cell requests (see module docstring)."""
    from training.sft import run_sft

    ccfg = cfg.get("curriculum", {})
    seed = int(cfg.get("seed", 0))
    out_dir = Path(cfg.get("output_dir", "runs/curriculum"))
    out_dir.mkdir(parents=True, exist_ok=True)
    data_cfg = dict(cfg.get("data", {}))
    pool = load_qa_records(data_cfg, split="train")
    probe = load_qa_records(data_cfg, split=ccfg.get("probe_split", "val"))[: int(ccfg.get("probe_size", 64))]
    if not pool or not probe:
        raise RuntimeError("curriculum: need train and probe questions (check data.root and curriculum.probe_split)")
    init = cfg.get("model", {}).get("init", "random")
    gen_root = Path(data_cfg.get("root", out_dir))
    log_path = out_dir / "requests.jsonl"
    history = []
    for rnd in range(int(ccfg.get("rounds", 3))):
        set_seed(seed + rnd)
        pool_file = out_dir / f"round{rnd}_pool.jsonl"
        with open(pool_file, "w") as fh:
            for r in pool:
                fh.write(json.dumps({k: v for k, v in r.items() if k != "_root"}) + "\n")
        sft_cfg = {**cfg, "output_dir": str(out_dir / f"round{rnd}"), "model": {**cfg.get("model", {}), "init": init},
                   "data": {**data_cfg, "train_jsonl": str(pool_file), "root": str(gen_root)},
                   "sft": {**cfg.get("sft", {}), "max_steps": int(ccfg.get("steps_per_round", 50))}}
        result = run_sft(sft_cfg)
        init = str(result["final_dir"])
        model, assets = build_model({**cfg.get("model", {}), "init": init})
        encoder = ExampleEncoder(model, assets, data_cfg, seed=seed)
        rows, table = evaluate_cells(model, encoder, probe, ccfg.get("confidence", "token_prob"),
                                     int(ccfg.get("samples", 4)), float(ccfg.get("temperature", 1.0)),
                                     int(ccfg.get("max_new_tokens", 16)))
        weak = choose_weak_cells(table, int(ccfg.get("top_k", 3)), float(ccfg.get("score_weight", 0.5)))
        added, failed = request_questions(weak, int(ccfg.get("questions_per_round", 60)), gen_root, rnd,
                                  int(ccfg.get("scenes_per_round", 2)), ccfg.get("generator", {}), task_medians(probe))
        pool += added
        got = defaultdict(int)
        for r in added:
            got[f"{task_family(r)}/{difficulty_of(r, task_medians(probe))}"] += 1
        entry = {"round": rnd, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "checkpoint": init,
                 "probe_score": sum(r["score"] for r in rows) / len(rows),
                 "probe_confidence": sum(r["confidence"] for r in rows) / len(rows),
                 "cells": table, "weak": weak,
                 "request": {"families": [f"{c['task_type']}/{c['difficulty']}" for c in weak],
                             "questions": int(ccfg.get("questions_per_round", 60)),
                             "scenes": int(ccfg.get("scenes_per_round", 2))},
                 "received": dict(got), "generator_failures": failed, "pool_size": len(pool)}
        with open(log_path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        history.append({k: entry[k] for k in ("round", "probe_score", "probe_confidence", "pool_size")})
        print(f"curriculum round {rnd}: probe score {entry['probe_score']:.3f}, confidence "
              f"{entry['probe_confidence']:.3f}, asked for {entry['request']['families']}, got {dict(got)}")
    return {"final_dir": init, "requests_log": str(log_path), "history": history}
