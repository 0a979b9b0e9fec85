"""SFT on the tiny preset: answer-only labels on a real tokenised batch, overfitting a fixed
batch, frozen components unchanged, per-component lrs, HF-layout checkpoints, bit-exact resume."""
import shutil

import pytest
import torch

from training.fixtures import make_qa_fixture, tiny_assets_for_tests
from training.model_io import ExampleEncoder, build_model
from training.qa_records import load_qa_records
from training.sft import IGNORE_INDEX, collate, run_sft, setup_trainable, sft_forward
from training.trainer_utils import component_of, set_seed, state_dict_hash


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    assets = tiny_assets_for_tests(root)
    data = make_qa_fixture(root / "data", n_scenes=3, n_frames=4)
    return {"root": root, "assets": str(assets), "data": str(data)}


def _cfg(setup, out, **sft):
    base = {"max_steps": 4, "batch_size": 2, "warmup_steps": 1, "log_every": 1,
            "train": {"vision": False, "vision_merger": False, "spatial_encoder": False, "connector": True, "llm": True},
            "lr": {"connector": 2e-3, "llm": 1e-3}}
    base.update(sft)
    return {"seed": 3, "output_dir": str(out), "strategy": "none",
            "model": {"preset": "tiny", "init": "random", "assets_dir": setup["assets"]},
            "data": {"root": setup["data"], "num_frames": 4}, "sft": base}


def test_labels_cover_exactly_the_answer_tokens(setup):
    model, assets = build_model({"init": "random", "assets_dir": setup["assets"]})
    enc = ExampleEncoder(model, assets, {"root": setup["data"], "num_frames": 4})
    recs = load_qa_records({"root": setup["data"]})
    mc, count = next(r for r in recs if r.get("options")), next(r for r in recs if r["question_type"] == "object_counting")
    batch = collate([enc.encode_sft(mc), enc.encode_sft(count)], enc.pad_id)
    tok = enc.tokenizer
    for row, rec in enumerate((mc, count)):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        labelled = labels != IGNORE_INDEX
        assert torch.equal(ids[labelled], labels[labelled])
        assert tok.decode(ids[labelled]) == f"{rec['answer']}<|im_end|>"
        # everything before the answer (system, video pads, question, assistant header) is masked
        first = int(labelled.nonzero()[0])
        assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
        assert not labelled[:first].any() and (ids[:first] == tok.convert_tokens_to_ids("<|video_pad|>")).sum() > 0
        assert not labelled[mask == 0].any()  # padding never labelled
    n_video = int(batch["video_grid_thw"][0].prod()) // 4
    assert (batch["input_ids"][0] == tok.convert_tokens_to_ids("<|video_pad|>")).sum() == n_video
    assert batch["spatial_pixel_values"].shape == (2, 4, 3, 112, 112)


def test_overfits_a_fixed_batch_in_20_steps(setup):
    set_seed(0)
    model, assets = build_model({"init": "random", "assets_dir": setup["assets"]})
    enc = ExampleEncoder(model, assets, {"root": setup["data"], "num_frames": 4})
    recs = load_qa_records({"root": setup["data"]})[:3]
    batch = collate([enc.encode_sft(r) for r in recs], enc.pad_id)
    groups, _ = setup_trainable(model, {"train": {"connector": True, "llm": True}, "lr": {"connector": 3e-3, "llm": 3e-3}})
    opt = torch.optim.AdamW(groups)
    model.train()
    losses = []
    for _ in range(20):
        loss, _ = sft_forward(model, batch, torch.device("cpu"))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


def test_run_sft_freezes_components_and_writes_outputs(setup):
    out = setup["root"] / "run_freeze"
    model0, _ = build_model({"init": "random", "assets_dir": setup["assets"]})
    before = {k: v.clone() for k, v in model0.state_dict().items()}
    result = run_sft(_cfg(setup, out, max_steps=3))
    from ros2_spatial_mllm.model.checkpoint import load_checkpoint

    trained, report = load_checkpoint(result["final_dir"])
    assert report.ok, report.summary()
    after = trained.state_dict()
    changed = {component_of(k) for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"connector", "llm"}, changed  # vision, merger and VGGT untouched
    assert (out / "metrics.csv").read_text().count("\n") == 4 and (out / "curves.png").stat().st_size > 1000
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "lr_connector" in header and "lr_llm" in header
    assert result["trainable"].keys() == {"connector", "llm"}


def test_per_component_learning_rates(setup):
    model, _ = build_model({"init": "random", "assets_dir": setup["assets"]})
    groups, _ = setup_trainable(model, {})  # reference recipe
    lrs = {g["name"].replace("_nodecay", ""): g["lr"] for g in groups}
    assert lrs == {"connector": 2e-5, "llm": 7e-6}
    assert all(not p.requires_grad for n, p in model.named_parameters()
               if component_of(n) in ("vision", "vision_merger", "spatial_encoder"))


def test_resume_is_bit_exact(setup):
    full = setup["root"] / "run_full"
    res_full = run_sft(_cfg(setup, full, max_steps=6, save_every=3))
    h_full = state_dict_hash(build_model({"init": str(res_full["final_dir"])})[0])
    part = setup["root"] / "run_part"
    stopped = run_sft(_cfg(setup, part, max_steps=6, stop_after=3))
    assert stopped["stopped_at"] == 3 and (part / "checkpoint-3" / "trainer_state.pt").is_file()
    resumed = run_sft({**_cfg(setup, part, max_steps=6), "resume": "auto"})
    assert resumed["start_step"] == 3
    h_resumed = state_dict_hash(build_model({"init": str(resumed["final_dir"])})[0])
    assert h_resumed == h_full
    # the CSV continues rather than restarting
    assert [r.split(",")[0] for r in (part / "metrics.csv").read_text().splitlines()[1:]] == [str(float(i)) for i in range(1, 7)]
    shutil.rmtree(full), shutil.rmtree(part)


def test_gradient_checkpointing_gives_the_same_gradients(setup):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model, assets = build_model({"init": "random", "assets_dir": setup["assets"]})
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        enc = ExampleEncoder(model, assets, {"root": setup["data"], "num_frames": 4})
        batch = collate([enc.encode_sft(r) for r in load_qa_records({"root": setup["data"]})[:2]], enc.pad_id)
        setup_trainable(model, {"train": {"vision": True}})
        model.train()
        sft_forward(model, batch, torch.device("cpu"))[0].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_space_aware_frames_from_sensor_depth(tmp_path):
    from training.data.generate import GenerateConfig, generate_dataset
    from training.qa_records import choose_frames

    data = tmp_path / "engine"
    generate_dataset(data, GenerateConfig(num_scenes=1, questions_per_scene=6, num_frames=12, width=112, height=84,
                                          save_depth=True, split_fractions=(1.0, 0.0, 0.0)), workers=1, progress=False)
    rec = next(r for r in load_qa_records({"root": str(data)}) if r["family"] == "vsibench")
    chosen = choose_frames(12, 4, "space_aware", rec, {"root": str(data)})
    assert len(chosen) == 4 and chosen == sorted(chosen) and len(set(chosen)) == 4
    assert chosen == choose_frames(12, 4, "space_aware", rec, {"root": str(data)})  # deterministic
    assert choose_frames(12, 4, "uniform", rec) == [0, 3, 7, 11]  # C's uniform_sample


def test_mixed_sampling_gives_each_question_one_of_four_frame_sets():
    from training.qa_records import choose_frames

    picks = {tuple(choose_frames(32, 8, "mixed", {"id": f"q{i}"})) for i in range(40)}
    assert tuple(choose_frames(32, 8, "uniform")) in picks
    assert all(len(p) == 8 and list(p) == sorted(p) and len(set(p)) == 8 and p[-1] < 32 for p in picks)
    # without depth the space-aware quarter falls back to uniform: uniform + two shifted sets
    assert len(picks) == 3
    assert choose_frames(32, 8, "mixed", {"id": "q7"}) == choose_frames(32, 8, "mixed", {"id": "q7"})


def test_space_aware_share_moves_the_mix_and_keeps_the_default():
    import zlib

    from training.qa_records import choose_frames

    sa = [0, 2, 3, 10, 11, 20, 30, 31]  # a record's precomputed space-aware set (no depth needed)
    recs = [{"id": f"q{i}", "space_aware_indices": sa} for i in range(400)]

    def share(cfg):
        return sum(choose_frames(32, 8, "mixed", r, cfg) == sa for r in recs) / len(recs)

    # default: exactly the questions whose id hashes to 1 mod 4 (the shipped recipe's split)
    assert [choose_frames(32, 8, "mixed", r, {}) == sa for r in recs] == \
        [zlib.crc32(r["id"].encode()) % 4 == 1 for r in recs]
    assert share({"space_aware_share": 1.0}) == 1.0 and share({"space_aware_share": 0.0}) == 0.0
    assert 0.4 < share({"space_aware_share": 0.5}) < 0.6
    rest = {tuple(choose_frames(32, 8, "mixed", r, {"space_aware_share": 0.0})) for r in recs}
    assert len(rest) == 3          # uniform and the two shifted sets share the rest
