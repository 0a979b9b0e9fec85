"""QA records and their frames: reading the data engine's JSONL splits, the reply a record
trains towards, and which of a record's candidate frames a question sees (uniform, space-aware
on sensor depth, or training's `mixed` sets), read as RGB arrays.

Record fields read here (training/data/dataset.py rows; extra fields ignored): question,
options, answer, answer_text, task_type / question_type, frames_path + frame_indices (frame k =
<root>/<frames_path>/<k:06d>.jpg) or an explicit `frames` list, num_frames, space_aware_indices.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def load_jsonl(path: str | Path) -> list[dict]:
    out = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                rec = json.loads(line)
                rec.setdefault("_root", str(Path(path).parent))
                out.append(rec)
    return out


def load_qa_records(data_cfg: dict, split: str = "train") -> list[dict]:
    """data.<split>_jsonl (path or list of paths), or data.root/<split>.jsonl."""
    paths = data_cfg.get(f"{split}_jsonl")
    if paths is None and data_cfg.get("root"):
        paths = str(Path(data_cfg["root"]) / f"{split}.jsonl")
    if paths is None:
        return []
    records: list[dict] = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        records += load_jsonl(p)
    limit = data_cfg.get(f"max_{split}_records")
    return records[: int(limit)] if limit else records


def task_family(rec: dict) -> str:
    return str(rec.get("task_type") or rec.get("question_type") or rec.get("task") or "unknown")


def answer_text(rec: dict, answer_format: str = "bare") -> str:
    """The target reply for SFT: option letter, number as written, or '(x, y, z)' for vectors."""
    if rec.get("answer_text") is not None:
        text = str(rec["answer_text"])
    else:
        gt = rec.get("answer")
        if isinstance(gt, (list, tuple)):
            text = "(" + ", ".join(f"{float(v):.2f}" for v in gt) + ")"
        elif isinstance(gt, float):
            text = f"{gt:.1f}" if abs(gt) < 100 else f"{gt:.0f}"
        else:
            text = str(gt)
    return f"<answer>{text}</answer>" if answer_format == "tags" else text


def frame_paths(rec: dict, data_cfg: dict) -> list[Path]:
    """The question's candidate frames: the data engine's `frames_path`/{k:06d}.jpg for k in
    `frame_indices` (all `num_frames` when empty), or an explicit `frames` list."""
    root = Path(data_cfg.get("root") or rec.get("_root", "."))
    if rec.get("frames_path"):
        idx = rec.get("frame_indices") or list(range(int(rec.get("num_frames", 0))))
        names = [str(Path(rec["frames_path"]) / f"{int(k):06d}.jpg") for k in idx]
    else:
        names = rec.get("frames") or rec.get("frame_paths") or []
    return [p if p.is_absolute() else root / p for p in map(Path, names)]


def choose_frames(n: int, k: int, mode: str = "uniform", rec: dict | None = None, data_cfg: dict | None = None) -> list[int]:
    """K of n candidate frame positions (sorted by time).

    'uniform' (C's uniform_sample), 'all', or 'space_aware': C's voxel max-coverage over the
    scene's sensor depth + poses (data engine scenes rendered with --save-depth; the node's
    path with a depth camera), falling back to uniform when the scene has no depth; with
    data.space_aware_picks, the picks of a model's own geometry read from that file (the node's
    path without a depth camera; training/model_picks.py)."""
    from ros2_spatial_mllm.sampling import uniform_sample

    if mode == "all" or n <= k:
        return list(range(n))
    if mode == "mixed" and rec is not None:
        # per question (stable hash of its id): uniform, space-aware, or uniform shifted by a third
        # or two thirds of the spacing; the whole-video questions of a scene then see several frame
        # sets instead of one, and both of the samplers the model is evaluated with.
        # data.space_aware_share (default 1/4: one of the four kinds) moves the space-aware share;
        # the other kinds share the rest equally.
        import zlib

        h = zlib.crc32(str(rec.get("id", "")).encode())
        share = float((data_cfg or {}).get("space_aware_share", 0.25))
        pick = h % 4 if share == 0.25 else (1 if (h % 1000) < share * 1000 else (0, 2, 3)[(h // 1000) % 3])
        if pick == 1:
            return choose_frames(n, k, "space_aware", rec, data_cfg)
        if pick >= 2:
            spacing = n / k
            return [min(n - 1, int(i * spacing + spacing * (pick - 1) / 3.0)) for i in range(k)]
        mode = "uniform"
    if mode == "space_aware" and rec is not None:
        if rec.get("space_aware_indices"):
            return sorted(int(i) for i in rec["space_aware_indices"])[:k]
        if (data_cfg or {}).get("space_aware_picks"):
            return _model_picks(rec, data_cfg, n, k)
        chosen = _sensor_space_aware(rec, data_cfg or {}, k)
        if chosen is not None:
            return chosen
    return list(uniform_sample(n, k))


_VOXEL_CACHE: dict[tuple, list] = {}
_SENSOR_PICKS: dict[tuple, list[int]] = {}
_PICKS: dict[str, dict] = {}


def forget_picks(path) -> None:
    """Drop a picks file read earlier in this process (it has just been rewritten)."""
    _PICKS.pop(str(path), None)


def _model_picks(rec: dict, data_cfg: dict, n: int, k: int) -> list[int]:
    """Positions picked by the model's own geometry (data.space_aware_picks: a file written by
    `python -m training.model_picks`), as the node picks at query time. A video missing from the
    file, or picks made for another K, is an error: falling back would silently mix samplers."""
    from training.model_picks import picks_key

    path = str(data_cfg["space_aware_picks"])
    if path not in _PICKS:
        _PICKS[path] = json.loads(Path(path).read_text())
    doc = _PICKS[path]
    if int(doc.get("num_frames", k)) != k:
        raise ValueError(f"{path}: picks are for {doc.get('num_frames')} frames, data.num_frames is {k}")
    idx = rec.get("frame_indices") or list(range(n))
    key = picks_key(rec.get("frames_path", ""), idx)
    if key not in doc["picks"]:
        raise ValueError(f"{path}: no picks for {key} (rerun python -m training.model_picks on this split)")
    return list(doc["picks"][key])


def _sensor_space_aware(rec: dict, data_cfg: dict, k: int) -> list[int] | None:
    """Positions (into the record's frame list) picked by space-aware sampling from sensor depth."""
    from ros2_spatial_mllm.sampling import candidate_indices, space_aware_sample
    from training.data.dataset import has_sensor_geometry, sensor_frame_voxels

    if not rec.get("frames_path"):
        return None
    scene = (Path(data_cfg.get("root") or rec.get("_root", ".")) / rec["frames_path"]).parent
    idx = rec.get("frame_indices") or list(range(int(rec.get("num_frames", 0))))
    if not has_sensor_geometry(scene):
        return None
    cand = candidate_indices(len(idx))
    key = (str(scene), tuple(idx[c] for c in cand))
    if (key, k) not in _SENSOR_PICKS:  # a video's dozens of questions share one greedy pick
        if key not in _VOXEL_CACHE:
            _VOXEL_CACHE[key] = sensor_frame_voxels(scene, [idx[c] for c in cand])
        result = space_aware_sample(_VOXEL_CACHE[key], k)
        _SENSOR_PICKS[(key, k)] = sorted(cand[i] for i in result.indices)
    return list(_SENSOR_PICKS[(key, k)])


def read_frames(paths: Sequence[Path]) -> np.ndarray:
    """Image files -> [K, H, W, 3] uint8 RGB."""
    import cv2

    frames = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read frame {p}")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames)
