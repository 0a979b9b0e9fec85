"""Small self-made datasets for tests and smoke runs of the training stages (no data engine
needed): a QA set in the data engine's JSONL shape, and geometry clips with exact depth/poses.

    python -m training.fixtures --out runs/fixture      # writes train.jsonl, test.jsonl, frames/,
                                                        # train_geometry/*.npz
QA: each "scene" is a clip of coloured squares on a grey floor; questions ask how many squares
there are (number), which colour is most frequent (multiple choice) and the camera displacement
(vector). Geometry: a textured plane seen by a translating, slightly rotating pinhole camera; the
depth and cam_from_world are exact.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}


def _scene_frames(rng: np.random.Generator, n_frames: int, hw: tuple[int, int], squares: list) -> np.ndarray:
    h, w = hw
    frames = np.full((n_frames, h, w, 3), 120, np.uint8)
    for f in range(n_frames):
        shift = int(round(f * 2))
        for (y, x, colour) in squares:
            y0, x0 = (y + shift) % (h - 12), (x + shift) % (w - 12)
            frames[f, y0:y0 + 12, x0:x0 + 12] = COLOURS[colour]
    noise = rng.integers(0, 8, size=frames.shape, dtype=np.uint8)
    return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def make_qa_fixture(out_dir: str | Path, n_scenes: int = 6, n_frames: int = 8, hw: tuple[int, int] = (112, 112),
                    seed: int = 0, test_fraction: float = 0.34) -> Path:
    """Write frames/<scene>/<i>.png and train.jsonl / test.jsonl; returns out_dir."""
    import cv2

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(n_scenes * test_fraction)))
    rows = {"train": [], "test": []}
    for s in range(n_scenes):
        count = int(rng.integers(1, 6))
        colours = [str(c) for c in rng.choice(list(COLOURS), size=count)]
        squares = [(int(rng.integers(0, 90)), int(rng.integers(0, 90)), c) for c in colours]
        frames = _scene_frames(rng, n_frames, hw, squares)
        names = []
        for i, fr in enumerate(frames):
            rel = Path("frames") / f"scene{s:03d}" / f"{i:03d}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / rel), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
            names.append(str(rel))
        split = "test" if s >= n_scenes - n_test else "train"
        top = max(COLOURS, key=lambda c: (colours.count(c), -list(COLOURS).index(c)))
        options = list(COLOURS)
        base = {"scene_id": f"scene{s:03d}", "frames": names, "difficulty": "easy" if count <= 2 else "hard"}
        rows[split] += [
            {**base, "id": f"{s}-count", "question_type": "object_counting", "question": "How many squares are there?",
             "answer": count},
            {**base, "id": f"{s}-colour", "question_type": "colour_majority", "question": "Which colour is most frequent?",
             "options": [f"{l}. {c}" for l, c in zip("ABCD", options)], "answer": "ABCD"[options.index(top)]},
            {**base, "id": f"{s}-move", "question_type": "camera_displacement", "answer_kind": "vector",
             "question": "What is the camera displacement (x, y, z) in meters between the first and last frame?",
             "answer": [round(0.1 * (n_frames - 1), 2), 0.0, 0.0]},
        ]
    for split, recs in rows.items():
        with open(out / f"{split}.jsonl", "w") as fh:
            for r in recs:
                fh.write(json.dumps(r) + "\n")
    return out


def plane_clip(rng: np.random.Generator, n_frames: int = 4, hw: tuple[int, int] = (112, 112), focal: float = 90.0) -> dict:
    """A textured plane at z = d (world), camera k at translation t_k with a small yaw.
    Returns images [S, H, W, 3] uint8, depth [S, H, W], cam_from_world [S, 4, 4], intrinsics [S, 3, 3]."""
    h, w = hw
    d = float(rng.uniform(1.5, 4.0))
    freq = rng.uniform(1.0, 3.0, size=2)
    phase = rng.uniform(0, 2 * math.pi, size=3)
    k = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]], np.float64)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u + 0.5 - w / 2) / focal, (v + 0.5 - h / 2) / focal, np.ones_like(u)], -1)  # camera frame
    images, depths, extr = [], [], []
    step = rng.uniform(-0.15, 0.15, size=3)
    yaw_step = rng.uniform(-0.08, 0.08)
    for i in range(n_frames):
        yaw = yaw_step * i
        r_wc = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])  # world_from_cam
        t_wc = step * i
        dirs = rays @ r_wc.T                       # [H, W, 3] ray directions in world
        lam = (d - t_wc[2]) / dirs[..., 2]         # ray parameter to hit z = d
        pts = t_wc + lam[..., None] * dirs         # world points
        depth = lam * 1.0                          # camera-z of the hit (rays have z_cam = 1)
        tex = [0.5 + 0.5 * np.sin(freq[0] * 4 * pts[..., 0] + phase[c]) * np.cos(freq[1] * 4 * pts[..., 1] + phase[c])
               for c in range(3)]
        images.append((np.stack(tex, -1) * 255).clip(0, 255).astype(np.uint8))
        depths.append(depth.astype(np.float32))
        cw = np.eye(4)
        cw[:3, :3] = r_wc.T
        cw[:3, 3] = -r_wc.T @ t_wc
        extr.append(cw)
    return {"images": np.stack(images), "depth": np.stack(depths), "cam_from_world": np.stack(extr),
            "intrinsics": np.repeat(k[None], n_frames, 0)}


def make_geometry_fixture(out_dir: str | Path, n_clips: int = 4, n_frames: int = 4, hw: tuple[int, int] = (112, 112),
                          seed: int = 0, split: str = "train") -> list[str]:
    out = Path(out_dir) / f"{split}_geometry"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for c in range(n_clips):
        path = out / f"clip{c:03d}.npz"
        np.savez_compressed(path, **plane_clip(rng, n_frames, hw))
        files.append(str(path))
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="write the small training fixture (QA + geometry clips)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--scenes", type=int, default=6, help="number of QA scenes")
    parser.add_argument("--clips", type=int, default=4, help="number of geometry clips")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    make_qa_fixture(args.out, n_scenes=args.scenes, seed=args.seed)
    make_geometry_fixture(args.out, n_clips=args.clips, seed=args.seed)
    print(f"wrote fixture to {args.out}")
    return 0



def tiny_assets_for_tests(scratch: str | Path) -> Path:
    """The package's tiny assets (tokenizer, processor, config) when present, else B's
    generator writes them into `scratch` (tests never write into the package)."""
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR, write_tiny_assets

    if (TINY_ASSETS_DIR / "tokenizer.json").is_file() and (TINY_ASSETS_DIR / "config.json").is_file():
        return TINY_ASSETS_DIR
    out = Path(scratch) / "tiny_assets"
    if not (out / "config.json").is_file():
        write_tiny_assets(out)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
