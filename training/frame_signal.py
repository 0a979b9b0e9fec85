"""Do the frames matter? Answer loss and scores with the true frames vs another scene's frames.

    python -m training.frame_signal --model runs/exp_x/sft/final --data runs/data/tiny_long \
        --split val --limit 300 --out runs/exp_x/signal.json          # ~1 min on one CPU core

For each question the 'shuffled' input is the cached visual tokens of a question from a
different scene with the same frame count (a fixed derangement, so numbers are reproducible).
A model that reads its frames has a clearly lower answer loss and higher score with the true
frames; a model that answers from the text prior has none (the gap is ~0).

Reported per task and overall: loss_true, loss_shuffled, gap = loss_shuffled - loss_true
(answer-token cross-entropy), acc1 (the first answer token is the argmax: a multiple-choice
question's greedy letter is right), and with --decode the VSI-Bench / MultiSPA score of the
replies for both inputs (the data engine's scorer; greedy tokens, lone numbers by expected MRA
as the product answers them unless --numeric-answers greedy), next to the answer-prior baseline.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ros2_spatial_mllm.numeric_answer import NUMERIC_ANSWER_MODES
from training.feature_cache import IGNORE_INDEX, VisualFeatureCache, cached_forward
from training.qa_records import task_family


def spread(recs: list[dict], limit: int) -> list[dict]:
    """`limit` records evenly spaced over the list (split files are ordered by scene, so the
    first N would cover only a few scenes); all of them when limit is 0 or larger."""
    if not limit or limit >= len(recs):
        return list(recs)
    return [recs[int(i * len(recs) / limit)] for i in range(limit)]


def shuffled_keys(recs: list[dict], cache: VisualFeatureCache) -> list[tuple]:
    """For record i: the frame key of the next record (in a fixed order) from another scene with
    the same number of frames; its own key when no such record exists."""
    keys = [cache.frame_key(r) for r in recs]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        by_len[len(k)].append(i)
    out = list(keys)
    for idx in by_len.values():
        for j, i in enumerate(idx):
            for step in range(1, len(idx)):
                other = idx[(j + step) % len(idx)]
                if recs[other].get("scene_id") != recs[i].get("scene_id"):
                    out[i] = keys[other]
                    break
    return out


@torch.no_grad()
def per_record_loss(model, cache: VisualFeatureCache, recs: list[dict], keys: list[tuple],
                    batch_size: int = 32) -> tuple[list[float], list[float]]:
    """Per record with the given frame keys: mean answer-token cross-entropy, and whether the
    first answer token is the argmax (1.0 / 0.0; for a multiple-choice question, its greedy
    letter is right)."""
    model.eval()
    losses: list[float] = []
    hits: list[float] = []
    for s in range(0, len(recs), batch_size):
        b = cache.batch(recs[s:s + batch_size], keys[s:s + batch_size])
        logits = cached_forward(model, b)[:, :-1].float()
        labels = b["labels"][:, 1:]
        ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        valid = (labels != IGNORE_INDEX).float()
        losses += ((ce * valid).sum(1) / valid.sum(1).clamp_min(1)).tolist()
        first = valid.argmax(1)                                              # [B] first answer position
        rows = torch.arange(len(first))
        hits += (logits[rows, first].argmax(-1) == labels[rows, first]).float().tolist()
    return losses, hits


def _logits_after(model, base: dict):
    """logits_after(prefixes) -> logits [F, V] of the token after each prefix (token-id tuples of
    one length) appended to the one-record cached prompt `base`, all F in one forward (the
    record's visual tokens repeated). The greedy loop calls it with one prefix; the number search
    uses it as a decode session's branch_logits."""
    def logits_after(prefixes: list[tuple]) -> torch.Tensor:
        n = len(prefixes)
        ids = torch.cat([base["input_ids"].expand(n, -1), torch.tensor(prefixes, dtype=torch.long).view(n, -1)], 1)
        zeros = torch.zeros(n, ids.shape[1] - base["input_ids"].shape[1], dtype=base["mm_token_type_ids"].dtype)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                 "mm_token_type_ids": torch.cat([base["mm_token_type_ids"].expand(n, -1), zeros], 1),
                 "video_grid_thw": base["video_grid_thw"].repeat(n, 1),
                 "second_per_grid_ts": base["second_per_grid_ts"].repeat(n),
                 "video": base["video"].repeat(n, 1), "spatial": base["spatial"].repeat(n, 1)}
        return cached_forward(model, batch)[:, -1]
    return logits_after


@torch.no_grad()
def decoded_replies(model, cache: VisualFeatureCache, recs: list[dict], keys: list[tuple],
                    max_new_tokens: int = 24, numeric_answers: str = "expected_mra") -> list[str]:
    """Replies on cached visual tokens, one record at a time (no KV cache: the sequences are
    ~100 tokens and the tiny LLM recomputes them in milliseconds). Greedy tokens; with
    numeric_answers "expected_mra" (the product's default, ros2_spatial_mllm/numeric_answer.py)
    a reply to a question without options that is one bare number, ended within the budget, is
    replaced as SpatialMLLM.answer replaces it (the same answer_number call); "greedy" keeps the
    digit-by-digit reply."""
    from types import SimpleNamespace

    from ros2_spatial_mllm.numeric_answer import answer_number, check_numeric_answers, is_lone_number

    check_numeric_answers(numeric_answers)
    model.eval()
    tok = cache.encoder.tokenizer
    eos = cache.encoder.eos_id
    replies = []
    for rec, key in zip(recs, keys):
        logits_after = _logits_after(model, cache.batch([rec], [key], with_answer=False))
        new: list[int] = []
        first_logits, ended = None, False
        for _ in range(max_new_tokens):
            logits = logits_after([tuple(new)])[0]
            first_logits = logits if first_logits is None else first_logits
            nxt = int(logits.argmax())
            if nxt == eos:
                ended = True
                break
            new.append(nxt)
        text = tok.decode(new, skip_special_tokens=True)
        if numeric_answers == "expected_mra" and not rec.get("options") and ended and is_lone_number(text):
            choice = answer_number(SimpleNamespace(branch_logits=logits_after), first_logits, tok.decode,
                                   cache.encoder.runtime.eos_ids, min(8, max_new_tokens))
            text = choice.text if choice is not None else text
        replies.append(text)
    return replies


def prediction_rows(recs: list[dict], replies: list[str]) -> list[dict]:
    """One scored row per record, in spatial-mllm-eval's predictions.jsonl shape (id, task_type,
    family, answer, prediction, score), so training.eval.compare can pair two runs."""
    from training.data.dataset import record_extra
    from training.eval.scorer import score_record

    return [{"id": str(r.get("id")), "task_type": task_family(r), "family": r.get("family", "vsibench"),
             "answer": r.get("answer"), "prediction": reply,
             "score": score_record(dict(r, extra=record_extra(r)), reply)} for r, reply in zip(recs, replies)]


def frame_signal(model, cache: VisualFeatureCache, recs: list[dict], decode: bool = False,
                 train_recs: list[dict] | None = None, batch_size: int = 32,
                 numeric_answers: str = "expected_mra") -> dict:
    """{'overall': {...}, 'tasks': {task: {n, loss_true, loss_shuffled, gap[, score_true,
    score_shuffled, score_prior]}}, 'macro': {...} and 'predictions' (the true frames' scored
    rows, prediction_rows) with decode}."""
    true_keys = [cache.frame_key(r) for r in recs]
    shuf_keys = shuffled_keys(recs, cache)
    lt, ht = per_record_loss(model, cache, recs, true_keys, batch_size)
    ls, hs = per_record_loss(model, cache, recs, shuf_keys, batch_size)
    tasks: dict[str, dict] = {}
    for r, a, b, c, d in zip(recs, lt, ls, ht, hs):
        t = tasks.setdefault(task_family(r), {"n": 0, "loss_true": 0.0, "loss_shuffled": 0.0, "acc1_true": 0.0,
                                              "acc1_shuffled": 0.0})
        t["n"] += 1
        for key, v in (("loss_true", a), ("loss_shuffled", b), ("acc1_true", c), ("acc1_shuffled", d)):
            t[key] += v
    for t in tasks.values():
        for key in ("loss_true", "loss_shuffled", "acc1_true", "acc1_shuffled"):
            t[key] /= t["n"]
        t["gap"] = t["loss_shuffled"] - t["loss_true"]
    n = max(1, len(recs))
    result = {"overall": {"n": len(recs), "loss_true": sum(lt) / n, "loss_shuffled": sum(ls) / n,
                          "gap": (sum(ls) - sum(lt)) / n, "acc1_true": sum(ht) / n, "acc1_shuffled": sum(hs) / n},
              "tasks": dict(sorted(tasks.items()))}
    if decode:
        from training.pipeline import macro, prior_baseline

        from training.eval.scorer import aggregate

        rows = prediction_rows(recs, decoded_replies(model, cache, recs, true_keys, numeric_answers=numeric_answers))
        shuffled = decoded_replies(model, cache, recs, shuf_keys, numeric_answers=numeric_answers)
        summaries = {"true": aggregate(rows), "shuffled": aggregate(prediction_rows(recs, shuffled))}
        if train_recs:
            summaries["prior"] = prior_baseline(train_recs, recs)["summary"]
        for name, summ in summaries.items():
            for task, row in summ["tasks"].items():
                if task in tasks:
                    tasks[task][f"score_{name}"] = row["score"]
        result["macro"] = {name: macro(summ) for name, summ in summaries.items()}
        result["predictions"] = rows
    return result


def format_table(result: dict) -> str:
    """Markdown table of a frame_signal result."""
    cols = ["n", "loss_true", "loss_shuffled", "gap", "acc1_true", "acc1_shuffled", "score_true", "score_shuffled",
            "score_prior"]
    lines = ["| task | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for task, row in list(result["tasks"].items()) + [("overall", result["overall"])]:
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("" if v is None else (str(v) if c == "n" else
                                               f"{100 * v:.1f}" if c.startswith(("score", "acc1")) else f"{v:.3f}"))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    for name, m in result.get("macro", {}).items():
        lines.append(f"| macro {name} | | | | | | | vsi {100 * (m['vsibench'] or 0):.1f} | multispa "
                     f"{100 * (m['multispa'] or 0):.1f} | all {100 * (m['all_tasks'] or 0):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from training.data.dataset import write_jsonl
    from training.model_io import ExampleEncoder, build_model
    from training.qa_records import load_qa_records

    p = argparse.ArgumentParser(description="answer loss/score with true vs another scene's frames")
    p.add_argument("--model", required=True, help="checkpoint directory (SpatialMLLM layout)")
    p.add_argument("--data", required=True, help="data engine root (train/val/test.jsonl)")
    p.add_argument("--split", default="val", help="split to measure on")
    p.add_argument("--limit", type=int, default=0, help="N questions spread evenly over the split (0 = all)")
    p.add_argument("--num-frames", type=int, default=8, help="frames per question")
    p.add_argument("--sampling", default="uniform", help="uniform | space_aware")
    p.add_argument("--decode", action="store_true", help="also decode and score (slower)")
    p.add_argument("--numeric-answers", choices=NUMERIC_ANSWER_MODES, default="expected_mra",
                   help="how decoded lone numbers are chosen (the product's default: expected_mra)")
    p.add_argument("--out", default=None,
                   help="write the result JSON (+ .md table, and with --decode .predictions.jsonl) here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    dcfg = {"root": args.data, "num_frames": args.num_frames, "frame_sampling": args.sampling}
    model, assets = build_model({"init": args.model})
    cache = VisualFeatureCache(model, ExampleEncoder(model, assets, dcfg))
    recs = load_qa_records(dcfg, args.split)
    recs = spread(recs, args.limit)
    res = frame_signal(model, cache, recs, decode=args.decode,
                       train_recs=load_qa_records(dcfg, "train") if args.decode else None,
                       numeric_answers=args.numeric_answers)
    rows = res.pop("predictions", None)
    table = format_table(res)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        if rows is not None:  # per question, for python -m training.eval.compare
            write_jsonl(rows, Path(args.out).with_suffix(".predictions.jsonl"))
        Path(args.out).with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
