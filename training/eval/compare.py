"""Paired comparison of two evaluation runs over the same questions: per-task scores of each,
their difference, and a bootstrap interval of that difference over rooms.

    python -m training.eval.compare RUN_A RUN_B [--rounds 2000] [--seed 0] [--out diff.json]
    python -m training.eval.compare A_SEED0,A_SEED1 B_SEED0,B_SEED1     # arms of several seeds

Tiny CPU run (two evaluations of the embedded model, then the comparison)::

    spatial-mllm-data generate --scenes 4 --questions-per-scene 6 --out /tmp/ds --frames 8 --width 160 --height 120
    spatial-mllm-eval --preset tiny --data /tmp/ds --num-frames 4 --sampling uniform --out /tmp/ev_u
    spatial-mllm-eval --preset tiny --data /tmp/ds --num-frames 4 --sampling space_aware --out /tmp/ev_s
    python -m training.eval.compare /tmp/ev_u /tmp/ev_s

RUN_A / RUN_B: a `spatial-mllm-eval --out` directory or its predictions.jsonl. Both must hold the
same question ids. Questions of one room share frames, so they are not independent: the
interval resamples whole rooms with replacement (the room is the id without its last `_NNN`), and
scores both runs on the same resample. An interval that contains 0 means the two runs differ by
no more than rooms drawn at random would make them differ: the question of "do two training runs
agree within noise" (README "Training") or "does one sampler beat another". When most resamples
miss one of a figure's tasks (a handful of rooms, as in the tiny run above) the figure gets no
interval ("too few rooms") rather than one biased toward the point estimate.

An arm given as several runs (comma-separated: seeds of one recipe, each scoring the same
questions) scores each question by its mean over those runs. Every macro is a mean of per-question
scores, so the arm's figures are the means of its runs' figures, and the interval is that of the
seed-averaged difference over rooms; it does not count seed-to-seed spread beyond the seeds given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np

from training.eval.scorer import family_overall

MIN_VALID_ROUNDS = 0.99   # share of bootstrap rounds in which every task of a figure was drawn


def load_predictions(path: str | Path) -> Dict[str, dict]:
    """A predictions.jsonl (or the directory holding it) -> {question id: row}."""
    path = Path(path)
    if path.is_dir():
        path = path / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file {path}")
    rows = {}
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or not isinstance(row.get("task_type"), str):
                        raise ValueError("no task_type")
                    row["score"] = float(row["score"])
                    rows[str(row["id"])] = row
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{n}: not a prediction row ({exc})") from None
    return rows


def question_mismatch(a: Mapping[str, dict], b: Mapping[str, dict]) -> str | None:
    """None when B scores the questions of A (same ids, and each id the same task and answer);
    otherwise what differs, as an error message."""
    if set(a) != set(b):
        only_a, only_b = len(set(a) - set(b)), len(set(b) - set(a))
        return f"the runs score different questions ({only_a} only in A, {only_b} only in B)"
    differ = [i for i in a if a[i]["task_type"] != b[i]["task_type"]
              or str(a[i].get("answer", "")) != str(b[i].get("answer", ""))]
    if differ:
        return f"{len(differ)} question ids have another task or answer in B (e.g. {differ[0]}): not the same data set"
    return None


def average_runs(runs: Sequence[Mapping[str, dict]]) -> Dict[str, dict]:
    """Several {id: row} maps of one arm (seeds) -> one map whose scores are the per-question means.
    The runs must score the same questions with the same tasks and answers."""
    if not runs:
        raise ValueError("no runs to average")
    first = runs[0]
    for n, other in enumerate(runs[1:], start=2):
        mismatch = question_mismatch(first, other)
        if mismatch:
            raise ValueError(f"run {n} of one arm scores other questions than run 1 "
                             f"(A = run 1, B = run {n}: {mismatch})")
    return {i: {**row, "score": sum(r[i]["score"] for r in runs) / len(runs)} for i, row in first.items()}


def load_arm(spec: str) -> Dict[str, dict]:
    """'RUN' or 'RUN1,RUN2,...' (directories or predictions.jsonl) -> {id: row}, scores averaged."""
    paths = [p for p in spec.split(",") if p]
    return average_runs([load_predictions(p) for p in paths])


def room_of(question_id: str) -> str:
    """'test_20000000_008' -> 'test_20000000' (the data engine's ids: scene id + '_' + index)."""
    return question_id.rsplit("_", 1)[0]


def _summary(task_scores: Mapping, family_of: Mapping[str, str]) -> Dict:
    overall = family_overall(task_scores, family_of)
    return {"tasks": dict(task_scores), "vsibench": overall["vsibench"]["overall"],
            "multispa": overall["multispa"]["overall"], "vsibench_tasks": overall["vsibench"]["tasks"]}


def compare(a: Mapping[str, dict], b: Mapping[str, dict], rounds: int = 2000, seed: int = 0,
            level: float = 0.95) -> Dict:
    """Two {id: row} maps (rows with task_type, family, score) -> per-task and overall scores of
    each, B - A, and its `level` bootstrap interval over rooms. Scores in [0, 1]."""
    mismatch = question_mismatch(a, b)
    if mismatch:
        raise ValueError(mismatch)
    if not a:
        raise ValueError("no questions to compare")
    ids = sorted(a)
    rooms = sorted({room_of(i) for i in ids})
    tasks = sorted({a[i]["task_type"] for i in ids})
    family_of = {a[i]["task_type"]: a[i].get("family", "vsibench") for i in ids}
    room_index, task_index = {r: k for k, r in enumerate(rooms)}, {t: k for k, t in enumerate(tasks)}
    sums = np.zeros((2, len(rooms), len(tasks)))                               # [run, room, task]
    counts = np.zeros((len(rooms), len(tasks)))                                # [room, task]
    for i in ids:
        r, t = room_index[room_of(i)], task_index[a[i]["task_type"]]
        sums[0, r, t] += float(a[i]["score"])
        sums[1, r, t] += float(b[i]["score"])
        counts[r, t] += 1

    def summaries(weights: np.ndarray) -> List[Dict]:
        # weights [R, rooms]: how often each room is drawn in each round -> per-run summaries whose
        # values are [R] arrays. A task no drawn room asks scores nan in that round.
        n = weights @ counts                                                   # [R, task]
        out = []
        for run in range(2):
            with np.errstate(invalid="ignore", divide="ignore"):
                means = (weights @ sums[run]) / n                              # [R, task]
            out.append(_summary({t: means[:, k] for t, k in task_index.items()}, family_of))
        return out

    point = summaries(np.ones((1, len(rooms))))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(rooms), size=(rounds, len(rooms)))             # [R, rooms] room indices
    weights = np.zeros((rounds, len(rooms)))
    np.add.at(weights, (np.arange(rounds)[:, None], draws), 1.0)
    boot = summaries(weights)
    low_q, high_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def row(get) -> Dict:
        va, vb = get(point[0]), get(point[1])
        if va is None or vb is None:
            return {}
        diff = get(boot[1]) - get(boot[0])
        valid = np.isfinite(diff)
        out = {"a": float(va[0]), "b": float(vb[0]), "diff": float(vb[0] - va[0]), "low": None, "high": None}
        # a round that drew no room asking one of the figure's tasks has no value for it; keeping
        # only the other rounds would bias the interval toward rooms that ask everything (with a
        # handful of rooms, toward the point estimate itself), so too few valid rounds: no interval
        if valid.mean() >= MIN_VALID_ROUNDS:
            out["low"], out["high"] = (float(v) for v in np.percentile(diff[valid], [low_q, high_q]))
        return out

    result = {"questions": len(ids), "rooms": len(rooms), "rounds": rounds, "level": level,
              "tasks": {t: {"n": int(counts[:, task_index[t]].sum()), "family": family_of[t],
                            **row(lambda s, t=t: s["tasks"][t])} for t in tasks},
              "vsibench_tasks": {t: row(lambda s, t=t: s["vsibench_tasks"].get(t))
                                 for t in point[0]["vsibench_tasks"]},
              "vsibench": row(lambda s: s["vsibench"]), "multispa": row(lambda s: s["multispa"])}
    figures = [r for r in (result["vsibench"], result["multispa"]) if r]
    # None: no interval could be given (too few rooms per task)
    result["agree"] = (None if any(r["low"] is None for r in figures)
                       else all(r["low"] <= 0 <= r["high"] for r in figures))
    return result


def markdown(result: Dict, names: Sequence[str] = ("A", "B")) -> str:
    """The comparison as a Markdown table, scores in %."""
    pct = int(round(100 * result["level"]))
    lines = [f"| task | n | {names[0]} | {names[1]} | {names[1]} - {names[0]} | {pct} % interval (rooms resampled) |",
             "|---|---:|---:|---:|---:|---|"]

    def line(label, n, r):
        if r:
            interval = ("too few rooms" if r["low"] is None
                        else f"[{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]")
            lines.append(f"| {label} | {n} | {100 * r['a']:.1f} | {100 * r['b']:.1f} | {100 * r['diff']:+.1f} | "
                         f"{interval} |")

    for t, r in result["tasks"].items():
        line(t, r["n"], r)
    line("object_rel_direction (easy/medium/hard averaged)", "", result["vsibench_tasks"].get("object_rel_direction"))
    line("**VSI-Bench macro**", "", result["vsibench"])
    line("**MultiSPA**", "", result["multispa"])
    lines.append(f"\n{result['questions']} questions in {result['rooms']} rooms, {result['rounds']} bootstrap rounds.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.eval.compare",
                                description="paired comparison of two spatial-mllm-eval runs, rooms bootstrapped")
    p.add_argument("run_a", help="spatial-mllm-eval --out directory (or predictions.jsonl) of run A; "
                                 "several runs of one arm (seeds) comma-separated, averaged per question")
    p.add_argument("run_b", help="the same for run B; must score the same question ids")
    p.add_argument("--rounds", type=int, default=2000, help="bootstrap rounds (default 2000)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--names", nargs=2, default=("A", "B"), metavar=("NAME_A", "NAME_B"), help="column names")
    p.add_argument("--out", help="also write the comparison as JSON here")
    args = p.parse_args(argv)
    try:
        if args.rounds < 1 or not 0 < args.level < 1:
            raise ValueError("--rounds must be >= 1 and --level in (0, 1)")
        result = compare(load_arm(args.run_a), load_arm(args.run_b), args.rounds, args.seed,
                         args.level)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
    except (OSError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    print(markdown(result, args.names), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
