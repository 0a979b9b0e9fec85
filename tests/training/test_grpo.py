"""GRPO pieces checked by hand, and a real update on the tiny preset moving probability towards
rewarded completions; the end-to-end stage writes checkpoints/metrics with KL to the reference."""
import math

import pytest
import torch

from training.fixtures import make_qa_fixture, tiny_assets_for_tests
from training.grpo import (clipped_policy_loss, completion_logprobs, completion_mask, group_advantages, k3_kl,
                           run_grpo, sample_group)
from training.model_io import ExampleEncoder, build_model
from training.qa_records import load_qa_records


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    return {"root": root, "assets": str(tiny_assets_for_tests(root)),
            "data": str(make_qa_fixture(root / "data", n_scenes=2, n_frames=4))}


def test_group_advantages_and_k3():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]]))
    assert torch.allclose(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-3)
    assert torch.equal(adv[1], torch.zeros(4))  # all-equal group carries no signal
    kl = k3_kl(torch.log(torch.tensor([0.5, 0.3])), torch.log(torch.tensor([0.25, 0.3])))
    assert kl[0].item() == pytest.approx(0.5 + math.log(2) - 1, rel=1e-5) and kl[1].item() == 0.0


def test_clip_stops_gradient_outside_trust_region():
    old = torch.zeros(2, 1)
    logp = torch.full((2, 1), 0.5, requires_grad=True)  # ratio e^0.5 = 1.65 > 1.2
    out = clipped_policy_loss(logp, old, torch.tensor([1.0, -1.0]), torch.ones(2, 1), clip_eps=0.2, beta=0.0)
    out["loss"].backward()
    assert logp.grad[0, 0] == 0.0  # positive advantage, ratio above 1+eps: clipped, no push
    assert logp.grad[1, 0] > 0.0   # negative advantage: unclipped branch keeps pushing it down
    assert out["clip_frac"] == 1.0


def test_completion_mask_keeps_first_eos():
    m = completion_mask(torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8]]), eos_ids=[2])
    assert m.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_update_moves_probability_towards_rewarded_completions(setup):
    torch.manual_seed(0)
    model, assets = build_model({"init": "random", "assets_dir": setup["assets"]})
    enc = ExampleEncoder(model, assets, {"root": setup["data"], "num_frames": 4})
    prompt = enc.encode_prompt(load_qa_records({"root": setup["data"]})[0])
    comps = sample_group(model, prompt, 4, 5, 1.0, enc.runtime.eos_ids, enc.pad_id)
    assert comps.shape[0] == 4 and comps.shape[1] <= 5
    mask = completion_mask(comps, enc.runtime.eos_ids)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    old = completion_logprobs(model, prompt, comps, torch.device("cpu")).detach()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    out = clipped_policy_loss(completion_logprobs(model, prompt, comps, torch.device("cpu")), old, adv, mask, beta=0.0)
    out["loss"].backward()
    opt.step()
    new = completion_logprobs(model, prompt, comps, torch.device("cpu")).detach()
    gain = ((new - old) * mask).sum(1) / mask.sum(1)
    assert gain[adv > 0].mean() > gain[adv < 0].mean()


def test_run_grpo_end_to_end(setup):
    from ros2_spatial_mllm.model.checkpoint import save_checkpoint
    from training.sft import collate, setup_trainable, sft_forward

    # fit two questions part-way first, so that sampled answers are sometimes right (rewards vary); at 30
    # steps the tiny preset (1/sqrt(width) init) is always right and a group with equal rewards carries no signal
    data = {"root": setup["data"], "num_frames": 4, "max_train_records": 2}
    torch.manual_seed(0)
    model, assets = build_model({"init": "random", "assets_dir": setup["assets"]})
    enc = ExampleEncoder(model, assets, data)
    batch = collate([enc.encode_sft(r) for r in load_qa_records(data)], enc.pad_id)
    opt = torch.optim.AdamW(setup_trainable(model, {"lr": {"connector": 3e-3, "llm": 3e-3}})[0])
    model.train()
    for _ in range(10):
        sft_forward(model, batch, torch.device("cpu"))[0].backward()
        opt.step()
        opt.zero_grad()
    save_checkpoint(model, setup["root"] / "sft", assets_from=assets)
    out = setup["root"] / "run"
    cfg = {"seed": 0, "output_dir": str(out), "strategy": "none", "model": {"init": str(setup["root"] / "sft")},
           "data": data, "grpo": {"max_steps": 2, "group_size": 6, "max_new_tokens": 4, "updates_per_batch": 2,
                                  "temperature": 1.0, "lr": {"connector": 1e-2, "llm": 1e-2}, "beta": 0.1}}
    result = run_grpo(cfg)
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    kl = [float(r.split(",")[header.index("kl")]) for r in rows[1:]]
    assert len(kl) == 2 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 0.0  # policy leaves the reference
    assert "reward" in header and (out / "curves.png").is_file()
    assert (result["final_dir"] / "config.json").is_file()
