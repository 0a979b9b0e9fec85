"""Diagnostic: can connector + LLM read frames at all when the 2D tokens are perfect?

    python -m training.oracle_probe --init runs/tiny_long/geometry/final --data runs/exp_signal/data \
        --steps 600 --out runs/exp_oracle               # ~6 min on one CPU core

Replaces the 2D tower's merged tokens by an oracle: each token's per-category pixel fractions
(training/semantic_pretrain.token_targets, from the renderer's instance masks) times a fixed
scale in the first channels, keeping the real spatial-encoder features. Then cached SFT
(connector + LLM) runs for a few hundred steps and the frame signal is measured. A large
true-vs-shuffled gap here and none with the learned tower means the 2D encoder is the
bottleneck; no gap even here means the LLM / SFT set-up is.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from training.feature_cache import VisualFeatureCache


class OracleFeatureCache(VisualFeatureCache):
    """VisualFeatureCache whose 'video' tokens are the oracle category fractions."""

    scale = 4.0

    def visual(self, key: tuple) -> dict:
        import cv2

        from training.semantic_pretrain import category_names, instance_classes, token_targets

        if key in self.features:
            return self.features[key]
        out = super().visual(key)
        names = category_names()
        paths = [Path(p) for p in key]
        scene = paths[0].parent.parent
        table = instance_classes(scene / "meta.json", names)
        t, gh, gw = (int(v) for v in out["grid"][0].tolist())
        maps = []
        for p in paths:
            inst = cv2.imread(str(scene / "instance" / (p.stem + ".png")), cv2.IMREAD_UNCHANGED).astype(np.int64)
            cls = table[np.clip(inst, 0, len(table) - 1)]
            maps.append(cv2.resize(cls.astype(np.int32), (gw * 14, gh * 14), interpolation=cv2.INTER_NEAREST))
        while len(maps) % 2:
            maps.append(maps[-1])
        frac = token_targets(np.stack(maps).astype(np.int64), len(names))       # [N, C]
        video = torch.zeros_like(out["video"])
        video[:, : frac.shape[1]] = self.scale * frac
        out = dict(out, video=video)
        self.features[key] = out
        return out


def main(argv=None) -> int:
    from training.cached_sft import batch_records, precompute
    from training.feature_cache import cached_answer_loss
    from training.frame_signal import format_table, frame_signal, spread
    from training.model_io import ExampleEncoder, build_model
    from training.qa_records import load_qa_records
    from training.sft import setup_trainable
    from training.trainer_utils import cosine_with_warmup, set_seed

    p = argparse.ArgumentParser(description="cached SFT with oracle 2D tokens (diagnostic)")
    p.add_argument("--init", required=True, help="checkpoint with the trained spatial encoder")
    p.add_argument("--data", required=True, help="data engine root with instance masks")
    p.add_argument("--steps", type=int, default=600, help="SFT steps")
    p.add_argument("--batch-size", type=int, default=32, help="questions per step")
    p.add_argument("--lr", type=float, default=1e-3, help="connector and LLM learning rate")
    p.add_argument("--eval-limit", type=int, default=400, help="val questions for the frame signal")
    p.add_argument("--out", required=True, help="output directory (signal.json/.md)")
    p.add_argument("--learned", action="store_true", help="use the learned 2D tower instead (control)")
    p.add_argument("--grounding", action="store_true",
                   help="add <data>/grounding_{train,val}.jsonl (training/grounding_questions.py)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    set_seed(0)
    dcfg = {"root": args.data, "num_frames": 8}
    if args.grounding:
        dcfg.update({f"{s}_jsonl": [f"{args.data}/{s}.jsonl", f"{args.data}/grounding_{s}.jsonl"] for s in ("train", "val")})
    model, assets = build_model({"init": args.init})
    groups, _ = setup_trainable(model, {"train": {"vision": False, "vision_merger": False, "spatial_encoder": False},
                                        "lr": {"connector": args.lr, "llm": args.lr}})
    enc = ExampleEncoder(model, assets, dcfg)
    cache = (VisualFeatureCache if args.learned else OracleFeatureCache)(model, enc)
    recs = [r for r in load_qa_records(dcfg, "train") if r.get("family") != "multispa"]
    val = spread([r for r in load_qa_records(dcfg, "val") if r.get("family") != "multispa"], args.eval_limit)
    precompute(cache, recs + val, "encode", True)
    opt = torch.optim.AdamW(groups)
    sched = cosine_with_warmup(opt, 50, args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    history = []
    for step in range(args.steps):
        model.train()
        batch = cache.batch([recs[i] for i in batch_records(len(recs), args.batch_size, 0, step)])
        loss, _ = cached_answer_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for g in groups for q in g["params"]], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % max(1, args.steps // 4) == 0:
            res = frame_signal(model, cache, val, batch_size=64)
            history.append({"step": step + 1, "train_loss": float(loss), **res["overall"]})
            print(json.dumps(history[-1]), flush=True)
    (out / "signal.json").write_text(json.dumps({"history": history, "last": res}, indent=1))
    (out / "signal.md").write_text(format_table(res) + "\n")
    print(format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
