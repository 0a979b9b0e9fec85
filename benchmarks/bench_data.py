"""Data-engine benchmark: render time per frame, QA generation rate, conformance figures.

Run (tiny CPU run first, then the default)::

    OMP_NUM_THREADS=1 python benchmarks/bench_data.py --scenes 1 --frames 16      # seconds
    OMP_NUM_THREADS=1 python benchmarks/bench_data.py                             # 3 scenes x 128 frames, 640x480

Writes benchmarks/results/data.json (override with --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def bench_render(scenes: int, frames: int, width: int, height: int) -> dict:
    from training.data.render import SceneRenderer
    from training.data.scenes import make_scene
    scene_s, build_s, per_frame, cpu_per_frame = [], [], [], []
    for seed in range(scenes):
        t0 = time.perf_counter()
        scene = make_scene(1000 + seed, num_frames=frames)
        t1 = time.perf_counter()
        renderer = SceneRenderer(scene)
        t2, c2 = time.perf_counter(), time.process_time()
        renderer.render_video(width, height)
        t3, c3 = time.perf_counter(), time.process_time()
        cpu_per_frame.append((c3 - c2) / frames)       # CPU time: robust to other jobs on a shared box
        scene_s.append(t1 - t0)
        build_s.append(t2 - t1)
        per_frame.append((t3 - t2) / frames)
    return {"scenes": scenes, "frames_per_scene": frames, "width": width, "height": height,
            "scene_build_s_mean": round(float(np.mean(scene_s)), 4),
            "embree_build_s_mean": round(float(np.mean(build_s)), 4),
            "render_s_per_frame_mean": round(float(np.mean(per_frame)), 4),
            "render_s_per_frame_min": round(float(np.min(per_frame)), 4),
            "render_cpu_s_per_frame_mean": round(float(np.mean(cpu_per_frame)), 4),
            "scene_of_frames_s_mean": round(float(np.mean(per_frame)) * frames, 2)}


def bench_qa(scenes: int, frames: int) -> dict:
    from training.data.questions_multispa import FramePairContext, generate_multispa
    from training.data.questions_vsi import generate_vsibench
    from training.data.render import SceneRenderer
    from training.data.scenes import make_scene
    from training.data.visibility import first_visible_frames
    n_vsi = n_multi = 0
    t_vsi = t_multi = 0.0
    for seed in range(scenes):
        scene = make_scene(2000 + seed, num_frames=frames)
        video = SceneRenderer(scene).render_video(320, 240)
        meta, rng = scene.to_meta(), random.Random(seed)
        t0 = time.perf_counter()
        vis = first_visible_frames(video.instance)
        n_vsi += sum(len(v) for v in generate_vsibench(meta, rng, visibility=vis).values())
        t1 = time.perf_counter()
        ctx = FramePairContext(video.depth, video.instance, video.intrinsics, video.world_from_camera, meta, rng)
        n_multi += sum(len(v) for v in generate_multispa(ctx).values())
        t2 = time.perf_counter()
        t_vsi += t1 - t0
        t_multi += t2 - t1
    return {"scenes": scenes, "vsibench_candidates": n_vsi, "vsibench_qa_per_s": round(n_vsi / t_vsi, 1),
            "multispa_candidates": n_multi, "multispa_qa_per_s": round(n_multi / t_multi, 1),
            "qa_generation_s_per_scene": round((t_vsi + t_multi) / scenes, 3)}


def bench_conformance() -> dict:
    from training.data.conformance import run_conformance
    data = ROOT / "tests" / "data" / "vsibench"
    t0 = time.perf_counter()
    rep = run_conformance(data / "scannet_meta_info_val.json", data / "scannet_questions.json")
    out = {"elapsed_s": round(time.perf_counter() - t0, 2), "total": rep["total"],
           "skipped_video_only": rep["skipped_video_only"], "tasks": {}}
    for task, row in rep["tasks"].items():
        keep = {k: row[k] for k in ("checked", "agree", "agree_rate", "unresolved", "mra", "within_0.1m_rate") if k in row}
        out["tasks"][task] = keep
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=3, help="scenes to render / generate QA for")
    p.add_argument("--frames", type=int, default=128, help="frames per scene for the render timing")
    p.add_argument("--width", type=int, default=640, help="render width")
    p.add_argument("--height", type=int, default=480, help="render height")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data.json"), help="output JSON")
    args = p.parse_args()
    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                          "load_avg_1min": round(os.getloadavg()[0], 2)},
              "render": bench_render(args.scenes, args.frames, args.width, args.height),
              "qa": bench_qa(args.scenes, min(args.frames, 32)),
              "conformance_scannet": bench_conformance()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
