"""Geometry pre-training (exact GT conversion, overfitting a clip, only VGGT trained), the
official-preset skip, the CLI contract, config overrides and the metrics CSV/PNG."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from training.fixtures import plane_clip, tiny_assets_for_tests
from training.geometry_losses import depth_loss, ground_truth_pose_encoding
from training.geometry_pretrain import geometry_step_loss, prepare_clip, run_geometry
from training.metrics import MetricsLog
from training.trainer_utils import component_of, load_config


def test_ground_truth_pose_encoding_world_is_first_camera():
    clip = prepare_clip(plane_clip(np.random.default_rng(0), n_frames=3), (84, 112))
    enc = ground_truth_pose_encoding(clip["cam_from_world"][None], clip["intrinsics"][None], (84, 112))
    assert enc.shape == (1, 3, 9)
    assert torch.allclose(enc[0, 0, :7], torch.tensor([0, 0, 0, 0, 0, 0, 1.0]), atol=1e-6)  # identity, quat xyzw
    # FoV from the rescaled focal length: 2 atan((h/2) / fy), fy = 90 * 84/112
    assert enc[0, 0, 7].item() == pytest.approx(2 * np.arctan(42 / (90 * 84 / 112)), rel=1e-5)
    from ros2_spatial_mllm.geometry import pose_encoding_to_extrinsics_intrinsics
    rel, _ = pose_encoding_to_extrinsics_intrinsics(enc, (84, 112))
    e0, e2 = np.eye(4), np.eye(4)
    e0[:3] = clip["cam_from_world"][0, :3].numpy()
    e2[:3] = clip["cam_from_world"][2, :3].numpy()
    assert np.allclose(rel[0, 2].numpy(), (e2 @ np.linalg.inv(e0))[:3], atol=1e-4)


def test_depth_loss_confidence_tradeoff():
    gt = torch.ones(1, 1, 4, 4)
    pred = gt + 0.5
    low, high = torch.full((1, 1, 4, 4), 1.0), torch.full((1, 1, 4, 4), 3.0)
    # error 0.5 everywhere: conf 3 costs 3*0.5 - 0.2 log 3 = 1.28 > conf 1 costs 0.5
    assert depth_loss(pred, high, gt)["loss"] > depth_loss(pred, low, gt)["loss"]
    assert depth_loss(gt.clone(), high, gt)["loss"] < depth_loss(gt.clone(), low, gt)["loss"]  # exact: confident wins
    masked = depth_loss(pred, low, torch.zeros_like(gt))  # no valid pixel
    assert masked["depth_l1"] == 0.0


def test_relative_depth_loss_ranks_errors_by_distance():
    # a wall at 10 m off by 1 m and an object at 1 m off by 0.1 m: equal relative error
    gt = torch.tensor([10.0, 1.0]).reshape(1, 1, 1, 2)
    pred = torch.tensor([11.0, 1.1]).reshape(1, 1, 1, 2)
    conf = torch.ones_like(gt)
    absolute = depth_loss(pred, conf, gt, alpha=0.0, grad_weight=0.0)
    relative = depth_loss(pred, conf, gt, alpha=0.0, grad_weight=0.0, relative=True)
    assert abs(float(absolute["loss"]) - 0.55) < 1e-5 and abs(float(relative["loss"]) - 0.1) < 1e-5
    assert abs(float(relative["depth_l1"]) - 0.55) < 1e-5  # the reported L1 stays in metres
    # the confidence that minimises each pixel's cost (conf * e - alpha * log conf -> alpha / e) is
    # then the same for both pixels: the gradients on conf agree
    conf = torch.full_like(gt, 2.0).requires_grad_(True)
    depth_loss(pred, conf, gt, alpha=0.2, grad_weight=0.0, relative=True)["loss"].backward()
    assert torch.allclose(conf.grad[..., 0], conf.grad[..., 1], atol=1e-6)


def test_geometry_overfits_a_clip_and_trains_only_vggt(tmp_path):
    from training.model_io import build_model

    torch.manual_seed(0)
    model, _ = build_model({"init": "random", "assets_dir": str(tiny_assets_for_tests(tmp_path))})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.requires_grad_(False)
    vggt = model.spatial_encoder.vggt_model
    for p in vggt.parameters():
        p.requires_grad_(True)
    clip = prepare_clip(plane_clip(np.random.default_rng(1), n_frames=3), (56, 84))
    batch = {k: v[None] for k, v in clip.items()}
    opt = torch.optim.AdamW(vggt.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss, metrics = geometry_step_loss(vggt, batch, (56, 84), {})
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    changed = {component_of(k) for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"spatial_encoder"}


def test_geometry_stage_is_skipped_for_the_official_preset():
    assert run_geometry({"model": {"preset": "official"}})["skipped"] is True


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "training.cli", "sft", "--config", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spatial-mllm-train sft: error:") and "missing.yaml" in lines[0]


def test_config_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 1\nsft: {max_steps: 10, lr: {llm: 1.0e-5}}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nsft: {batch_size: 4}\n")
    cfg = load_config(tmp_path / "child.yaml", ["sft.max_steps=3", "sft.lr.connector=2e-5"])
    assert cfg == {"seed": 1, "sft": {"max_steps": 3, "batch_size": 4, "lr": {"llm": 1e-5, "connector": 2e-5}}}


def test_metrics_csv_resume_and_png(tmp_path):
    log = MetricsLog(tmp_path / "m.csv")
    for step in range(1, 6):
        log.log(step=step, loss=1.0 / step, lr=1e-3)
    resumed = MetricsLog(tmp_path / "m.csv", resume_step=3)  # rows after the checkpoint are dropped
    assert [r["step"] for r in resumed.rows] == [1, 2, 3]
    png = resumed.plot(tmp_path / "curves.png", keys=["loss", "lr"])
    import cv2
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 200 and (img < 250).any()


@pytest.mark.slow
def test_default_pipeline_smoke(tmp_path):
    """data -> geometry -> SFT -> pair-pose head -> export -> eval tables, a few steps each (about a minute)."""
    from training.pipeline import run_default

    cfg = load_config("training/configs/tiny_smoke.yaml", [f"output_dir={tmp_path / 'run'}",
                                                           f"data.root={tmp_path / 'data'}",
                                                           f"export.dir={tmp_path / 'export'}"])
    result = run_default(cfg)
    assert result["export"]["safetensors_mb"] < 30
    from ros2_spatial_mllm.inference import SpatialMLLM
    model = SpatialMLLM.load(str(tmp_path / "export"))
    assert model.answer([np.zeros((84, 112, 3), np.uint8)] * 2, "How many chairs are there?").num_tokens >= 0
    assert model.camera_source == "pair_pose"
    assert model.predict_geometry(np.zeros((3, 84, 112, 3), np.uint8))["extrinsics"].shape == (3, 3, 4)
    assert (tmp_path / "run" / "report.md").is_file()
    assert set(result["report"]["macro"]) == {"uniform", "space_aware", "prior_baseline"}
    # the paired interval is reported; with the smoke's few rooms it may be None (too few rooms)
    checks = result["report"]["checks"]
    interval = checks["space_aware_minus_uniform_vsibench_interval95"]
    assert interval is None or interval[0] <= checks["space_aware_minus_uniform_vsibench_points"] <= interval[1]


def test_patch_points_lie_on_the_plane_in_the_first_camera():
    """The plane clip's world is camera 0's frame and the plane is z = d there, so every patch's
    mean point has z = d, whichever frame sees it; frame 0's first patch is a plain unprojection."""
    from training.geometry_pretrain import patch_point_targets

    raw = plane_clip(np.random.default_rng(3), n_frames=3, hw=(56, 84))
    clip = prepare_clip(raw, (56, 84))
    pts, valid = patch_point_targets({k: v[None] for k, v in clip.items()}, 14)
    assert pts.shape == (1, 3, 4 * 6, 3) and bool(valid.all())
    d = float(raw["depth"][0, 0, 0])
    # (geometry.py unprojects pixel corners, the renderer pixel centres: half a pixel apart)
    assert torch.allclose(pts[..., 2], torch.full_like(pts[..., 2], d), atol=3e-3)
    k = raw["intrinsics"][0]
    u = (np.arange(14) + 0.5 - k[0, 2]) / k[0, 0]
    v = (np.arange(14) + 0.5 - k[1, 2]) / k[1, 1]
    assert pts[0, 0, 0, 0].item() == pytest.approx(u.mean() * d, abs=0.02)
    assert pts[0, 0, 0, 1].item() == pytest.approx(v.mean() * d, abs=0.02)


def test_point_probe_trains_the_last_aggregator_layer(tmp_path):
    from training.geometry_pretrain import PatchPointProbe
    from training.model_io import build_model

    torch.manual_seed(0)
    model, _ = build_model({"init": "random", "assets_dir": str(tiny_assets_for_tests(tmp_path))})
    vggt = model.spatial_encoder.vggt_model
    probe = PatchPointProbe(vggt)
    clip = prepare_clip(plane_clip(np.random.default_rng(4), n_frames=2), (56, 84))
    batch = {k: v[None] for k, v in clip.items()}
    opt = torch.optim.AdamW(list(vggt.parameters()) + list(probe.parameters()), lr=2e-3)
    points = []
    for _ in range(25):
        loss, metrics = geometry_step_loss(vggt, batch, (56, 84), {"point_weight": 1.0}, probe)
        loss.backward()
        opt.step()
        opt.zero_grad()
        points.append(metrics["loss_point"])
    assert probe.captured.shape[:2] == (1, 2) and probe.captured.shape[-1] == 2 * vggt.config.embed_dim
    assert points[-1] < 0.5 * points[0], points


def test_spatial_overrides_widen_the_tiny_spatial_encoder_and_round_trip(tmp_path):
    """model.spatial_overrides: a wider tiny VGGT, the connector follows its width, the sizes
    survive a save/load through the HF layout, and a geometry step runs on it."""
    from ros2_spatial_mllm.model.checkpoint import load_checkpoint, save_checkpoint
    from training.model_io import build_model

    assets = str(tiny_assets_for_tests(tmp_path / "assets"))
    model, _ = build_model({"init": "random", "assets_dir": assets, "spatial_overrides": {"embed_dim": 32, "depth": 2}})
    vggt = model.spatial_encoder.vggt_model
    assert (vggt.config.embed_dim, vggt.config.depth) == (32, 2)
    assert model.connector.merged_dim == 2 * 32 * 2 * 2 ** 2     # [2C] x temporal 2 x 2x2 merge
    save_checkpoint(model, tmp_path / "ckpt")
    loaded, report = load_checkpoint(tmp_path / "ckpt")
    assert report.ok, report.summary()
    assert loaded.spatial_encoder.vggt_model.config.embed_dim == 32
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    clip = prepare_clip(plane_clip(np.random.default_rng(2), n_frames=2), (56, 84))
    loss, metrics = geometry_step_loss(vggt, {k: v[None] for k, v in clip.items()}, (56, 84), {})
    assert torch.isfinite(loss) and metrics["depth_l1"] > 0
    default, _ = build_model({"init": "random", "assets_dir": assets})
    assert default.spatial_encoder.vggt_model.config.embed_dim == 64


def test_camera_lr_gives_the_camera_token_and_head_their_own_rate(tmp_path):
    from training.geometry_pretrain import geometry_param_groups
    from training.model_io import build_model

    model, _ = build_model({"init": "random", "assets_dir": str(tiny_assets_for_tests(tmp_path))})
    vggt = model.spatial_encoder.vggt_model
    names = {id(p): n for n, p in vggt.named_parameters() if p.requires_grad}
    shared = geometry_param_groups(vggt, {"lr": 1e-3})
    assert {g["lr"] for g in shared} == {1e-3} and sum(len(g["params"]) for g in shared) == len(names)
    split = geometry_param_groups(vggt, {"lr": 1e-3, "camera_lr": 5e-3})
    assert sum(len(g["params"]) for g in split) == len(names)
    fast = {names[id(p)] for g in split if g["lr"] == 5e-3 for p in g["params"]}
    assert {"aggregator.camera_token", "aggregator.register_token"} <= fast
    assert all(n.startswith(("aggregator.camera_token", "aggregator.register_token", "camera_head.")) for n in fast)
    assert any(n.startswith("camera_head.") for n in fast)
    assert not any(n.startswith(("aggregator.frame_blocks", "depth_head.")) for n in fast)


def test_pipeline_evaluation_side_by_side_scores_as_one_after_the_other(tmp_path, monkeypatch):
    """run_eval's samplers in two spawned processes (the pipeline's default on two or more cores)
    give the same per-task scores and prediction files as running them in this process."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    from training.data.generate import GenerateConfig, process_scene
    from training.data.splits import SPLIT_SEED_BASE
    from training.pipeline import run_eval

    data = tmp_path / "data"
    gcfg = asdict(GenerateConfig(num_scenes=2, questions_per_scene=12, num_frames=16, width=112, height=84,
                                 multispa_fraction=0.2, save_depth=True))
    for split, k in (("train", 0), ("test", 1)):
        sid = f"{split}_{SPLIT_SEED_BASE[split] + k:08d}"
        process_scene((str(data), split, SPLIT_SEED_BASE[split] + k, sid, gcfg))
        (data / f"{split}.jsonl").write_text((data / "scenes" / split / sid / "qa.jsonl").read_text())
    model = Path(__file__).resolve().parents[2] / "ros2_spatial_mllm" / "assets" / "tiny"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # two cores' budget: one thread per sampler either way
    ecfg = {"num_frames": 4, "limit": 8, "samplings": ["uniform", "space_aware"], "max_new_tokens": 24}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = run_eval(model, data, tmp_path / "alone", {**ecfg, "parallel": False})
    finally:
        torch.set_num_threads(threads)
    side = run_eval(model, data, tmp_path / "side", ecfg)
    assert set(side) == {"uniform", "space_aware", "prior_baseline"}

    def replies(run, sampling):   # [(id, reply, frames)] in file order
        lines = (tmp_path / run / sampling / "predictions.jsonl").read_text().splitlines()
        return [(r["id"], r["reply"], r["frames"]) for r in map(json.loads, lines)]

    for sampling in ("uniform", "space_aware"):
        assert side[sampling]["tasks"] == alone[sampling]["tasks"]
        assert replies("side", sampling) == replies("alone", sampling) and len(replies("side", sampling)) == 8
    # the two processes ran different samplers: the whole-video questions got other frames
    picks = {s: [frames for _, _, frames in replies("side", s)] for s in ("uniform", "space_aware")}
    assert picks["uniform"] != picks["space_aware"]
