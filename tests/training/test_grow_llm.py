"""Fine-tuning from a trained checkpoint: model.llm_grow_to (training/model_io.grow_llm) and
the frozen-encoder fingerprint of the shipped weights."""
import torch

from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
from training.model_io import build_model


def test_grown_llm_computes_the_same_function_and_its_new_layers_train():
    base, _ = build_model({"init": str(TINY_ASSETS_DIR)})
    layers = base.config.text_config.num_hidden_layers
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    grown, assets = build_model({"init": str(TINY_ASSETS_DIR), "llm_grow_to": layers + 2, "seed": 1})
    assert torch.equal(torch.rand(3), expected_next)  # growing leaves the caller's RNG stream alone
    assert assets == TINY_ASSETS_DIR
    assert grown.config.text_config.num_hidden_layers == layers + 2
    assert len(grown.config.text_config.layer_types) == layers + 2
    # every trained tensor is carried over bit-equal
    old = base.state_dict()
    for name, tensor in grown.state_dict().items():
        if name in old:
            assert torch.equal(tensor, old[name]), name
        else:
            assert f"language_model.layers.{layers}." in name or f"language_model.layers.{layers + 1}." in name, name
    ids = torch.randint(10, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(base(input_ids=ids).logits, grown(input_ids=ids).logits)
    # the new layers' output projections start at zero and are the first to receive gradient
    new = grown.model.language_model.layers[layers]
    assert not new.self_attn.o_proj.weight.any() and not new.mlp.down_proj.weight.any()
    assert new.self_attn.q_proj.weight.abs().sum() > 0  # the rest is the seeded random init
    loss = grown(input_ids=ids, labels=ids).loss
    loss.backward()
    assert new.mlp.down_proj.weight.grad.abs().sum() > 0 and new.self_attn.o_proj.weight.grad.abs().sum() > 0


def test_growth_is_idempotent_and_refuses_what_it_cannot_do(tmp_path):
    """A later stage handed the grown checkpoint keeps it (the recipe's llm_overrides included);
    shrinking and growing a random model are errors."""
    import pytest

    from training.checkpointing import save_model_files

    grown, assets = build_model({"init": str(TINY_ASSETS_DIR), "llm_grow_to": 6})
    save_model_files(grown, tmp_path / "grown", assets)
    again, _ = build_model({"init": str(tmp_path / "grown"), "llm_grow_to": 6, "llm_overrides": {"num_hidden_layers": 4}})
    assert again.config.text_config.num_hidden_layers == 6
    for name, tensor in grown.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="already has 6 layers"):
        build_model({"init": str(tmp_path / "grown"), "llm_grow_to": 5})
    with pytest.raises(ValueError, match="trained LLM"):
        build_model({"init": "random", "llm_grow_to": 6})


def test_shipped_model_has_an_encoder_fingerprint():
    """The shipped spatial encoder holds a 0-d tensor (the pair-pose head's log temperature);
    fine-tuning from the shipped weights fingerprints its frozen encoders. The head changes the
    cameras, not the cached tokens: the store's fingerprint leaves it out (so the polish stage
    reads the SFT stage's store, made before the head existed), the geometry fingerprint of the
    frame picks counts it."""
    from training.feature_store import encoder_fingerprint
    from training.trainer_utils import state_dict_hash

    model, _ = build_model({"init": str(TINY_ASSETS_DIR)})
    scalar = model.spatial_encoder.vggt_model.pair_pose_head.log_temperature
    assert scalar.dim() == 0
    tokens, full = encoder_fingerprint(model), encoder_fingerprint(model, tokens_only=False)
    whole = state_dict_hash(model)
    with torch.no_grad():
        scalar.add_(1e-3)
    assert encoder_fingerprint(model, tokens_only=False) != full and state_dict_hash(model) != whole
    assert encoder_fingerprint(model) == tokens
    # the model as the SFT stage left it (no head, config without one) keys the same store entries
    model.config.spatial_config.pair_pose_head = False
    model.spatial_encoder.vggt_model.pair_pose_head = None
    assert encoder_fingerprint(model) == tokens
    # and without a head both fingerprints agree: stores keyed before the head was left out stay valid
    assert encoder_fingerprint(model, tokens_only=False) == tokens
    with torch.no_grad():  # any tensor that feeds the tokens still counts
        next(model.spatial_encoder.parameters()).view(-1)[0] += 1e-3
    assert encoder_fingerprint(model) != tokens


def test_fresh_llm_on_shipped_encoders_only_in_the_first_stage(tmp_path):
    """model.fresh_llm reruns the language stages on trained encoders: the 2D tower and the
    spatial encoder stay bit-equal, connector and LLM are the seeded fresh ones, and the stages
    after the first keep what the first trained."""
    from ros2_spatial_mllm.model.checkpoint import load_checkpoint
    from training.pipeline import _stage_cfg

    shipped = load_checkpoint(TINY_ASSETS_DIR)[0].state_dict()
    fresh, _ = build_model({"init": str(TINY_ASSETS_DIR), "fresh_llm": True, "llm_overrides": {"num_hidden_layers": 4}})
    again, _ = build_model({"init": str(TINY_ASSETS_DIR), "fresh_llm": True, "llm_overrides": {"num_hidden_layers": 4}})
    state = fresh.state_dict()
    assert set(state) == set(shipped) and fresh.config.text_config.num_hidden_layers == 4
    for name, tensor in state.items():
        if name.startswith(("model.visual.", "spatial_encoder.")):
            assert torch.equal(tensor, shipped[name]), name
        assert torch.equal(tensor, again.state_dict()[name]), name  # seeded
    changed = [n for n in state if n.startswith(("model.language_model.", "connector.")) and
               state[n].dtype.is_floating_point and not torch.equal(state[n], shipped[n])]
    assert any(n.startswith("connector.") for n in changed) and any("layers.3." in n for n in changed)
    cfg = {"model": {"init": str(TINY_ASSETS_DIR), "fresh_llm": True}, "align": {}, "cached_sft": {}}
    assert _stage_cfg(cfg, "align", tmp_path, str(TINY_ASSETS_DIR))["model"]["fresh_llm"] is True
    assert "fresh_llm" not in _stage_cfg(cfg, "cached_sft", tmp_path, str(tmp_path / "align" / "final"))["model"]


def test_wider_llm_keeps_what_the_frozen_2d_merger_writes(tmp_path):
    """llm_overrides.hidden_size on trained encoders: the merger's output becomes an isometric
    image of the trained one (norms and inner products of the tokens equal), the spatial encoder
    and the rest of the 2D tower stay bit-equal, and the wider model saves and loads as an
    ordinary checkpoint; a narrower LLM is refused."""
    import pytest

    from ros2_spatial_mllm.model.checkpoint import load_checkpoint
    from training.checkpointing import save_model_files

    base, _ = build_model({"init": str(TINY_ASSETS_DIR)})
    wide_sizes = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 8, "num_key_value_heads": 4}
    wide, assets = build_model({"init": str(TINY_ASSETS_DIR), "llm_overrides": wide_sizes, "seed": 3})
    assert wide.config.text_config.hidden_size == 128 and wide.config.vision_config.out_hidden_size == 128
    old, new = base.state_dict(), wide.state_dict()
    merger_out = "model.visual.merger.mlp.2."
    for name, tensor in new.items():
        if name.startswith(("model.visual.", "spatial_encoder.")) and not name.startswith(merger_out):
            assert torch.equal(tensor, old[name]), name
    pixels = torch.rand(2 * 2 * 6 * 8, old["model.visual.patch_embed.proj.weight"][0].numel())
    grid = torch.tensor([[2, 6, 8]] * 2)
    with torch.no_grad():
        narrow_tokens = base.video_embeds(pixels, grid)  # [N, 64]
        wide_tokens = wide.video_embeds(pixels, grid)    # [N, 128]
    assert wide_tokens.shape == (narrow_tokens.shape[0], 128)
    torch.testing.assert_close(wide_tokens @ wide_tokens.T, narrow_tokens @ narrow_tokens.T, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(wide_tokens[:, :64], narrow_tokens, atol=1e-3)  # rotated, not padded
    save_model_files(wide, tmp_path / "wide", assets)
    loaded, report = load_checkpoint(tmp_path / "wide")
    assert report.ok, report.summary()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, new[name]), name
    with pytest.raises(ValueError, match="hidden_size 32 < 64"):
        build_model({"init": str(TINY_ASSETS_DIR), "llm_overrides": {"hidden_size": 32}})
