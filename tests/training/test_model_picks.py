"""Space-aware picks from the model's own geometry (training/model_picks.py) feed the training mix."""
import json

import pytest

from training.qa_records import choose_frames, load_qa_records


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from training.data.generate import GenerateConfig, generate_dataset

    data = tmp_path_factory.mktemp("engine")
    generate_dataset(data, GenerateConfig(num_scenes=2, questions_per_scene=6, num_frames=12, width=112, height=84,
                                          split_fractions=(1.0, 0.0, 0.0)), workers=1, progress=False)
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
    assert doc["num_frames"] == 4 and len(doc["encoder"]) == 64
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
