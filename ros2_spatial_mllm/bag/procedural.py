"""Adapter to the data engine's procedural scenes (training/data, engineer E's renderer).

``procedural_frames(seed, frames, size)`` -> (rgb [N,H,W,3] uint8, depth [N,H,W] float32 m with
NaN where nothing was hit, K [3,3], world_from_camera [N,4,4], answers dict) where the answers
are the data engine's VSI-Bench questions for that scene (up to ``per_task`` per task type),
restricted to objects the rendered frames show. Needs the data engine's optional dependencies
(embreex, trimesh); the box room in ``bag.synthetic`` needs nothing but numpy.
"""
from __future__ import annotations

import random

import numpy as np

__all__ = ["procedural_frames"]


def procedural_frames(seed: int, frames: int, size: tuple[int, int], per_task: int = 2):
    try:
        from training.data.questions_vsi import generate_vsibench
        from training.data.render import render_scene
        from training.data.scenes import make_scene
        from training.data.visibility import first_visible_frames
    except ImportError as exc:
        raise RuntimeError(f"procedural scenes need the data engine (training/data) and its "
                           f"dependencies: {exc}") from exc
    width, height = size
    scene = make_scene(seed, num_frames=frames)
    video = render_scene(scene, width, height)
    depth = video.depth.astype(np.float32).copy()
    depth[~(depth > 0)] = np.nan
    meta = scene.to_meta()
    grouped = generate_vsibench(meta, random.Random(seed), visibility=first_visible_frames(video.instance))
    questions = []
    for task, items in sorted(grouped.items()):
        for qa in items[:per_task]:
            questions.append({"question": qa.question, "options": list(qa.options), "answer": qa.answer,
                              "kind": "choice" if qa.options else "number", "task_type": task,
                              "ground_truth": qa.ground_truth})
    facts = {"scene": scene.name, "seed": seed, "room_size_m2": round(float(meta.room_size), 2),
             "counts": dict(meta.object_counts), "total_objects": int(sum(meta.object_counts.values())),
             "camera_path_length_m": round(float(np.linalg.norm(
                 np.diff(video.world_from_camera[:, :3, 3], axis=0), axis=1).sum()), 3)}
    return video.rgb, depth, video.intrinsics, video.world_from_camera, {"facts": facts, "questions": questions}
