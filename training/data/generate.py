"""Scale generation: N procedural scenes -> rendered frames + balanced QA, split by scene.

``generate_dataset(out_dir, GenerateConfig(...), workers=2)`` (CLI: ``spatial-mllm-data generate``).

Layout of ``out_dir``::

    scenes/<split>/<scene_id>/frames/000000.jpg ...   RGB frames (JPEG q90)
    scenes/<split>/<scene_id>/cameras.json            K [3,3], world_from_camera / camera_from_world [N,4,4]
    scenes/<split>/<scene_id>/meta.json               the scene in meta_info form
    scenes/<split>/<scene_id>/qa.jsonl                its rows
    scenes/<split>/<scene_id>/done.json               written last: resume skips scenes that have it
    (depth/ and instance/ PNGs with --save-depth)
    train.jsonl / val.jsonl / test.jsonl (+ .parquet), meta_info_<split>.json, summary.json

Scenes run in a process pool (one scene per task, both cores with workers=2) under a tqdm bar.
A scene that raises is not fatal: it is recorded in ``summary["failures"]`` (scene_id, split, seed,
error) and in failures.json, left without done.json (so a resume retries it), and left out of the
split files; the other scenes are written as usual.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from training.data.dataset import read_jsonl, to_row, write_jsonl, write_parquet
from training.data.qa import QA
from training.data.splits import SPLITS, scene_jobs


@dataclass
class GenerateConfig:
    num_scenes: int = 10
    questions_per_scene: int = 30
    num_frames: int = 32
    width: int = 640
    height: int = 480
    split_fractions: Tuple[float, float, float] = (0.8, 0.1, 0.1)
    save_depth: bool = False
    multispa_fraction: float = 0.35
    jpeg_quality: int = 90
    camera_pace: str = "steady"     # "dwell": the walk stops 2-3 times (scenes.make_trajectory)


def select_balanced(grouped: Dict[str, List[QA]], k: int, rng: random.Random) -> List[QA]:
    """Round-robin over task types (each shuffled) until ``k`` questions or none left."""
    pools = {t: rng.sample(v, len(v)) for t, v in grouped.items() if v}
    order = sorted(pools)
    rng.shuffle(order)
    out: List[QA] = []
    while len(out) < k and any(pools.values()):
        for t in order:
            if pools[t] and len(out) < k:
                out.append(pools[t].pop())
    return out


def process_scene(job: Tuple[str, str, int, str, Dict]) -> Dict:
    """Render one scene, write its files and QA rows; returns its summary (idempotent)."""
    import cv2
    from training.data.questions_multispa import FramePairContext, generate_multispa
    from training.data.questions_vsi import generate_vsibench
    from training.data.render import SceneRenderer
    from training.data.scenes import make_scene
    from training.data.visibility import first_visible_frames

    out_root, split, seed, scene_id, cfg_dict = job
    cfg = GenerateConfig(**cfg_dict)
    root = Path(out_root)
    scene_dir = root / "scenes" / split / scene_id
    done = scene_dir / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    scene = make_scene(seed, num_frames=cfg.num_frames, name=scene_id, pace=cfg.camera_pace)
    t1 = time.perf_counter()
    video = SceneRenderer(scene).render_video(cfg.width, cfg.height)
    t2 = time.perf_counter()
    frames_dir = scene_dir / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(video.rgb):
        cv2.imwrite(str(frames_dir / f"{i:06d}.jpg"), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    if cfg.save_depth:
        for sub in ("depth", "instance"):
            (scene_dir / sub).mkdir(exist_ok=True)
        for i in range(len(video.depth)):
            cv2.imwrite(str(scene_dir / "depth" / f"{i:06d}.png"), np.round(video.depth[i] * 1000).clip(0, 65535).astype(np.uint16))
            cv2.imwrite(str(scene_dir / "instance" / f"{i:06d}.png"), video.instance[i].astype(np.uint16))
    (scene_dir / "cameras.json").write_text(json.dumps({
        "intrinsics": video.intrinsics.tolist(), "width": cfg.width, "height": cfg.height,
        "world_from_camera": video.world_from_camera.round(6).tolist(),
        "camera_from_world": video.camera_from_world.round(6).tolist()}))
    frames_rel = str(frames_dir.relative_to(root))
    meta = scene.to_meta(video_path=frames_rel)
    (scene_dir / "meta.json").write_text(json.dumps({scene_id: meta.to_json()}))
    rng = random.Random(seed)
    vis = first_visible_frames(video.instance)
    vsi = generate_vsibench(meta, rng, visibility=vis)
    ctx = FramePairContext(video.depth, video.instance, video.intrinsics, video.world_from_camera, meta, rng)
    multi = generate_multispa(ctx)
    k_multi = int(round(cfg.questions_per_scene * cfg.multispa_fraction))
    chosen = select_balanced(multi, k_multi, rng)
    chosen += select_balanced(vsi, cfg.questions_per_scene - len(chosen), rng)
    if len(chosen) < cfg.questions_per_scene:   # top up from whichever family has questions left
        used = {id(q) for q in chosen}
        rest = {t: [q for q in v if id(q) not in used] for t, v in {**vsi, **multi}.items()}
        chosen += select_balanced(rest, cfg.questions_per_scene - len(chosen), rng)
    rows = []
    for n, qa in enumerate(chosen):
        qa.frames_path = frames_rel
        if qa.family == "vsibench":
            qa.frame_indices = list(range(cfg.num_frames))
        rows.append(to_row(qa.to_record(), split, cfg.num_frames, f"{scene_id}_{n:03d}"))
    write_jsonl(rows, scene_dir / "qa.jsonl")
    t3 = time.perf_counter()
    tasks: Dict[str, int] = {}
    for r in rows:
        tasks[r["task_type"]] = tasks.get(r["task_type"], 0) + 1
    summary = {"scene_id": scene_id, "split": split, "seed": seed, "questions": len(rows), "tasks": tasks,
               "objects": len(scene.objects), "render_s": round(t2 - t1, 3), "scene_s": round(t1 - t0, 3),
               "qa_s": round(t3 - t2, 3), "frames": cfg.num_frames}
    done.write_text(json.dumps(summary))
    return summary


def process_scene_or_failure(job: Tuple[str, str, int, str, Dict]) -> Dict:
    """process_scene, but an exception becomes {"failed": True, scene_id, split, seed, error}."""
    try:
        return process_scene(job)
    except Exception as exc:  # noqa: BLE001 - one bad scene must not abort the dataset
        message = " ".join(str(exc).split())[:300]
        return {"failed": True, "scene_id": job[3], "split": job[1], "seed": job[2],
                "error": f"{type(exc).__name__}: {message}"}


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def generate_dataset(out_dir: str | Path, cfg: GenerateConfig, workers: int = 2, progress: bool = True) -> Dict:
    """Generate (or resume) the dataset; returns the summary also written to summary.json."""
    from tqdm import tqdm

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    jobs = [(str(root), split, seed, sid, asdict(cfg)) for split, seed, sid in scene_jobs(cfg.num_scenes, cfg.split_fractions)]
    pending = [j for j in jobs if not (root / "scenes" / j[1] / j[3] / "done.json").exists()]
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="scenes", unit="scene", disable=not progress)
    failures: List[Dict] = []
    if workers <= 1 or len(pending) <= 1:
        for result in map(process_scene_or_failure, pending):
            failures += [result] if result.get("failed") else []
            bar.update(1)
    else:
        # forkserver, not fork: a fork of a process that already runs threads (torch's pools, a
        # DDS participant in the same process) can inherit a held lock and hang the child.
        ctx = mp.get_context("forkserver" if os.name == "posix" else "spawn")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for result in pool.imap_unordered(process_scene_or_failure, pending, chunksize=1):
                failures += [result] if result.get("failed") else []
                bar.update(1)
    bar.close()
    failures.sort(key=lambda f: (SPLITS.index(f["split"]), f["seed"]))
    failed_ids = {f["scene_id"] for f in failures}
    elapsed = time.perf_counter() - t0
    summary: Dict = {"scenes": len(jobs), "generated_now": len(pending) - len(failures), "elapsed_s": round(elapsed, 2),
                     "splits": {}, "failures": failures}
    per_task: Dict[str, int] = {}
    render_s = []
    for split in SPLITS:
        rows, metas = [], {}
        for job in jobs:
            if job[1] != split or job[3] in failed_ids:
                continue
            sdir = root / "scenes" / split / job[3]
            rows.extend(read_jsonl(sdir / "qa.jsonl"))
            metas.update(json.loads((sdir / "meta.json").read_text()))
            render_s.append(json.loads((sdir / "done.json").read_text())["render_s"])
        write_jsonl(rows, root / f"{split}.jsonl")
        parquet = write_parquet(rows, root / f"{split}.parquet")
        (root / f"meta_info_{split}.json").write_text(json.dumps(metas))
        for r in rows:
            per_task[r["task_type"]] = per_task.get(r["task_type"], 0) + 1
        summary["splits"][split] = {"scenes": len(metas), "questions": len(rows), "parquet": parquet}
    summary["tasks"] = dict(sorted(per_task.items()))
    summary["questions"] = sum(per_task.values())
    if render_s:
        summary["mean_render_s_per_frame"] = round(float(np.mean(render_s)) / cfg.num_frames, 4)
    (root / "failures.json").write_text(json.dumps(failures, indent=1))
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
