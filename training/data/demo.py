"""Bundled demo clip: a procedural room rendered by our renderer, with its ground truth.

Regenerate (deterministic)::

    spatial-mllm-data demo --out ros2_spatial_mllm/assets/demo
    # = python -m training.data.cli demo --out ros2_spatial_mllm/assets/demo

Writes ``room.mp4`` (MPEG-4 part 2, readable by OpenCV), ``depth/NNNNNN.png`` (uint16 PNG,
millimetres, 0 = no hit), ``instance/NNNNNN.png`` (uint8 PNG, 0 = room structure, k = instance
id) and ``room.json``: frame size, fps, intrinsics,
per-frame OpenCV camera_from_world and world_from_camera, the scene in meta_info form, object
counts, first-visible frame per instance, and one QA pair per VSI-Bench task type.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict

import cv2
import numpy as np

from training.data.questions_vsi import generate_vsibench
from training.data.render import SceneRenderer
from training.data.scenes import make_scene
from training.data.visibility import first_visible_frames

DEMO_SEED = 20259
DEMO_FRAMES = 48
DEMO_SIZE = (320, 240)
DEMO_FPS = 8


def write_mp4(frames_rgb: np.ndarray, path: Path, fps: int) -> None:
    """frames [N,H,W,3] uint8 RGB -> mp4 (mp4v codec)."""
    h, w = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with the mp4v codec")
    for f in frames_rgb:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()


def build_demo(out_dir: str | Path, seed: int = DEMO_SEED, num_frames: int = DEMO_FRAMES,
               size=DEMO_SIZE, fps: int = DEMO_FPS) -> Dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(seed, num_frames=num_frames, name="demo_room", min_objects=12, max_objects=18)
    video = SceneRenderer(scene).render_video(size[0], size[1])
    write_mp4(video.rgb, out / "room.mp4", fps)
    for sub in ("depth", "instance"):
        (out / sub).mkdir(exist_ok=True)
        for old in (out / sub).glob("*.png"):
            old.unlink()
    depth_mm = np.round(video.depth * 1000.0).clip(0, 65535).astype(np.uint16)
    for i in range(num_frames):
        cv2.imwrite(str(out / "depth" / f"{i:06d}.png"), depth_mm[i], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        cv2.imwrite(str(out / "instance" / f"{i:06d}.png"), video.instance[i].astype(np.uint8),
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    vis = first_visible_frames(video.instance)
    meta = scene.to_meta(video_path="room.mp4")
    grouped = generate_vsibench(meta, random.Random(seed), visibility=vis)
    qa = []
    for task in sorted(grouped):
        item = grouped[task][0]
        qa.append({"task_type": task, "question": item.question, "options": item.options,
                   "answer": item.answer, "ground_truth": item.ground_truth})
    seen = {o.instance_id for o in scene.objects if o.instance_id in vis}
    counts_seen: Dict[str, int] = {}
    for o in scene.objects:
        if o.instance_id in seen:
            counts_seen[o.category] = counts_seen.get(o.category, 0) + 1
    info = {
        "regenerate": "spatial-mllm-data demo --out ros2_spatial_mllm/assets/demo",
        "seed": seed, "num_frames": num_frames, "width": size[0], "height": size[1], "fps": fps,
        "video": "room.mp4", "depth": "depth/%06d.png (uint16 millimetres, 0 = no hit)",
        "instance": "instance/%06d.png (uint8, 0 = room structure, k = instances[].instance_id)",
        "intrinsics": video.intrinsics.round(6).tolist(),
        "camera_from_world": video.camera_from_world.round(6).tolist(),
        "world_from_camera": video.world_from_camera.round(6).tolist(),
        "conventions": "OpenCV camera (x right, y down, z forward); world z up, metres; depth = z-depth",
        "room_size_m2": round(float(meta.room_size), 2),
        "object_counts": meta.object_counts,
        "object_counts_visible": counts_seen,
        "first_visible_frame": {str(k): int(v) for k, v in sorted(vis.items())},
        "instances": [{"instance_id": o.instance_id, "category": o.category,
                       "center": np.round(o.center, 3).tolist(), "size": np.round(o.size, 3).tolist()}
                      for o in scene.objects],
        "meta_info": meta.to_json(),
        "qa": qa,
    }
    (out / "room.json").write_text(json.dumps(info, indent=1))
    return info
