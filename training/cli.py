"""spatial-mllm-train: every training stage behind one command.

    spatial-mllm-train STAGE --config training/configs/X.yaml [--set key.sub=value ...]
    # tiny CPU run of the whole default pipeline on a self-made fixture (about a minute):
    spatial-mllm-train default --config training/configs/tiny_smoke.yaml

Stages: geometry (spatial-encoder pre-training), pair-pose (the tiny spatial encoder's
relative-pose head on its frozen tokens), semantic (2D-tower pre-training on the
renderer's instance masks), sft, cached-sft (frozen encoders, cached visual tokens), grpo, curriculum, default (geometry ->
SFT -> optional GRPO -> evaluation -> export of the tiny weights). Multi-process: the same
command under `torchrun --nproc_per_node N -m training.cli ...` or `accelerate launch
--config_file training/configs/accelerate_ddp.yaml -m training.cli ...` (see
training/configs/README.md). Errors: one line on stderr, exit code 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

STAGES = ("geometry", "pair-pose", "semantic", "sft", "cached-sft", "grpo", "curriculum", "default", "fixture")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatial-mllm-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES, help="which stage to run")
    parser.add_argument("--config", required=False, help="YAML config of the stage (training/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set sft.max_steps=20 (repeatable)")
    parser.add_argument("--output-dir", help="shortcut for --set output_dir=DIR")
    parser.add_argument("--resume", help="'auto' (latest checkpoint in output_dir) or a checkpoint directory")
    parser.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def run(args: argparse.Namespace) -> dict:
    from training.trainer_utils import load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.resume:
        overrides.append(f"resume={args.resume}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(args.config, overrides)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.stage == "geometry":
        from training.geometry_pretrain import run_geometry
        return run_geometry(cfg)
    if args.stage == "pair-pose":
        from training.pair_pose import run_pair_pose
        return run_pair_pose(cfg)
    if args.stage == "semantic":
        from training.semantic_pretrain import run_semantic
        return run_semantic(cfg)
    if args.stage == "cached-sft":  # cached_section: the block it reads (the pipeline's align / polish)
        from training.cached_sft import run_cached_sft
        return run_cached_sft(cfg, section=str(cfg.get("cached_section", "cached_sft")))
    if args.stage == "sft":
        from training.sft import run_sft
        return run_sft(cfg)
    if args.stage == "grpo":
        from training.grpo import run_grpo
        return run_grpo(cfg)
    if args.stage == "curriculum":
        from training.curriculum import run_curriculum
        return run_curriculum(cfg)
    if args.stage == "fixture":
        from training.fixtures import make_geometry_fixture, make_qa_fixture
        out = cfg.get("data", {}).get("root") or cfg.get("output_dir", "runs/fixture")
        make_qa_fixture(out, n_scenes=int(cfg.get("fixture", {}).get("scenes", 6)), seed=int(cfg.get("seed", 0)))
        make_geometry_fixture(out, n_clips=int(cfg.get("fixture", {}).get("clips", 4)), seed=int(cfg.get("seed", 0)))
        return {"fixture": str(out)}
    from training.pipeline import run_default
    return run_default(cfg)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("spatial-mllm-train: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # CLI contract: one line, no traceback
        if args.debug:
            raise
        print(f"spatial-mllm-train {args.stage}: error: {type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: str(v) if not isinstance(v, (int, float, bool, dict, list)) else v
                          for k, v in (result or {}).items()}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
