"""Cached-feature SFT, the frame-signal probe and the 2D tower's semantic pre-training, on a
few real data-engine scenes (112x84, 8 frames, instance masks) and the tiny preset."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.cached_sft import batch_records, run_cached_sft, select_records
from training.feature_cache import VisualFeatureCache, cached_answer_loss, cached_forward
from training.fixtures import tiny_assets_for_tests
from training.frame_signal import frame_signal, shuffled_keys, spread
from training.model_io import ExampleEncoder, build_model
from training.qa_records import load_qa_records
from training.semantic_pretrain import SemanticClips, run_semantic, token_targets
from training.sft import answer_token_loss, collate
from training.trainer_utils import state_dict_hash


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from training.data.generate import GenerateConfig, generate_dataset

    root = tmp_path_factory.mktemp("cached")
    cfg = GenerateConfig(num_scenes=5, questions_per_scene=12, num_frames=8, width=112, height=84,
                         split_fractions=(0.6, 0.4, 0.0), save_depth=True, multispa_fraction=0.25)
    generate_dataset(root / "data", cfg, workers=1, progress=False)
    return {"root": root, "assets": str(tiny_assets_for_tests(root)), "data": str(root / "data")}


def _model(setup, seed=0):
    model, assets = build_model({"init": "random", "assets_dir": setup["assets"], "seed": seed})
    return model, assets


def test_cached_forward_equals_the_pixel_forward(setup):
    model, assets = _model(setup)
    model.eval()
    dcfg = {"root": setup["data"], "num_frames": 4}
    recs = load_qa_records(dcfg, "train")
    recs = [next(r for r in recs if r.get("family") == "multispa"), next(r for r in recs if r.get("family") != "multispa")]
    enc = ExampleEncoder(model, assets, dcfg)
    cache = VisualFeatureCache(model, enc)
    with torch.no_grad():
        for rec in recs:  # one at a time: 1-2 frame and 4 frame questions do not stack as pixels
            ref_batch = collate([enc.encode_sft(rec)], enc.pad_id)
            ref = model(**{k: v for k, v in ref_batch.items() if k != "labels"}, use_cache=False).logits
            got_batch = cache.batch([rec])
            assert torch.equal(got_batch["input_ids"], ref_batch["input_ids"])
            assert torch.equal(got_batch["labels"], ref_batch["labels"])
            assert torch.allclose(cached_forward(model, got_batch), ref, atol=1e-5)
        # mixed frame counts do batch on cached features; the answer-only head gives the same loss
        mixed = cache.batch(recs)
        full, _ = answer_token_loss(cached_forward(model, mixed), mixed["labels"])
        fast, metrics = cached_answer_loss(model, mixed)
    assert torch.allclose(full, fast, atol=1e-5)
    assert metrics["answer_tokens"] == float((mixed["labels"] != -100).sum())


def test_stacked_encoding_is_bit_identical_to_one_set_at_a_time(setup):
    from training.qa_records import choose_frames, frame_paths

    model, assets = _model(setup)
    dcfg = {"root": setup["data"], "num_frames": 4, "frame_sampling": "mixed"}
    recs = load_qa_records(dcfg, "train")
    one = VisualFeatureCache(model, ExampleEncoder(model, assets, dcfg))
    keys = list(dict.fromkeys(one.frame_key(r) for r in recs))
    for r in recs:  # the per-video path memo gives the keys built from scratch
        paths = frame_paths(r, dcfg)
        assert one.frame_key(r) == tuple(str(paths[i]) for i in choose_frames(len(paths), 4, "mixed", r, dcfg))
    assert len({len(k) for k in keys}) > 1 and len(keys) > 6  # MultiSPA pairs and 4-frame videos
    for k in keys:
        one.visual(k)
    many = VisualFeatureCache(model, ExampleEncoder(model, assets, dcfg))
    model.train()
    passes = []
    assert many.encode_many(keys + keys[:2], batch_size=3, on_batch=passes.append) == len(keys)
    assert not model.training  # encoders run in eval mode, as visual() runs them
    assert sum(passes) == len(keys) and max(passes) == 3
    for k in keys:
        for name in ("video", "spatial", "grid", "second_per_grid_ts"):
            assert torch.equal(one.features[k][name], many.features[k][name]), (k, name)
        assert many.features[k]["video"].untyped_storage().nbytes() == many.features[k]["video"].nbytes
    assert many.encode_many(keys) == 0

    class Edited(VisualFeatureCache):  # as the oracle probe's cache: tokens edited in visual()
        def visual(self, key):
            if key not in self.features:
                super().visual(key)["video"] += 1.0
            return self.features[key]

    edited = Edited(model, ExampleEncoder(model, assets, dcfg))
    assert edited.encode_many(keys[:3]) == 3
    assert all(torch.equal(edited.features[k]["video"], one.features[k]["video"] + 1.0) for k in keys[:3])


def test_shuffled_frames_come_from_another_scene_with_the_same_frame_count(setup):
    model, assets = _model(setup)
    dcfg = {"root": setup["data"], "num_frames": 4}
    recs = load_qa_records(dcfg, "train")
    cache = VisualFeatureCache(model, ExampleEncoder(model, assets, dcfg))
    own = [cache.frame_key(r) for r in recs]
    shuf = shuffled_keys(recs, cache)
    scene_of = {k: r["scene_id"] for k, r in zip(own, recs)}
    assert all(len(a) == len(b) for a, b in zip(own, shuf))
    for r, a, b in zip(recs, own, shuf):
        partner = any(len(k) == len(a) and scene_of[k] != r["scene_id"] for k in own)
        assert (scene_of[b] != r["scene_id"]) == partner  # own frames only when no other scene fits
    assert sum(scene_of[b] != r["scene_id"] for r, b in zip(recs, shuf)) > len(recs) // 2
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 0) == [1, 2]
    res = frame_signal(model, cache, recs[:6])
    assert res["overall"]["n"] == 6 and np.isfinite(res["overall"]["gap"])


def test_decoded_frame_signal_rows_pair_with_training_eval_compare(setup, tmp_path):
    from training.data.dataset import write_jsonl
    from training.eval.compare import compare, load_predictions
    from training.eval.scorer import aggregate

    model, assets = _model(setup)
    dcfg = {"root": setup["data"], "num_frames": 4}
    recs = load_qa_records(dcfg, "train")[:8]
    cache = VisualFeatureCache(model, ExampleEncoder(model, assets, dcfg))
    res = frame_signal(model, cache, recs, decode=True)
    rows = res["predictions"]
    assert [r["id"] for r in rows] == [str(r["id"]) for r in recs]
    assert all(0.0 <= r["score"] <= 1.0 and isinstance(r["prediction"], str) for r in rows)
    # the rows are what the macro was computed from
    assert res["macro"]["true"]["vsibench"] == aggregate(rows)["vsibench"]["overall"]
    for t, row in aggregate(rows)["tasks"].items():
        assert res["tasks"][t]["score_true"] == row["score"]
    write_jsonl(rows, tmp_path / "predictions.jsonl")
    loaded = load_predictions(tmp_path)
    assert len(loaded) == len(rows)
    same = compare(loaded, loaded, rounds=50)
    assert all(t["diff"] == 0.0 for t in same["tasks"].values())


def test_batches_are_a_pure_function_of_the_step():
    a = batch_records(10, 4, seed=1, step=3)
    assert a == batch_records(10, 4, seed=1, step=3)
    first_epoch = sum((batch_records(10, 5, seed=1, step=s) for s in range(2)), [])
    assert sorted(first_epoch) == list(range(10))  # an epoch visits every record once


def test_select_records_filters_tasks_and_repeats_families():
    rows = [{"id": "v1", "task_type": "object_counting"}, {"id": "v2", "task_type": "room_size_estimation"},
            {"id": "g1", "task_type": "grounding_presence", "family": "grounding"},
            {"id": "g2", "task_type": "grounding_caption", "family": "grounding"}]
    ids = lambda cfg: [r["id"] for r in select_records(rows, cfg)]  # noqa: E731
    assert ids({}) == ["v1", "v2", "g1", "g2"]
    assert ids({"only_tasks": ["grounding_caption", "object_counting"]}) == ["v1", "g2"]
    assert ids({"skip_tasks": ["object_counting"], "skip_families": ["grounding"]}) == ["v2"]
    assert ids({"repeat_families": {"grounding": 3}, "skip_tasks": ["grounding_caption"]}) == ["v1", "v2", "g1", "g1", "g1"]
    assert ids({"repeat_families": {"vsibench": 0}}) == ["g1", "g2"]  # 0 drops a family
    # a task's own count replaces its family's
    assert ids({"repeat_families": {"grounding": 2}, "repeat_tasks": {"grounding_caption": 1, "object_counting": 3}}) \
        == ["v1", "v1", "v1", "v2", "g1", "g1", "g2"]


def test_cached_sft_trains_connector_and_llm_only(setup, tmp_path):
    init = tmp_path / "init"
    model, assets = _model(setup, seed=2)
    from training.checkpointing import save_model_files

    save_model_files(model, init, assets)
    enc_hash = state_dict_hash(torch.nn.ModuleList([model.model.visual, model.spatial_encoder]))
    conn_hash = state_dict_hash(model.connector)
    cfg = {"seed": 0, "output_dir": str(tmp_path / "out"),
           "model": {"init": str(init), "assets_dir": setup["assets"]},
           "data": {"root": setup["data"], "num_frames": 4},
           "cached_sft": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "eval_every": 3,
                          "eval_limit": 8, "lr": {"connector": 1e-2, "llm": 1e-2}}}
    result = run_cached_sft(cfg)
    trained, _ = build_model({"init": str(result["final_dir"]), "assets_dir": setup["assets"]})
    assert state_dict_hash(torch.nn.ModuleList([trained.model.visual, trained.spatial_encoder])) == enc_hash
    assert state_dict_hash(trained.connector) != conn_hash
    assert (tmp_path / "out" / "signal.json").is_file() and result["signal"]["n"] > 0


def test_token_targets_follow_qwen_merged_order():
    maps = np.zeros((2, 28, 56), np.int64)
    maps[0, :, 28:] = 3          # right block of the first frame only: half of that token's pixels
    t = token_targets(maps, num_classes=4)
    assert t.shape == (2, 4)     # (t=1) x (1 x 2 blocks)
    assert torch.allclose(t[0], torch.tensor([1.0, 0, 0, 0]))
    assert torch.allclose(t[1], torch.tensor([0.5, 0, 0, 0.5]))


def test_semantic_stage_trains_the_2d_tower_only(setup, tmp_path):
    clips = SemanticClips(setup["data"], "train", frames=4)
    frames, classes = clips.clip(0, 0.5)
    assert frames.shape[:3] == classes.shape and classes.max() > 0  # objects are labelled
    init = tmp_path / "init"
    model, assets = _model(setup, seed=1)
    from training.checkpointing import save_model_files

    save_model_files(model, init, assets)
    llm_hash = state_dict_hash(model.model.language_model)
    vis_hash = state_dict_hash(model.model.visual)
    cfg = {"seed": 0, "output_dir": str(tmp_path / "sem"), "model": {"init": str(init), "assets_dir": setup["assets"]},
           "data": {"root": setup["data"]}, "semantic": {"frames": 4, "scenes_per_batch": 2, "max_steps": 2,
                                                          "warmup_steps": 1, "log_every": 1}}
    result = run_semantic(cfg)
    trained, _ = build_model({"init": str(result["final_dir"]), "assets_dir": setup["assets"]})
    assert state_dict_hash(trained.model.language_model) == llm_hash
    assert state_dict_hash(trained.model.visual) != vis_hash
    assert np.isfinite(result["last_metrics"]["loss"])


def test_grounding_questions_are_answered_by_the_sampled_frames(setup):
    import re

    from training.data import spatial_gt as gt
    from training.data.meta_info import SceneMeta
    from training.grounding_questions import RELATION_CYCLE, visible_instances, write_grounding

    with pytest.raises(ValueError, match="nearest_of_two"):
        write_grounding(setup["data"], "train", kinds=("presence", "nearest_of_two"))
    out = write_grounding(setup["data"], "train", k=4, per_scene=16, kinds=RELATION_CYCLE)
    rows = [json.loads(line) for line in open(out)]
    kinds = {r["task_type"] for r in rows}
    assert {"grounding_presence", "grounding_visible_count", "grounding_caption", "grounding_first_of_two",
            "grounding_closer_of_two"} <= kinds <= {"grounding_presence", "grounding_visible_count", "grounding_caption",
                                                     "grounding_first_of_two", "grounding_closer_of_two",
                                                     "grounding_appearance_order"}
    for r in rows:
        assert len(r["frame_indices"]) == 4
        scene = Path(setup["data"]) / "scenes" / "train" / r["scene_id"]
        name, meta = next(iter(json.loads((scene / "meta.json").read_text()).items()))
        first_seen: dict[int, int] = {}
        seen = set(visible_instances(scene, r["frame_indices"], first_seen=first_seen))

        def ids(cat):
            return {int(b["instance_id"]) for b in meta["object_bbox"].get(cat, [])}

        def first(cat):  # position of the category's first sampled frame
            return min(first_seen[i] for i in ids(cat) & seen)

        picked = dict(o.split(". ", 1) for o in r["options"]).get(r["answer"])
        if r["task_type"] == "grounding_caption":
            assert r["answer_text"] and r["answer_text"] == r["answer"]
            listed = r["answer"].split(", ")
            assert [first(c) for c in listed] == sorted(first(c) for c in listed)
        elif r["task_type"] == "grounding_presence":
            cat = r["question"].split(" a ", 1)[-1].split(" in this")[0]
            assert (r["answer"] == "A") == bool(ids(cat) & seen)
        elif r["task_type"] == "grounding_visible_count":
            cat = r["question"][len("How many "):].split(" instances")[0]
            assert int(r["answer"]) == len(ids(cat) & seen) > 0
        elif r["task_type"] == "grounding_first_of_two":
            a, b = re.match(r"Which appears first in this video, the (.+) or the (.+)\?", r["question"]).groups()
            assert first(picked) < first(b if picked == a else a)
        elif r["task_type"] == "grounding_closer_of_two":
            x, a, b = re.search(r"closer to the (.+), the (.+) or the (.+)\?", r["question"]).groups()
            boxes = SceneMeta.from_json(name, meta).objects
            dist = {c: gt.category_distance(boxes[x], boxes[c]) for c in (a, b)}
            assert dist[picked] + 0.15 <= dist[b if picked == a else a]
            assert ids(x) & seen and ids(a) & seen and ids(b) & seen
        else:  # appearance order of four categories on these frames
            assert [first(c) for c in picked.split(", ")] == sorted(first(c) for c in picked.split(", "))


def test_default_pipeline_with_semantic_and_cached_sft(setup, tmp_path):
    from training.pipeline import run_default
    from training.trainer_utils import load_config

    cfg = load_config("training/configs/tiny_frames.yaml", [
        f"output_dir={tmp_path / 'pipe'}", "export.dir=", f"data.root={setup['data']}", "data.num_frames=4",
        f"model.assets_dir={setup['assets']}", "geometry.max_steps=1", "geometry.frames=2", "semantic.max_steps=1",
        "semantic.frames=4", "cached_sft.max_steps=2", "cached_sft.eval_every=2", "cached_sft.eval_limit=4",
        "cached_sft.save_every=0", "align.max_steps=2", "align.eval_every=2", "align.eval_limit=2",
        "align.save_every=0", "eval.split=val", "eval.limit=3", "eval.num_frames=4", "eval.max_new_tokens=4"])
    result = run_default(cfg)
    assert result["final_dir"].endswith("cached_sft/final")
    for stage in ("geometry", "semantic", "align", "cached_sft"):
        assert (tmp_path / "pipe" / stage / "final" / "config.json").is_file()
    assert (tmp_path / "pipe" / "report.md").is_file()
    rows = [json.loads(line) for line in open(Path(setup["data"]) / "grounding_train.jsonl")]
    assert {r["task_type"] for r in rows} == {"grounding_presence", "grounding_visible_count", "grounding_caption"}
    assert json.loads((Path(setup["data"]) / "grounding.json").read_text())["kinds"][-1] == "caption"


def test_feature_store_round_trips_and_keys_on_the_frozen_encoders(setup, tmp_path):
    from training.cached_sft import precompute
    from training.feature_store import FeatureStore, encoder_fingerprint

    model, assets = _model(setup)
    dcfg = {"root": setup["data"], "num_frames": 4}
    enc = ExampleEncoder(model, assets, dcfg)
    recs = load_qa_records(dcfg, split="train")[:10]
    fp = encoder_fingerprint(model, enc.video_cfg)
    first = VisualFeatureCache(model, enc)
    stats = precompute(first, recs, "encode", False, FeatureStore(tmp_path, fp))
    assert stats["from_store"] == 0 and stats["encoded"] == stats["frame_sets"] > 0
    # a second stage (fresh cache, store reopened from disk) reads every entry back bit-equal
    second = VisualFeatureCache(model, enc)
    reopened = FeatureStore(tmp_path, fp)
    assert len(reopened) == stats["frame_sets"]
    again = precompute(second, recs, "encode", False, reopened)
    assert again == {"frame_sets": stats["frame_sets"], "from_store": stats["frame_sets"], "encoded": 0}
    for key, entry in first.features.items():
        for field, t in entry.items():
            assert torch.equal(second.features[key][field], t), field
    # an LLM of another depth on the same encoders reads the same store
    from training.model_io import _resize_llm

    deeper = _resize_llm(model, {"num_hidden_layers": 3}, seed=1)
    assert deeper.config.text_config.num_hidden_layers == 3 and len(deeper.model.language_model.layers) == 3
    assert encoder_fingerprint(deeper, enc.video_cfg) == fp
    # training the connector / LLM keeps the store; any change to a frozen encoder leaves it
    with torch.no_grad():
        model.connector.mlp[2].weight.add_(1.0)
        assert encoder_fingerprint(model, enc.video_cfg) == fp
        next(model.spatial_encoder.parameters()).view(-1)[0] += 1e-3
        assert encoder_fingerprint(model, enc.video_cfg) != fp
    assert len(FeatureStore(tmp_path, encoder_fingerprint(model, enc.video_cfg))) == 0


def test_cached_sft_with_aux_heads_resumes_bit_exact(setup, tmp_path):
    """With the auxiliary grounding heads on (time, mention attention, order, option), a run
    stopped at step 2 and resumed equals the uninterrupted run: the heads are checkpointed as
    training modules, never into the model files."""
    from safetensors.torch import load_file

    init = tmp_path / "init"
    model, assets = _model(setup, seed=3)
    from training.checkpointing import save_model_files

    save_model_files(model, init, assets)

    def cfg(out, **loop):
        return {"seed": 0, "output_dir": str(out), "model": {"init": str(init), "assets_dir": setup["assets"]},
                "feature_store": None, "data": {"root": setup["data"], "num_frames": 4},
                "cached_sft": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "eval_every": 2, "eval_limit": 6,
                               "lr": {"connector": 1e-2, "llm": 1e-2}, **loop,
                               "aux": {"enabled": True, "layer": 1, "time_layer": 1, "order_layer": 2,
                                       "option_layer": 2, "weights": {"mention_attention": 1.0}}}}

    full = run_cached_sft(cfg(tmp_path / "full", save_every=2))
    stopped = run_cached_sft(cfg(tmp_path / "part", stop_after=2))
    assert stopped["stopped_at"] == 2
    heads_file = tmp_path / "part" / "checkpoint-2" / "training_modules" / "aux_heads.safetensors"
    assert {k.split(".")[0] for k in load_file(str(heads_file))} >= {"token", "mention", "time", "option", "order"}
    resumed = run_cached_sft({**cfg(tmp_path / "part"), "resume": "auto"})
    assert resumed["start_step"] == 2
    h = lambda d: state_dict_hash(build_model({"init": str(d), "assets_dir": setup["assets"]})[0])  # noqa: E731
    assert h(resumed["final_dir"]) == h(full["final_dir"])
    # the exported model files hold the Spatial-MLLM only
    keys = json.loads((Path(full["final_dir"]) / "model.safetensors.index.json").read_text())["weight_map"]
    assert not any(k.startswith(("token.", "mention.", "aux")) for k in keys)
    row = (tmp_path / "full" / "metrics.csv").read_text().splitlines()[0]
    assert "aux_mention_attention" in row and "aux_token_time" in row


def test_frame_signal_command_writes_scored_rows_with_decode(setup, tmp_path):
    from training.checkpointing import save_model_files
    from training.eval.compare import load_predictions
    from training.frame_signal import main

    model, assets = _model(setup)
    save_model_files(model, tmp_path / "ckpt", processor=assets)
    out = tmp_path / "sig" / "signal.json"
    threads = torch.get_num_threads()
    try:  # the command pins torch to one thread; give the rest of the suite its threads back
        assert main(["--model", str(tmp_path / "ckpt"), "--data", setup["data"], "--split", "train", "--limit", "5",
                     "--num-frames", "4", "--decode", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    assert "predictions" not in res and res["overall"]["n"] == 5          # the rows go to their own file
    rows = load_predictions(out.with_suffix(".predictions.jsonl"))
    assert len(rows) == 5 and all(0.0 <= r["score"] <= 1.0 for r in rows.values())


def test_position_oracle_adds_each_tokens_true_position_at_a_fixed_norm(setup):
    from training.aux_targets import token_targets
    from training.position_oracle import PositionOracleCache, position_features

    model, assets = _model(setup)
    dcfg = {"root": setup["data"], "num_frames": 4}
    recs = [r for r in load_qa_records(dcfg, "train") if r.get("family") != "multispa"][:3]
    enc = ExampleEncoder(model, assets, dcfg)
    plain, oracle = VisualFeatureCache(model, enc), PositionOracleCache(model, enc)
    saved = (PositionOracleCache.scale, PositionOracleCache.norm)
    try:
        PositionOracleCache.scale, PositionOracleCache.norm = 0.5, None
        base, raised = plain.batch(recs), oracle.batch(recs)
        first = PositionOracleCache.norm
        assert first == float(base["video"].norm(dim=-1).median())        # set by the first batch
        delta = raised["video"] - base["video"]                              # [sum N, H]
        torch.testing.assert_close(delta.norm(dim=-1), torch.full((len(delta),), 0.5 * first), rtol=1e-4, atol=1e-4)
        # row i carries token i's own position: the map is linear, so project back and compare
        xyz = torch.cat([torch.from_numpy(token_targets(plain.frame_key(r), 2)["tok_xyz"]) for r in recs])
        feats = position_features(xyz) @ oracle.proj
        torch.testing.assert_close(delta, 0.5 * first * feats / feats.norm(dim=-1, keepdim=True))
        assert not torch.allclose(delta[0], delta[-1])
        oracle.batch(recs[1:])
        assert PositionOracleCache.norm == first                             # reused, not re-measured
        PositionOracleCache.scale = 0.0                                      # the control changes nothing
        assert torch.equal(oracle.batch(recs)["video"], base["video"])
    finally:
        PositionOracleCache.scale, PositionOracleCache.norm = saved


def test_cached_replies_answer_numbers_as_the_product_does(setup):
    """The cached-token scorer's replies equal SpatialMLLM.answer's on the same frames, in both
    numeric modes (the shipped weights, so that numeric questions get lone-number replies)."""
    from training.frame_signal import decoded_replies
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR

    model, assets = build_model({"init": str(TINY_ASSETS_DIR)})
    model.eval()
    dcfg = {"root": setup["data"], "num_frames": 8}
    enc = ExampleEncoder(model, assets, dcfg)
    cache = VisualFeatureCache(model, enc)
    recs = [r for r in load_qa_records(dcfg, "train") + load_qa_records(dcfg, "val") if not r.get("options")][:12]
    keys = [cache.frame_key(r) for r in recs]
    searched = decoded_replies(model, cache, recs, keys)
    greedy = decoded_replies(model, cache, recs, keys, numeric_answers="greedy")
    for mode, replies in (("expected_mra", searched), ("greedy", greedy)):
        enc.runtime.set_numeric_answers(mode)
        product = [enc.runtime.answer(enc.record_frames(r), r["question"], max_new_tokens=24).text for r in recs]
        assert replies == product, mode
    enc.runtime.set_numeric_answers("expected_mra")
    assert sum(a != b for a, b in zip(searched, greedy)) >= 1  # the search changed some number
    with pytest.raises(ValueError):
        decoded_replies(model, cache, recs[:1], keys[:1], numeric_answers="mean")


def test_frame_time_positions_give_each_set_its_frames_places(setup):
    """With the flag a cached batch carries each set's grid times, taken from where its frames lie
    among the question's candidates, and the cached forward still equals the pixel forward."""
    from ros2_spatial_mllm.model.processing import grid_times
    from ros2_spatial_mllm.sampling import window_slots
    from training.qa_records import choose_frames, frame_paths

    model, assets = build_model({"init": "random", "assets_dir": setup["assets"], "frame_time_positions": True})
    assert model.config.frame_time_positions is True
    model.eval()
    dcfg = {"root": setup["data"], "num_frames": 4, "frame_sampling": "mixed", "space_aware_share": 0.5}
    recs = [r for r in load_qa_records(dcfg, "train") if r.get("family") != "multispa"]
    enc = ExampleEncoder(model, assets, dcfg)
    cache = VisualFeatureCache(model, enc)
    batch = cache.batch(recs[:6])
    assert batch["second_per_grid_ts"].shape == (6, 2)
    uneven = 0
    for rec, times in zip(recs[:6], batch["second_per_grid_ts"]):
        n = len(frame_paths(rec, dcfg))
        idx = choose_frames(n, 4, "mixed", rec, dcfg)
        assert torch.equal(times, grid_times(window_slots(idx, 0, n - 1), 2, enc.runtime.fps))
        uneven += idx != choose_frames(n, 4, "uniform", rec, dcfg)
    assert uneven > 0  # some sets are space-aware picks, whose times are not the even ones
    with torch.no_grad():
        rec = recs[0]
        ref_batch = collate([enc.encode_sft(rec)], enc.pad_id)
        ref_batch["second_per_grid_ts"] = cache.batch([rec])["second_per_grid_ts"]
        ref = model(**{k: v for k, v in ref_batch.items() if k != "labels"}, use_cache=False).logits
        assert torch.allclose(cached_forward(model, cache.batch([rec])), ref, atol=1e-5)
        # a MultiSPA pair (one grid) beside a 4-frame video (two): the short row is padded, and
        # each row still reads as it does alone
        pair = next(r for r in load_qa_records(dcfg, "train") if r.get("family") == "multispa")
        mixed = cache.batch([pair, rec])
        assert mixed["second_per_grid_ts"].shape == (2, 2) and mixed["second_per_grid_ts"][0, 1].isnan()
        together = cached_forward(model, mixed)
        for i, one in enumerate((pair, rec)):
            alone = cached_forward(model, cache.batch([one]))
            assert torch.allclose(together[i, : alone.shape[1]], alone[0], atol=1e-5)
    with pytest.raises(KeyError, match="frame_key"):
        cache.grid_times([("never/chosen.jpg",)])
    from training.feature_store import encoder_fingerprint

    timed = encoder_fingerprint(model)
    model.config.frame_time_positions = False
    assert encoder_fingerprint(model) == timed  # the flag changes no cached token: stores are shared
