"""Model presets (one code path): `official` (Qwen2.5-VL-3B + VGGT-1B sizes) and `tiny`.

Write the tiny preset's files (tokenizer, chat template, processor configs, config.json, seeded
random weights) into a directory, deterministically; the training package starts from them:

    python -m ros2_spatial_mllm.model.presets --write-tiny-assets --out DIR [--seed 0]

The package's own ros2_spatial_mllm/assets/tiny holds the trained default instead (same tokenizer
and processor files; weights and config.json from `spatial-mllm-train default --config
training/configs/tiny_default.yaml`, whose LLM is 4 layers deep), so --out is required.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

from .config import SpatialMLLMConfig, spatial_config_from_vggt_config
from .vggt.config import VGGTConfig

__all__ = ["PRESETS", "TINY_ASSETS_DIR", "official_config", "tiny_config", "preset_config", "build_model"]

TINY_ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny"
PRESETS = ("official", "tiny")

# Qwen2.5-VL special token ids (official vocabulary)
QWEN_TOKEN_IDS = dict(
    bos_token_id=151643,
    eos_token_id=151645,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    image_token_id=151655,
    video_token_id=151656,
)


def official_config() -> SpatialMLLMConfig:
    """Qwen2.5-VL-3B-Instruct sizes + VGGT-1B spatial encoder + mlp_add connector (16384 wide)."""
    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=2048,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
        hidden_act="silu",
    )
    text = dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        max_position_embeddings=128000,
        max_window_layers=70,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        bos_token_id=QWEN_TOKEN_IDS["bos_token_id"],
        eos_token_id=QWEN_TOKEN_IDS["eos_token_id"],
    )
    ids = {k: v for k, v in QWEN_TOKEN_IDS.items() if k not in ("bos_token_id", "eos_token_id")}
    return SpatialMLLMConfig(
        vision_config=vision,
        text_config=text,
        spatial_config=spatial_config_from_vggt_config(VGGTConfig.official()),
        connector_config={"connector_type": "mlp_add", "spatial_embeds_layer_idx": -1},
        tie_word_embeddings=True,
        **ids,
    )


def tiny_config(vocab_size: int = 3072, token_ids: Optional[dict] = None,
                spatial_overrides: Optional[dict] = None) -> SpatialMLLMConfig:
    """A few million parameters: 2-block ViT (32 wide), 2-layer LLM (64 wide), VGGTConfig.tiny();
    weights initialised with std 1/sqrt(width).

    token_ids: special token ids of the tiny tokenizer (keys as QWEN_TOKEN_IDS); defaults to the
    ids written by `tiny_tokenizer.train_tiny_tokenizer` (specials first, in Qwen's order).
    spatial_overrides: VGGTConfig.tiny fields to change (e.g. {"embed_dim": 128}); the connector
    follows the spatial encoder's width."""
    from .tiny_tokenizer import TINY_SPECIAL_IDS

    ids = dict(token_ids or TINY_SPECIAL_IDS)
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
        hidden_act="silu",
        initializer_range=32**-0.5,
    )
    text = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],
        pad_token_id=ids["bos_token_id"],
        # 1/sqrt(width): Qwen's 0.02 is sized for 2048-wide layers; at width 64 it shrinks every
        # layer's output ~6x and the tiny LLM then plateaus on questions that need the frames
        initializer_range=64**-0.5,
    )
    return SpatialMLLMConfig(
        vision_config=vision,
        text_config=text,
        spatial_config=spatial_config_from_vggt_config(VGGTConfig.tiny(**(spatial_overrides or {}))),
        connector_config={"connector_type": "mlp_add", "spatial_embeds_layer_idx": -1},
        tie_word_embeddings=True,
        **{k: v for k, v in ids.items() if k not in ("bos_token_id", "eos_token_id")},
    )


def preset_config(preset: str) -> SpatialMLLMConfig:
    if preset == "official":
        return official_config()
    if preset == "tiny":
        return tiny_config()
    raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")


def build_model(config: SpatialMLLMConfig | str, device: str | torch.device = "cpu", seed: Optional[int] = 0):
    """Random-initialised SpatialMLLMForConditionalGeneration (device="meta" allocates nothing)."""
    from .spatial_mllm import SpatialMLLMForConditionalGeneration

    if isinstance(config, str):
        config = preset_config(config)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device):
        model = SpatialMLLMForConditionalGeneration(config)
    return model.eval()


def write_tiny_assets(out_dir: Path, seed: int = 0) -> Path:
    """Tokenizer + chat template + processor configs + config.json + seeded weights -> out_dir."""
    from .checkpoint import save_checkpoint
    from .tiny_tokenizer import write_tokenizer_files

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size, token_ids = write_tokenizer_files(out_dir)
    config = tiny_config(vocab_size=vocab_size, token_ids=token_ids)
    model = build_model(config, device="cpu", seed=seed)
    save_checkpoint(model, out_dir)
    return out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-tiny-assets", action="store_true", help="regenerate the tiny preset's files")
    parser.add_argument("--out", type=Path, help="output directory (required: the package's assets/tiny holds the "
                        "trained default, not these random weights)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random tiny weights")
    args = parser.parse_args(argv)
    if not args.write_tiny_assets:
        parser.print_usage(sys.stderr)
        print("error: nothing to do (use --write-tiny-assets)", file=sys.stderr)
        return 2
    if args.out is None:
        print("error: --out DIR is required (the package's assets/tiny holds the trained default)", file=sys.stderr)
        return 2
    try:
        out = write_tiny_assets(args.out, args.seed)
    except Exception as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote tiny assets to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
