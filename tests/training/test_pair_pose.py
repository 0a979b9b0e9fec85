"""The pair-pose head: targets, chaining, that it can read a turn off patch matches, and the stage
end to end (fixture clips -> checkpoint that reloads with the head -> predict_geometry uses it)."""
import math

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.geometry import pair_poses_to_extrinsics, relative_to_first_camera
from ros2_spatial_mllm.model.vggt.heads import PairPoseHead
from training.fixtures import make_geometry_fixture, plane_clip, tiny_assets_for_tests
from training.pair_pose import pair_pose_targets, run_pair_pose


def _yaw(angle: float) -> np.ndarray:
    """world_from_cam rotation turning about the camera's y axis (down) by `angle` radians."""
    return np.array([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]])


def test_targets_are_the_step_between_cameras_and_chain_back_to_the_cameras():
    # camera k turned by 10 deg * k and moved 0.3 m along world x per frame
    cam_from_world = []
    for k in range(4):
        world_from_cam = np.eye(4)
        world_from_cam[:3, :3] = _yaw(math.radians(10 * k))
        world_from_cam[:3, 3] = [0.3 * k, 0.0, 0.0]
        cam_from_world.append(np.linalg.inv(world_from_cam))
    cam_from_world = torch.tensor(np.stack(cam_from_world))
    target = pair_pose_targets(cam_from_world)                            # [3, 6]
    assert target.shape == (3, 6)
    # each step is a 10 deg turn about y ...
    assert torch.allclose(target[:, :3], torch.tensor([0.0, math.radians(10), 0.0]).expand(3, 3), atol=1e-6)
    # ... and 0.3 m along world x, seen from the previous camera (turned by 10 deg * k)
    for k in range(3):
        expected = _yaw(math.radians(10 * k)).T @ np.array([0.3, 0.0, 0.0])
        assert np.allclose(target[k, 3:].numpy(), expected, atol=1e-6)
    chained = pair_poses_to_extrinsics(target.double())                  # [4, 3, 4] cam_from_cam0
    assert torch.allclose(chained, relative_to_first_camera(cam_from_world)[:, :3], atol=1e-6)
    assert torch.allclose(pair_poses_to_extrinsics(torch.zeros(0, 6)), torch.eye(4)[:3][None])


def test_head_shapes_and_resolution_independence():
    head = PairPoseHead(dim_in=16)
    assert head(torch.randn(2, 5, 6 * 8, 16), (6, 8)).shape == (2, 4, 6)
    assert head(torch.randn(1, 3, 4 * 4, 16), (4, 4)).shape == (1, 2, 6)  # another patch grid, same weights
    assert head(torch.randn(1, 1, 48, 16), (6, 8)).shape == (1, 0, 6)     # one frame: no pairs
    with pytest.raises(ValueError, match="does not hold"):
        head(torch.randn(1, 2, 48, 16), (5, 8))


def test_head_learns_to_read_a_turn_from_shifted_patches():
    """Frame k+1's patches are frame k's shifted sideways by `s` columns (what a small yaw does to
    a distant scene); the head must learn the shift's size and sign from random scenes and read it
    on new ones. A head without matching (one turn for every pair) cannot get the correlation."""
    torch.manual_seed(0)
    h, w, dim = 6, 8, 16

    def batch(n):
        shift = torch.randint(-2, 3, (n,))
        wide = torch.randn(n, h, w + 4, dim)                              # a scene wider than the view
        first = wide[:, :, 2:2 + w]
        second = torch.stack([wide[i, :, 2 + s:2 + s + w] for i, s in enumerate(shift.tolist())])
        tokens = torch.stack([first, second], 1).reshape(n, 2, h * w, dim)
        target = torch.zeros(n, 1, 6)
        target[:, 0, 1] = 0.1 * shift.float()                             # yaw proportional to the shift
        return tokens, target

    head = PairPoseHead(dim_in=dim, proj_dim=16, hidden=32)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(300):
        tokens, target = batch(32)
        loss = torch.nn.functional.smooth_l1_loss(head(tokens, (h, w)), target, beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens, target = batch(200)
    with torch.no_grad():
        yaw = head(tokens, (h, w))[:, 0, 1]
    corr = float(np.corrcoef(yaw.numpy(), target[:, 0, 1].numpy())[0, 1])
    assert corr > 0.9, corr


def test_stage_adds_a_head_that_reloads_and_drives_predict_geometry(tmp_path):
    from ros2_spatial_mllm.inference import SpatialMLLM
    from ros2_spatial_mllm.model.checkpoint import load_checkpoint

    data = tmp_path / "data"
    make_geometry_fixture(data, n_clips=3, n_frames=4, hw=(84, 112))
    cfg = {"seed": 0, "output_dir": str(tmp_path / "run"),
           "model": {"init": "random", "assets_dir": str(tiny_assets_for_tests(tmp_path / "assets"))},
           "data": {"root": str(data)},
           "pair_pose": {"frames": 4, "strides": [1], "max_steps": 40, "batch_size": 3, "lr": 3e-3, "log_every": 1}}
    result = run_pair_pose(cfg)
    assert result["clips"] == 3 and result["grid_hw"] == [6, 8]
    losses = [float(r["loss"]) for r in __import__("csv").DictReader(open(tmp_path / "run" / "metrics.csv"))]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    model, report = load_checkpoint(result["final_dir"])
    assert report.ok, report.summary()
    assert model.spatial_encoder.vggt_model.pair_pose_head is not None
    engine = SpatialMLLM.load(result["final_dir"])
    try:
        clip = plane_clip(np.random.default_rng(7), n_frames=3, hw=(84, 112))
        geo = engine.predict_geometry(clip["images"])
        source = engine.camera_source
    finally:
        engine.close()
    assert source == "pair_pose" and geo["extrinsics"].shape == (3, 3, 4)
    # the cameras are the head's chained steps (the camera head's would differ)
    with torch.no_grad():
        x = torch.from_numpy(clip["images"]).permute(0, 3, 1, 2).float()[None] / 255.0
        steps = model.spatial_encoder.vggt_model(x)["pair_pose"][0]
    np.testing.assert_allclose(geo["extrinsics"], pair_poses_to_extrinsics(steps.double()).numpy(), atol=1e-4)
    assert np.allclose(geo["extrinsics"][0], np.eye(4)[:3], atol=1e-6)
    # without the head (a fresh tiny preset) the camera head's poses are used, as for VGGT-1B
    from ros2_spatial_mllm.model.checkpoint import save_checkpoint
    from training.model_io import build_model
    fresh, assets = build_model({"init": "random", "assets_dir": cfg["model"]["assets_dir"]})
    assert fresh.spatial_encoder.vggt_model.pair_pose_head is None
    save_checkpoint(fresh, tmp_path / "plain", assets_from=assets)
    plain = SpatialMLLM.load(str(tmp_path / "plain"))
    try:
        assert plain.camera_source == "camera_head"
    finally:
        plain.close()


def test_pipeline_redoes_the_head_when_the_model_under_it_changed(tmp_path):
    """pair_pose/final is a whole model: after an earlier stage is rerun, the pipeline must not
    export the old weights with the head, so a finished pair_pose stage made from other weights
    counts as stale."""
    import json

    from training.pipeline import _made_from_other_weights, _weights_digest

    model = tmp_path / "sft_final"
    model.mkdir()
    (model / "model-00001-of-00001.safetensors").write_bytes(b"weights v1")
    digest = _weights_digest(model)
    assert not _made_from_other_weights(tmp_path, "pair_pose", digest)          # not run yet
    (tmp_path / "pair_pose" / "final").mkdir(parents=True)
    (tmp_path / "pair_pose" / "final" / "config.json").write_text("{}")
    assert _made_from_other_weights(tmp_path, "pair_pose", digest)              # no record of its input
    (tmp_path / "pair_pose" / "input.json").write_text(json.dumps({"sha256": digest}))
    assert not _made_from_other_weights(tmp_path, "pair_pose", digest)
    (model / "model-00001-of-00001.safetensors").write_bytes(b"weights v2")     # SFT rerun
    assert _made_from_other_weights(tmp_path, "pair_pose", _weights_digest(model))


def test_an_interrupted_stage_on_other_weights_is_cleared_before_it_resumes(tmp_path):
    """_redo_if_stale records the input's digest before the stage runs: checkpoints left by an
    interrupted run on other weights are removed (--resume auto would continue them), and a
    finished stage on the same weights is kept."""
    from training.pipeline import _redo_if_stale

    model = tmp_path / "sft_final"
    model.mkdir()
    (model / "model-00001-of-00001.safetensors").write_bytes(b"weights v1")
    assert _redo_if_stale(tmp_path, "polish", str(model), force=False)
    (tmp_path / "polish" / "checkpoint-500").mkdir()                            # interrupted at step 500
    assert _redo_if_stale(tmp_path, "polish", str(model), force=False)           # same weights: resumable
    assert (tmp_path / "polish" / "checkpoint-500").is_dir()
    (model / "model-00001-of-00001.safetensors").write_bytes(b"weights v2")     # the model under it changed
    assert _redo_if_stale(tmp_path, "polish", str(model), force=False)
    assert not (tmp_path / "polish" / "checkpoint-500").exists()
    (tmp_path / "polish" / "final").mkdir()
    (tmp_path / "polish" / "final" / "config.json").write_text("{}")
    assert not _redo_if_stale(tmp_path, "polish", str(model), force=False)       # finished on these weights
    assert _redo_if_stale(tmp_path, "polish", str(model), force=True)
