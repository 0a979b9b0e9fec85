"""Diagnostic: would the tiny LLM answer distances and directions if its visual tokens said
where each patch is in the first camera's frame?

    python -m training.position_oracle --init runs/repro_1205/align/final \
        --store runs/repro_1205/feature_store --out runs/oracle/xyz8k        # 8000 steps, ~55 min
    python -m training.position_oracle --init runs/oracle/xyz8k/final --eval-only --out runs/oracle/xyz8k_eval
    python -m training.position_oracle ... --steps 2000 --scale 0 --out runs/oracle/ctrl   # short control
    python -m training.position_oracle ... --yaw-noise-deg 24 --shift-noise 0.3   # pose-error model
    python -m training.position_oracle --init runs/repro_1205/cached_sft/final --scale 0 --eval-only \
        --out runs/oracle/base                                  # score a normally trained model alike
    python -m training.position_oracle --init ros2_spatial_mllm/assets/tiny --scale 0 --steps 2000 \
        --set model.llm_grow_to=8 --store runs/cont/feature_store --out runs/cont/deep   # a recipe variant
    # tiny CPU smoke run (needs a data root): --steps 3 --eval-limit 16

Cached SFT of the default recipe (tiny_default.yaml's cached_sft block: aux targets, grounding
mix) from a trained checkpoint, with every video token's input raised by a fixed embedding of the
renderer's true mean 3-D point of that token's pixels, in the first sampled camera's frame
(training/aux_targets.token_targets). With --yaw-noise-deg / --shift-noise each temporal token
group after the first gets its points turned about the first camera's vertical axis and shifted
(seeded by the frame set), as an imperfect camera-pose estimate would place them. After
training, answers on a spread of the test split (cached tokens, on the recipe's frame sets:
`data.frame_sampling`, `mixed` in the default; greedy tokens, lone numbers by expected MRA
unless --numeric-answers greedy) give per-task scores, written to
<out>/oracle.json and oracle.md, and per question to <out>/predictions.jsonl (pair two runs with
`python -m training.eval.compare A B`). `--scale 0` is the control (same recipe, no embedding).
The shipped model never sees these tokens: this measures a ceiling, not a feature.

With `--scale 0` and `--set KEY=VALUE` overrides of the recipe this is also the paired-arm
runner for recipe variants continued from one checkpoint (more LLM depth, other aux targets):
every arm trains and is scored the same way, on the same questions.
"""
from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np
import torch

from ros2_spatial_mllm.numeric_answer import NUMERIC_ANSWER_MODES
from training.feature_cache import VisualFeatureCache

FREQS = (1.0, 2.0, 4.0)          # Fourier frequencies (per unit of aux_targets.XYZ_SCALE = 3 m)


def position_features(xyz: torch.Tensor) -> torch.Tensor:
    """xyz [N, 3] (units of 3 m) -> [N, 3 + 6 * len(FREQS)]: the coordinates and their sines and
    cosines, so both a linear read-out and distance-like dot products are available."""
    parts = [xyz]
    for f in FREQS:
        parts += [torch.sin(np.pi * f * xyz), torch.cos(np.pi * f * xyz)]
    return torch.cat(parts, -1)


def perturb(xyz: np.ndarray, groups: int, key: tuple, yaw_deg: float, shift: float) -> np.ndarray:
    """xyz [G * M, 3] (first-camera frame, y down) with temporal groups 1..G-1 each turned by a
    random yaw ~ N(0, yaw_deg) about the camera's vertical axis and shifted by N(0, shift / 3)
    per horizontal axis (units of 3 m); seeded by the frame set so every pass sees the same error."""
    if groups <= 1 or (yaw_deg <= 0 and shift <= 0):
        return xyz
    rng = np.random.default_rng(zlib.crc32("|".join(key).encode()))
    out = xyz.reshape(groups, -1, 3).copy()
    for g in range(1, groups):
        a = np.deg2rad(rng.normal(0.0, yaw_deg))
        rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
        move = np.array([rng.normal(0.0, shift / 3.0), 0.0, rng.normal(0.0, shift / 3.0)])
        out[g] = out[g] @ rot.T + move
    return out.reshape(-1, 3)


class PositionOracleCache(VisualFeatureCache):
    """VisualFeatureCache whose batches carry scale * norm * unit(position_features(xyz) @ Q) added
    to the 2D tokens: xyz the true (optionally perturbed) token positions, Q [D, H] a fixed random
    orthonormal map into the hidden size, norm the first batch's median 2D-token norm unless set.
    Applied in `batch`, so features read from a FeatureStore get it too."""

    scale = 1.0
    yaw_deg = 0.0
    shift = 0.0
    norm: float | None = None   # per process: set by the first batch (training's), reused by the evaluation

    def __init__(self, model, encoder):
        super().__init__(model, encoder)
        hidden = int(model.config.text_config.hidden_size)
        dims = 3 + 6 * len(FREQS)
        gen = torch.Generator().manual_seed(1234)
        q, _ = torch.linalg.qr(torch.randn(hidden, dims, generator=gen))          # [H, D], orthonormal columns
        self.proj = q.T.contiguous()                                               # [D, H]
        self.xyz: dict[tuple, torch.Tensor] = {}

    def positions(self, key: tuple) -> torch.Tensor:
        if key not in self.xyz:
            from training.aux_targets import token_targets

            xyz = token_targets(key, self.model.connector.temporal_patch_size)["tok_xyz"]
            groups = int(self.visual(key)["grid"][0, 0])
            self.xyz[key] = torch.from_numpy(perturb(xyz, groups, key, self.yaw_deg, self.shift)).float()
        return self.xyz[key]

    def batch(self, recs: list[dict], keys: list[tuple] | None = None, with_answer: bool = True) -> dict:
        keys = keys or [self.frame_key(r) for r in recs]
        out = super().batch(recs, keys, with_answer)
        if self.scale:
            if PositionOracleCache.norm is None:  # the median 2D-token norm of the first batch
                PositionOracleCache.norm = float(out["video"].norm(dim=-1).median())
            feats = position_features(torch.cat([self.positions(k) for k in keys]))   # [sum N, D]
            emb = feats @ self.proj                                                    # [sum N, H]
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            out["video"] = out["video"] + self.scale * PositionOracleCache.norm * emb
        return out


def main(argv=None) -> int:
    from training import pipeline as P
    from training.cached_sft import precompute, run_cached_sft
    from training.data.dataset import write_jsonl
    from training.frame_signal import format_table, frame_signal, spread
    from training.model_io import ExampleEncoder, build_model
    from training.qa_records import load_qa_records
    from training.trainer_utils import load_config

    p = argparse.ArgumentParser(description="cached SFT with true 3-D token positions (diagnostic)")
    p.add_argument("--config", default="training/configs/tiny_default.yaml", help="recipe (its cached_sft block)")
    p.add_argument("--init", required=True, help="checkpoint to start from (e.g. a run's align/final)")
    p.add_argument("--store", default="", help="FeatureStore directory of that checkpoint's encoders")
    p.add_argument("--steps", type=int, default=None,
                   help="SFT steps, cosine schedule over them (default: the recipe's cached_sft.max_steps)")
    p.add_argument("--scale", type=float, default=1.0, help="embedding norm / median 2D-token norm (0: control)")
    p.add_argument("--yaw-noise-deg", type=float, default=0.0, help="per-group yaw error, degrees (std)")
    p.add_argument("--shift-noise", type=float, default=0.0, help="per-group horizontal shift error, metres (std)")
    p.add_argument("--eval-limit", type=int, default=1600, help="test questions decoded (spread over the split)")
    p.add_argument("--seed", type=int, default=0, help="SFT seed")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--norm", type=float, default=None,
                   help="embedding norm before --scale (default: training: the first batch's median 2D-token "
                        "norm, saved as <out>/position_norm.json; --eval-only: the one saved beside --init)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value before the stage is built, e.g. --set model.llm_grow_to=8 "
                        "or --set cached_sft.aux.pair_layer=3 (repeatable)")
    p.add_argument("--numeric-answers", choices=NUMERIC_ANSWER_MODES, default="expected_mra",
                   help="how decoded lone numbers are chosen: expected_mra as the product answers (default), "
                        "or greedy, as the sprints before 2026-12-06 scored")
    p.add_argument("--eval-only", action="store_true",
                   help="no training: score --init itself (with --scale 0, a normally trained model on cached tokens)")
    args = p.parse_args(argv)
    owned = ("seed", "output_dir", "feature_store", "model.init", "cached_sft.max_steps", "cached_sft.eval_every")
    clash = [o for o in args.overrides if o.split("=", 1)[0].strip() in owned]
    if clash:  # this script sets these itself (its own flags)
        p.error(f"--set {clash[0]}: set by this script (use --seed, --out, --store, --init, --steps)")

    PositionOracleCache.scale, PositionOracleCache.yaw_deg = args.scale, args.yaw_noise_deg
    PositionOracleCache.shift, PositionOracleCache.norm = args.shift_noise, args.norm
    cfg = load_config(args.config, args.overrides)
    P.add_grounding(cfg, P.ensure_data(cfg))
    out = Path(args.out)
    stage = P._stage_cfg(cfg, "cached_sft", out.parent, args.init)
    stage["output_dir"] = str(out)
    stage["seed"] = args.seed
    stage["feature_store"] = args.store or False
    steps = args.steps or int(stage["cached_sft"].get("max_steps", 100))
    stage["cached_sft"] = {**stage["cached_sft"], "max_steps": steps, "eval_every": 0}
    saved = Path(args.init).parent / "position_norm.json"
    if args.eval_only and args.scale and args.norm is None:
        if not saved.is_file():
            raise SystemExit(f"position_oracle: --eval-only with --scale {args.scale} needs --norm or {saved}")
        PositionOracleCache.norm = float(json.loads(saved.read_text())["norm"])
    out.mkdir(parents=True, exist_ok=True)
    if not args.eval_only:
        run_cached_sft(stage, cache_cls=PositionOracleCache)
        if PositionOracleCache.norm is not None:  # the norm the weights were trained with
            (out / "position_norm.json").write_text(json.dumps({"norm": PositionOracleCache.norm}))
    model, assets = build_model({"init": args.init if args.eval_only else str(out / "final")})
    model.eval()
    dcfg = stage["data"]
    cache = PositionOracleCache(model, ExampleEncoder(model, assets, dcfg, seed=args.seed))
    test = spread(load_qa_records(dcfg, split="test"), args.eval_limit)
    precompute(cache, test, "encode test frames", True)
    with torch.no_grad():
        res = frame_signal(model, cache, test, decode=True, train_recs=load_qa_records(dcfg, split="train"),
                           numeric_answers=args.numeric_answers)
    rows = res.pop("predictions")
    write_jsonl(rows, out / "predictions.jsonl")
    summary = {"args": vars(args), "norm": PositionOracleCache.norm, **res}
    (out / "oracle.json").write_text(json.dumps(summary, indent=1))
    (out / "oracle.md").write_text(format_table(res) + "\n\nmacro: " + json.dumps(res["macro"]) + "\n")
    print(format_table(res))
    print("macro:", json.dumps(res["macro"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
