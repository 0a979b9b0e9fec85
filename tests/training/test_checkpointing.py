"""trainer_state.pt is written weights_only-loadable and read without unpickling anything."""
import random

import numpy as np
import pytest
import torch

from training.checkpointing import (TRAINER_STATE, TrainerStateError, load_checkpoint, load_trainer_state,
                                    save_checkpoint)


class NotATensor:
    """An arbitrary class: loading it would mean running pickle's GLOBAL/REDUCE on it."""

    def __init__(self):
        self.payload = 42


def _draws():
    return random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()), torch.rand(3)


def test_trainer_state_is_weights_only_and_resume_restores_rng(tmp_path):
    torch.manual_seed(0), random.seed(1), np.random.seed(2)
    random.gauss(0, 1), np.random.randn()  # leave cached gaussians in both states
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    model(torch.ones(1, 3)).sum().backward()
    opt.step(), sched.step()
    ckpt = save_checkpoint(tmp_path, 7, model, opt, sched, extra={"epoch": 1})
    expected = _draws()
    state = torch.load(ckpt / TRAINER_STATE, map_location="cpu", weights_only=True)  # must not raise
    assert state["step"] == 7 and isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    _draws(), _draws()  # move every generator on
    restored = load_checkpoint(ckpt, model, opt, sched)
    assert restored == {"step": 7, "extra": {"epoch": 1}}
    got = _draws()
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])
    assert opt.state_dict()["state"][0]["step"].item() == 1 and sched.last_epoch == 1


def test_pickled_object_in_trainer_state_is_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = save_checkpoint(tmp_path, 1, model)
    torch.save({"step": 1, "x": NotATensor()}, ckpt / TRAINER_STATE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(TrainerStateError, match="refusing to load.*weights_only"):
        load_trainer_state(ckpt / TRAINER_STATE)
    with pytest.raises(TrainerStateError, match=TRAINER_STATE):
        load_checkpoint(ckpt, model)
    assert not torch.equal(model.weight, before["weight"])  # refused before the model was touched


def test_old_numpy_pickled_rng_state_is_refused(tmp_path):
    path = tmp_path / TRAINER_STATE
    torch.save({"step": 1, "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(TrainerStateError, match="numpy.*not an allowed global"):
        load_trainer_state(path)
