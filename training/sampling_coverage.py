"""Ground-truth voxel coverage of the frames each sampler picks: is a model's geometry good enough
for space-aware sampling?

    python -m training.sampling_coverage --model runs/tiny_default/cached_sft/final --data runs/data/tiny_frames
    python -m training.sampling_coverage --preset tiny --data DIR --scenes 2   # tiny CPU run, any rendered split

For each of the first --scenes videos of --split: voxelise every frame from the renderer's depth
and poses (the truth), then pick --frames frames three ways: uniformly; by space-aware sampling
on that sensor geometry (what training's `mixed` frame sets and a robot with a depth camera get);
by space-aware sampling on the model's own predicted depth and cameras over --candidates uniform
candidates (what evaluation and a camera-only robot get; --confidence: which depth points count).
Each pick is scored by the fraction of the video's true voxels (the sampler's own grid) its frames
see. Prints one JSON object with the mean per sampler, and the mean camera-position, camera-
rotation and depth errors of the model's geometry, each camera error next to that of a trivial "no
motion" guess (every camera where the first one is: what a camera head that learned nothing would
score), and the correlation of predicted and true headings (does the head read each frame's turn
off the images?); scenes must have been rendered with save_depth.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def coverage_of(voxels: list, chosen: list[int]) -> float:
    """Fraction of the union of all frames' voxels seen by the `chosen` positions, on the grid
    space_aware_sample queries (the reference's bbox-relative voxel size)."""
    from ros2_spatial_mllm.sampling.space_aware import BBOX_DIVISIONS, _query_factor

    factor = _query_factor(voxels, None, BBOX_DIVISIONS)
    keys = [np.asarray(v.keys_at(factor)).reshape(-1) for v in voxels]
    total = np.unique(np.concatenate(keys)).size
    seen = np.unique(np.concatenate([keys[i] for i in chosen])).size if chosen else 0
    return seen / total if total else 0.0


def geometry_errors(prediction: dict, scene_dir: Path, frame_ids: list[int]) -> dict:
    """Mean camera-position error (metres; both trajectories relative to the first frame), camera
    rotation error (degrees), each beside the "no motion" guess's, heading correlation, and mean
    absolute depth error (metres, valid pixels, truth resized to the model's resolution) of one
    `SpatialMLLM.predict_geometry` output against the renderer's truth for those frame ids."""
    import cv2

    cams = json.loads((scene_dir / "cameras.json").read_text())
    truth = [np.linalg.inv(np.asarray(cams["camera_from_world"][f], np.float64)) for f in frame_ids]  # world_from_cam
    first = np.linalg.inv(truth[0])                                       # cam0_from_world
    relative = np.stack([first @ t for t in truth])                       # [N, 4, 4] cam0_from_cam
    true_centres, true_rot = relative[:, :3, 3], relative[:, :3, :3]      # [N, 3], [N, 3, 3]
    ext = np.asarray(prediction["extrinsics"], np.float64)                # [N, 3, 4] cam_from_cam0
    pred_centres = -np.einsum("nji,nj->ni", ext[:, :, :3], ext[:, :, 3])  # -R^T t
    pred_rot = np.transpose(ext[:, :, :3], (0, 2, 1))                     # R^T: cam0_from_cam
    depth = np.asarray(prediction["depth"], np.float32)                   # [N, h, w]
    errs = []
    for f, d in zip(frame_ids, depth):
        gt = cv2.imread(str(scene_dir / "depth" / f"{f:06d}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) * 1e-3
        gt = cv2.resize(gt, (d.shape[1], d.shape[0]), interpolation=cv2.INTER_NEAREST)
        valid = gt > 0
        errs.append(np.abs(d - gt)[valid].mean() if valid.any() else 0.0)
    return {"camera_position_error_m": float(np.linalg.norm(pred_centres - true_centres, axis=-1).mean()),
            "camera_position_error_no_motion_m": float(np.linalg.norm(true_centres, axis=-1).mean()),
            "camera_rotation_error_deg": _mean_angle_deg(pred_rot, true_rot),
            "camera_rotation_error_no_motion_deg": _mean_angle_deg(np.broadcast_to(np.eye(3), true_rot.shape), true_rot),
            "camera_heading_correlation": _heading_correlation(pred_rot, true_rot),
            "depth_abs_error_m": float(np.mean(errs))}


def _heading_correlation(pred_rot: np.ndarray, true_rot: np.ndarray) -> float:
    """Pearson correlation of predicted and true headings (camera z axis in camera 0's x-z plane)
    over frames 1..N-1 [N, 3, 3]: near 1 when the camera head reads each frame's turn off the
    images, near 0 when it predicts one turn for every frame (a prior). 0 when either is constant."""
    def heading(rot):
        return np.unwrap(np.arctan2(rot[1:, 0, 2], rot[1:, 2, 2]))
    a, b = heading(pred_rot), heading(true_rot)
    if len(a) < 2 or a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _mean_angle_deg(rot_a: np.ndarray, rot_b: np.ndarray) -> float:
    """Mean geodesic angle (degrees) between rotations [N, 3, 3] a and b."""
    cos = (np.einsum("nij,nij->n", rot_a, rot_b) - 1.0) / 2.0             # (trace(a^T b) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())


def measure(model, data_dir: Path, split: str = "test", scenes: int = 30, k: int = 8, candidates: int = 32,
            confidence: str = "frame") -> dict:
    """Mean ground-truth coverage per sampler over the first `scenes` videos of the split, and the
    mean geometry errors of the model's prediction over the candidates. confidence: which depth
    points the model's voxels keep, as in spatial-mllm-eval --confidence (frame: above each frame's
    median confidence, the node's rule; batch: above the median over all candidates)."""
    from ros2_spatial_mllm.sampling import frame_voxels_from_prediction, space_aware_sample, uniform_sample
    from training.data.dataset import read_jsonl, sensor_frame_voxels
    from training.evaluate import load_frames

    result = {"uniform": [], "space_aware_sensor": [], "space_aware_model": []}  # + geometry_errors' keys
    seen = set()
    for row in read_jsonl(data_dir / f"{split}.jsonl"):
        path = row.get("frames_path")
        if not path or path in seen or row.get("family", "vsibench") != "vsibench":
            continue
        seen.add(path)
        ids = [int(i) for i in row["frame_indices"]]
        truth = sensor_frame_voxels((data_dir / path).parent, ids)
        result["uniform"].append(coverage_of(truth, list(uniform_sample(len(ids), k))))
        result["space_aware_sensor"].append(coverage_of(truth, space_aware_sample(truth, k).indices))
        cand = list(uniform_sample(len(ids), min(candidates, len(ids))))
        frames = np.stack(load_frames(data_dir, path, [ids[c] for c in cand]))
        prediction = model.predict_geometry(frames)
        voxels = frame_voxels_from_prediction(prediction, global_percentile=confidence == "batch")
        picked = space_aware_sample(voxels, k).indices
        for name, value in geometry_errors(prediction, (data_dir / path).parent, [ids[c] for c in cand]).items():
            result.setdefault(name, []).append(value)
        result["space_aware_model"].append(coverage_of(truth, [cand[i] for i in picked]))
        if len(seen) >= scenes:
            break
    if not seen:
        raise ValueError(f"{data_dir / (split + '.jsonl')}: no VSI-Bench videos")
    return {"scenes": len(seen), "frames": k, "candidates": candidates, "confidence": confidence,
            **{name: round(float(np.mean(v)), 4) for name, v in result.items()}}


def main(argv=None) -> int:
    from ros2_spatial_mllm.sampling.sources import add_confidence_option

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local checkpoint directory (its spatial encoder predicts the geometry)")
    src.add_argument("--preset", choices=["tiny"], help="embedded preset (tiny: the bundled trained default)")
    p.add_argument("--data", required=True, help="dataset directory written by the data engine (with depth)")
    p.add_argument("--split", default="test", help="split name: DATA/<split>.jsonl")
    p.add_argument("--scenes", type=int, default=30, help="videos to score")
    p.add_argument("--frames", type=int, default=8, help="frames each sampler picks")
    p.add_argument("--candidates", type=int, default=32, help="uniform candidates the model's geometry sees")
    add_confidence_option(p)
    args = p.parse_args(argv)
    try:
        from ros2_spatial_mllm.inference import SpatialMLLM

        model = SpatialMLLM.load(args.model, preset=args.preset or "tiny")
        print(json.dumps(measure(model, Path(args.data), args.split, args.scenes, args.frames, args.candidates,
                                 args.confidence)))
    except Exception as exc:  # one line, no traceback
        print(f"sampling_coverage: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
