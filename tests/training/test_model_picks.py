"""Space-aware picks from the model's own geometry (training/model_picks.py) feed the training mix."""
import json

import pytest
import torch

from training.qa_records import choose_frames, load_qa_records


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from training.data.generate import GenerateConfig, generate_dataset

    data = tmp_path_factory.mktemp("engine")
    generate_dataset(data, GenerateConfig(num_scenes=2, questions_per_scene=6, num_frames=12, width=112, height=84,
                                          split_fractions=(1.0, 0.0, 0.0), save_depth=True),
                     workers=1, progress=False)
    return data


def test_picks_are_the_nodes_space_aware_frames_and_the_mix_uses_them(engine, tmp_path):
    from pathlib import Path

    from ros2_spatial_mllm.inference import SpatialMLLM
    from training.evaluate import FrameSelector
    from training.model_picks import main, picks_key

    out = tmp_path / "picks.json"
    assert main(["--data", str(engine), "--split", "train", "--num-frames", "4", "--out", str(out),
                 "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert doc["num_frames"] == 4 and len(doc["geometry_fingerprint"]) == 64
    videos = {r["frames_path"] for r in load_qa_records({"root": str(engine)}) if r.get("frames_path")
              and len(r.get("frame_indices") or range(r["num_frames"])) > 4}
    assert len(doc["picks"]) == len(videos) == 2

    # the same frames the evaluator's (and the node's) space-aware sampler picks on the model's geometry
    selector = FrameSelector(SpatialMLLM.load(None, preset="tiny"), Path(engine), 4, "space_aware")
    rec = next(r for r in load_qa_records({"root": str(engine)}) if r["family"] == "vsibench")
    idx = rec.get("frame_indices") or list(range(rec["num_frames"]))
    expected = sorted(idx.index(f) for f in selector.select(rec["frames_path"], idx))
    cfg = {"root": str(engine), "space_aware_picks": str(out)}
    assert doc["picks"][picks_key(rec["frames_path"], idx)] == expected
    assert choose_frames(len(idx), 4, "space_aware", rec, cfg) == expected
    # the mix's space-aware quarter takes them; the other kinds do not change
    mixed = [choose_frames(len(idx), 4, "mixed", {**rec, "id": f"q{i}"}, cfg) for i in range(40)]
    plain = [choose_frames(len(idx), 4, "mixed", {**rec, "id": f"q{i}"}, {"root": str(engine)}) for i in range(40)]
    assert expected in mixed and expected != choose_frames(len(idx), 4, "uniform")
    assert all(m == p for m, p in zip(mixed, plain) if m != expected)

    # a stale file is an error, not a silent fallback to another sampler
    with pytest.raises(ValueError, match="no picks"):
        choose_frames(len(idx), 4, "space_aware", {**rec, "frames_path": "scenes/train/elsewhere/frames"}, cfg)
    with pytest.raises(ValueError, match="picks are for 4 frames"):
        choose_frames(len(idx), 6, "space_aware", rec, cfg)


def test_cli_reports_a_missing_data_root_in_one_line(tmp_path, capsys):
    from training.model_picks import main

    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("model_picks: ")


def test_polish_stage_continues_on_its_own_picks_and_keeps_the_encoders(engine, tmp_path):
    """polish_tiny.yaml (tiny_default's polish stage alone): the model's picks are written first
    and carry its geometry fingerprint, cached SFT then moves only connector + LLM, the finished
    stage is skipped on a rerun, and a picks file of other encoders is refused."""
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
    from training.cached_sft import run_cached_sft
    from training.feature_store import FROZEN_COMPONENTS
    from training.model_io import build_model
    from training.model_picks import geometry_fingerprint
    from training.pipeline import run_default
    from training.trainer_utils import component_of, load_config, state_dict_hash

    out = tmp_path / "run"
    cfg = load_config("training/configs/polish_tiny.yaml", [
        f"output_dir={out}", f"data.root={engine}", "data.num_frames=4", "data.grounding=null",
        f"model.init={TINY_ASSETS_DIR}", "export.dir=", "polish.max_steps=2", "polish.batch_size=2",
        "polish.eval_every=0", "polish.save_every=0", "polish.log_every=1", "polish.picks_splits=[train]",
        "polish.frame_time_positions=true"])
    assert cfg["polish"]["enabled"] and cfg["polish"]["repeat_tasks"] == {"obj_appearance_order": 6}
    result = run_default(cfg)
    final = out / "polish" / "final"
    assert result["final_dir"] == str(final) and (final / "config.json").is_file()

    init, _ = build_model({"init": str(TINY_ASSETS_DIR)})
    after, _ = build_model({"init": str(final)})
    assert after.config.frame_time_positions is True and init.config.frame_time_positions is False
    doc = json.loads((out / "polish" / "model_picks.json").read_text())
    assert doc["num_frames"] == 4 and len(doc["picks"]) == 2
    assert doc["geometry_fingerprint"] == geometry_fingerprint(init) == geometry_fingerprint(after)

    def frozen(model):
        return state_dict_hash(model, keep=lambda n: component_of(n) in FROZEN_COMPONENTS)

    def language(model):
        return state_dict_hash(model, keep=lambda n: component_of(n) == "llm")

    assert frozen(after) == frozen(init) and language(after) != language(init)
    assert any((out / "feature_store").glob("*/index.json"))

    stamp = (final / "config.json").stat().st_mtime_ns
    run_default(cfg)  # finished and made from the same weights: skipped
    assert (final / "config.json").stat().st_mtime_ns == stamp
    # a resumed stage keeps picks made by the same encoders for the same frames, and remakes others
    from training.model_picks import write_picks

    picks = out / "polish" / "model_picks.json"
    stamp = picks.stat().st_mtime_ns
    assert write_picks(str(final), engine, ["train"], 4, picks, reuse=True, progress=False) == doc
    assert picks.stat().st_mtime_ns == stamp
    assert write_picks(str(final), engine, ["train"], 3, picks, reuse=True, progress=False)["num_frames"] == 3

    # a picks file made by a model with other encoders is refused before any training step
    with torch.no_grad():
        next(init.spatial_encoder.parameters()).view(-1)[0] += 1e-3
    assert geometry_fingerprint(init) != doc["geometry_fingerprint"]
    from ros2_spatial_mllm.model.checkpoint import save_checkpoint

    other = tmp_path / "other"
    save_checkpoint(init, other, assets_from=TINY_ASSETS_DIR)
    stage = {**cfg, "output_dir": str(tmp_path / "refused"), "model": {**cfg["model"], "init": str(other)},
             "data": {**cfg["data"], "space_aware_picks": str(out / "polish" / "model_picks.json")},
             "cached_sft": {"max_steps": 1}}
    with pytest.raises(ValueError, match="picks were made by"):
        run_cached_sft(stage)
