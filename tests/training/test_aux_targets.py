"""Auxiliary grounding targets and heads (training/aux_targets.py, training/aux_heads.py) on real
data-engine scenes (112x84, depth + instance masks), checked against independent computations."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.aux_heads import AuxHeads, AuxTargetCache, aux_losses
from training.aux_targets import (CATEGORIES, CLASS_NAMES, MENTION_FIELDS, NUM_CLASSES, XYZ_SCALE, category_targets,
                                  mention_positions, mention_spans, scene_info, token_targets)
from training.grounding_questions import visible_instances
from training.semantic_pretrain import instance_classes, category_names
from training.semantic_pretrain import token_targets as semantic_token_targets


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from training.data.generate import GenerateConfig, generate_dataset

    root = tmp_path_factory.mktemp("aux")
    cfg = GenerateConfig(num_scenes=2, questions_per_scene=10, num_frames=12, width=112, height=84,
                         split_fractions=(1.0, 0.0, 0.0), save_depth=True, multispa_fraction=0.0)
    generate_dataset(root / "data", cfg, workers=1, progress=False)
    scene = sorted((root / "data" / "scenes" / "train").glob("*"))[0]
    frames = [0, 2, 3, 5, 7, 8, 10, 11]
    key = tuple(str(scene / "frames" / f"{f:06d}.jpg") for f in frames)
    return {"dir": scene, "frames": frames, "key": key, "root": root}


def _depth(scene: Path, f: int) -> np.ndarray:
    import cv2

    return cv2.imread(str(scene / "depth" / f"{f:06d}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0


def test_token_categories_match_the_semantic_stage_layout(scene):
    import cv2

    t = token_targets(scene["key"])
    assert t["tok_cat"].shape == (4 * 3 * 4, NUM_CLASSES) and t["tok_xyz"].shape == (48, 3)
    assert np.allclose(t["tok_cat"].sum(1), 1.0, atol=1e-5)
    table = instance_classes(scene["dir"] / "meta.json", category_names())
    maps = np.stack([table[cv2.imread(str(scene["dir"] / "instance" / f"{f:06d}.png"), cv2.IMREAD_UNCHANGED)]
                     for f in scene["frames"]])
    ref = semantic_token_targets(maps, NUM_CLASSES).numpy()
    assert np.allclose(t["tok_cat"], ref, atol=1e-5)
    assert (ref[:, 1:].sum(1) > 0.2).sum() >= 4  # the clip does show objects


def test_token_positions_are_in_the_first_sampled_camera(scene):
    """Tokens of the first temporal patch whose pixels all come from frame 0 would be plain
    unprojections; check the first token (frames 0 and 2 averaged) against a direct computation
    that goes world -> camera 0 without the module's code."""
    info = scene_info(str(scene["dir"]))
    kinv = np.linalg.inv(info["K"])
    pts = []
    for f in scene["frames"][:2]:
        d = _depth(scene["dir"], f)[:28, :28]
        v, u = np.mgrid[0:28, 0:28]
        cam = (np.stack([u + 0.5, v + 0.5, np.ones_like(u)], -1) @ kinv.T) * d[..., None]
        world = cam @ info["world_from_cam"][f][:3, :3].T + info["world_from_cam"][f][:3, 3]
        pts.append(world.reshape(-1, 3))
    world = np.concatenate(pts).mean(0)
    c0 = info["cam_from_world"][scene["frames"][0]]
    expected = (c0[:3, :3] @ world + c0[:3, 3]) / XYZ_SCALE
    got = token_targets(scene["key"])["tok_xyz"][0]
    assert np.allclose(got, expected, atol=1e-4)
    assert got[2] > 0  # in front of the first camera


def test_category_targets_agree_with_the_grounding_visibility(scene):
    first: dict[int, int] = {}
    vis = visible_instances(scene["dir"], scene["frames"], first_seen=first)
    meta = next(iter(json.loads((scene["dir"] / "meta.json").read_text()).values()))
    targets = category_targets(scene["key"])
    assert set(targets) == set(CATEGORIES)
    seen_any = False
    for cat in CATEGORIES:
        row = targets[cat]
        boxes = meta["object_bbox"].get(cat, [])
        ids = [b["instance_id"] for b in boxes if b["instance_id"] in vis]
        assert row[0] == float(bool(ids)), cat
        if not ids:
            assert np.isnan(row[1:]).all()
            continue
        seen_any = True
        assert row[1] == pytest.approx(len(ids) / 3.0)
        assert row[2] == pytest.approx(min(first[i] for i in ids) / 7.0)
        assert row[6] == pytest.approx(max(boxes[0]["axesLengths"]))
        c0 = scene_info(str(scene["dir"]))["cam_from_world"][scene["frames"][0]]
        centroid = np.mean([b["centroid"] for b in boxes], axis=0)
        assert np.allclose(row[3:6], (c0[:3, :3] @ centroid + c0[:3, 3]) / XYZ_SCALE, atol=1e-5)
    assert seen_any


def test_mentions_find_each_category_word_token():
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY_ASSETS_DIR / "tokenizer.json"))
    text = "How far is the washing machine from the chair(s)? A. trash bin B. bookshelf"
    spans = mention_spans(text)
    assert [s[2] for s in spans] == ["washing machine", "chair", "trash bin", "bookshelf"]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    pos = mention_positions(enc["offset_mapping"], spans)
    # each position is the last token of its name: it ends where the name ends
    assert [c for _, c in pos] == [s[2] for s in spans]
    assert [enc["offset_mapping"][p][1] for p, _ in pos] == [s[1] for s in spans]
    assert tok.convert_ids_to_tokens(enc["input_ids"][pos[0][0]]).lstrip("Ġ") == "machine"
    assert mention_spans("a cupboard and a boxer") == []  # whole words only


def test_aux_heads_fit_a_fixed_batch(scene):
    """The heads learn the targets of a fixed batch from fixed features (the losses can drop),
    and a batch's mention rows are the category targets of the record's frames."""
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY_ASSETS_DIR / "tokenizer.json"))
    cache = AuxTargetCache(tok)
    seen = [c for c, row in category_targets(scene["key"]).items() if row[0] == 1][:2]
    text = f"Where is the {seen[0]} relative to the {seen[-1]}?"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    aux = cache.batch([{"id": "q0"}], [scene["key"]], [text], [len(ids)])
    assert aux["men_y"].shape == (2, len(MENTION_FIELDS)) and torch.all(aux["men_y"][:, 0] == 1)
    torch.manual_seed(0)
    hidden = 16
    heads = AuxHeads(hidden, layer=1)
    fused = torch.randn(len(aux["tok_cat"]), hidden)
    states = tuple(torch.randn(1, len(ids), hidden) for _ in range(3))
    opt = torch.optim.Adam(heads.parameters(), lr=5e-2)
    first = None
    for _ in range(200):
        terms = aux_losses(heads, fused, states, aux)
        terms.pop("fields")
        loss = sum(terms.values())
        first = first if first is not None else {k: float(v.detach()) for k, v in terms.items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = {k: float(v) for k, v in aux_losses(heads, fused, states, aux).items() if k != "fields"}
    for k in ("token_xyz", "mention_reg", "room", "mention_seen"):
        assert last[k] < 0.2 * first[k] + 1e-3, (k, first[k], last[k])


def test_pair_targets_are_offsets_between_named_objects(scene):
    """One pair row per category word after the first, at that word's token: its centroid minus
    the first-named and the previous object's (x, z, 3-D distance), from the scene's own
    objects; a category the scene lacks gives NaN, which the loss leaves out; the head can fit."""
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
    from transformers import PreTrainedTokenizerFast
    from training.aux_heads import PAIR_FIELDS

    tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY_ASSETS_DIR / "tokenizer.json"))
    cats = category_targets(scene["key"])
    seen = [c for c, row in cats.items() if row[0] == 1][:3]
    absent = next(c for c, row in cats.items() if row[0] == 0)
    text = f"Standing by the {seen[0]} facing the {seen[1]}, is the {seen[2]} left or right of the {absent}?"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    aux = AuxTargetCache(tok).batch([{"id": "q1"}], [scene["key"]], [text], [len(ids)])
    assert aux["pair_y"].shape == (3, len(PAIR_FIELDS))
    assert aux["pair_pos"].tolist() == aux["men_pos"][1:].tolist()
    xyz = {c: cats[c][3:6] for c in seen}  # normalised centroids in the first camera
    d_first, d_prev = xyz[seen[2]] - xyz[seen[0]], xyz[seen[2]] - xyz[seen[1]]
    want = [d_first[0], d_first[2], np.linalg.norm(d_first), d_prev[0], d_prev[2], np.linalg.norm(d_prev)]
    np.testing.assert_allclose(aux["pair_y"][1].numpy(), want, rtol=1e-5, atol=1e-6)
    assert torch.isnan(aux["pair_y"][2]).all()  # the absent category: no target
    # the second-named object: its previous object is the first, so both halves agree
    np.testing.assert_allclose(aux["pair_y"][0, :3].numpy(), aux["pair_y"][0, 3:].numpy())

    torch.manual_seed(0)
    hidden = 16
    heads = AuxHeads(hidden, layer=1, pair_layer=2)
    fused = torch.randn(len(aux["tok_cat"]), hidden)
    states = tuple(torch.randn(1, len(ids), hidden) for _ in range(3))
    opt = torch.optim.Adam(heads.parameters(), lr=5e-2)
    losses = []
    for _ in range(200):
        loss = aux_losses(heads, fused, states, aux)["pair"]
        losses.append(float(loss))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(losses).all() and losses[-1] < 0.05 * losses[0] + 1e-4, (losses[0], losses[-1])
    assert "pair" not in aux_losses(AuxHeads(hidden, layer=1), fused, states, aux)  # off by default


def test_option_lines_and_in_order_steps_of_an_appearance_order_prompt(scene):
    """The layout finds each option line's last token and the categories inside each line; the
    in-order targets compare first sightings on the sampled frames (unseen or tied pairs skipped)."""
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
    from ros2_spatial_mllm.prompts import build_prompt
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY_ASSETS_DIR / "tokenizer.json"))
    targets = category_targets(scene["key"])
    seen = sorted((c for c, row in targets.items() if row[0] == 1), key=lambda c: targets[c][2])
    early, late = next((a, b) for a in seen for b in seen if targets[a][2] < targets[b][2])
    text = build_prompt(f"Which order: {early}, {late}?", [f"{late}, {early}", f"{early}, {late}"])
    rec = {"id": "q", "answer": "B"}
    cache = AuxTargetCache(tok)
    aux = cache.batch([rec], [scene["key"]], [text], [len(tok(text)["input_ids"])], torch.tensor([[4, 6, 8]]))
    lay = cache.layout("q", text)
    assert [c for _, c in lay["mentions"]] == [early, late, late, early, early, late]
    assert lay["lines"] == [[2, 3], [4, 5]]
    assert aux["opt_y"].tolist() == [0.0, 1.0]
    # each option line ends on its last category word
    assert aux["opt_pos"].tolist() == [lay["mentions"][3][0], lay["mentions"][5][0]]
    # option A lists late then early (out of order), option B early then late (in order)
    assert aux["ord_y"].tolist() == [0.0, 1.0]
    assert torch.allclose(aux["tok_time"], torch.tensor([t / 3 for t in range(4) for _ in range(12)]))


def test_mention_attention_loss_is_lowest_on_the_category_tokens(scene):
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
    from transformers import PreTrainedTokenizerFast

    from training.aux_heads import mention_attention_loss

    tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY_ASSETS_DIR / "tokenizer.json"))
    seen = [c for c, row in category_targets(scene["key"]).items() if row[0] == 1][0]
    text = "<|video_pad|>" * 48 + f" Is there a {seen}?"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    aux = AuxTargetCache(tok).batch([{"id": "q"}], [scene["key"]], [text], [len(ids)], torch.tensor([[4, 6, 8]]))
    length = len(ids)
    video = torch.zeros(1, length, dtype=torch.bool)
    video[0, :48] = True
    pos = int(aux["men_pos"][0])
    share = aux["tok_cat"][:, CLASS_NAMES.index(seen)]
    uniform = torch.full((1, 4, length, length), 1.0 / length)
    on_target = uniform.clone()
    for h, w in enumerate((share * torch.exp(-3.0 * aux["tok_time"]), share)):
        on_target[0, h, pos] = 0.0
        on_target[0, h, pos, :48] = w / w.sum()
    assert mention_attention_loss(on_target, aux, video) < mention_attention_loss(uniform, aux, video) - 1.0


def test_attention_capture_equals_the_layer_eager_attention(tmp_path):
    """The two recomputed heads match the probabilities eager attention computes for that layer
    (with padding in the batch and Qwen's 3-D rotary positions of a video prompt)."""
    from training.aux_heads import AttentionCapture
    from training.fixtures import tiny_assets_for_tests
    from training.model_io import build_model

    torch.manual_seed(0)
    model, _ = build_model({"init": "random", "assets_dir": str(tiny_assets_for_tests(tmp_path)), "seed": 1})
    capture = AttentionCapture(model, 1)
    seen = {}
    model.model.language_model.layers[1].self_attn.register_forward_hook(lambda m, a, o: seen.__setitem__("w", o[1]))
    video = int(model.config.video_token_id)
    ids = torch.tensor([[1, 5, video, video, video, video, 9, 11, 12], [1, 5, video, video, video, video, 9, 0, 0]])
    mask = (torch.arange(9)[None] < torch.tensor([[9], [7]])).long()
    mm = (ids == video).int() * 2
    fused = torch.randn(8, model.config.text_config.hidden_size)
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model.config.text_config._attn_implementation = "eager"
    model.model.language_model.config._attn_implementation = "eager"
    capture.mask = mask
    with torch.no_grad():
        model.model(input_ids=ids, attention_mask=mask, mm_token_type_ids=mm,
                    video_grid_thw=torch.tensor([[2, 2, 4], [2, 2, 4]]), second_per_grid_ts=torch.tensor([1.0, 1.0]),
                    mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(fused,))}, use_cache=False)
    eager = seen["w"][:, :2]
    recorded = capture.weights
    capture.mask = None  # not recording: another forward leaves nothing behind
    with torch.no_grad():
        model.model(input_ids=ids[:1, :7], attention_mask=mask[:1, :7], mm_token_type_ids=mm[:1, :7],
                    video_grid_thw=torch.tensor([[2, 2, 4]]), second_per_grid_ts=torch.tensor([1.0]),
                    mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(fused[:4],))}, use_cache=False)
    assert capture.weights is None
    capture.weights = recorded
    assert capture.weights.shape == eager.shape
    real = mask.bool()
    assert torch.allclose(capture.weights[0], eager[0], atol=1e-5)
    assert torch.allclose(capture.weights[1][:, real[1]][:, :, real[1]], eager[1][:, real[1]][:, :, real[1]], atol=1e-5)


def test_frame_cache_holds_every_frame_of_the_default_data():
    # cached SFT draws random rooms; a cache smaller than the data set rebuilds frames from PNGs
    # over and over (a quarter of each step with the former 4,096)
    from training.aux_targets import frame_blocks
    from training.trainer_utils import load_config

    gen = load_config("training/configs/tiny_default.yaml")["data"]["generate"]
    assert frame_blocks.cache_info().maxsize >= gen["num_scenes"] * gen["num_frames"]
