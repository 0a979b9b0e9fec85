"""Dataset files: JSONL (always) + Parquet (when pyarrow is installed), loadable with
Hugging Face ``datasets``::

    from datasets import load_dataset
    ds = load_dataset("json", data_files={"test": "DIR/test.jsonl"})["test"]
    # or load_dataset("parquet", data_files={"test": "DIR/test.parquet"})

Row fields: id, question, options (list[str], "A. ..."), answer, ground_truth, task_type,
answer_type, family, scene_id, split, frame_indices (list[int]), frames_path (relative to the
dataset root; frame k is ``frames_path/{k:06d}.jpg``), num_frames, extra_json (task-specific
details as a JSON string, so every row has the same schema).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List

ROW_FIELDS = ("id", "question", "options", "answer", "ground_truth", "task_type", "answer_type", "family",
              "scene_id", "split", "frame_indices", "frames_path", "num_frames", "extra_json")


def to_row(record: Dict, split: str, num_frames: int, idx: str) -> Dict:
    """QA.to_record() output -> flat dataset row with a fixed schema."""
    return {"id": idx, "question": record["question"], "options": list(record.get("options") or []),
            "answer": str(record["answer"]), "ground_truth": str(record.get("ground_truth", "")),
            "task_type": record["task_type"], "answer_type": record["answer_type"],
            "family": record.get("family", "vsibench"), "scene_id": record.get("scene_id", ""), "split": split,
            "frame_indices": [int(i) for i in record.get("frame_indices") or []],
            "frames_path": record.get("frames_path", ""), "num_frames": int(num_frames),
            "extra_json": json.dumps(record.get("extra") or {})}


def write_jsonl(rows: Iterable[Dict], path: str | Path) -> int:
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> List[Dict]:
    with open(path, "r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_parquet(rows: List[Dict], path: str | Path) -> bool:
    """Write Parquet with pyarrow; returns False when pyarrow is missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    table = pa.Table.from_pylist(rows) if rows else pa.table({k: [] for k in ROW_FIELDS})
    pq.write_table(table, str(path))
    return True


def record_extra(row: Dict) -> Dict:
    """The decoded ``extra_json`` of a row (image size for pixel answers, categories, ...)."""
    raw = row.get("extra_json") or row.get("extra") or "{}"
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def has_sensor_geometry(scene_dir: str | Path) -> bool:
    """True when the scene was rendered with depth (``depth/*.png``) and ``cameras.json``."""
    scene_dir = Path(scene_dir)
    return (scene_dir / "depth").is_dir() and (scene_dir / "cameras.json").is_file()


def sensor_frame_voxels(scene_dir: str | Path, frame_ids: Iterable[int], pixel_stride: int = 4) -> List:
    """One FrameVoxels per frame id from the renderer's depth PNGs (uint16 mm) and its
    camera_from_world poses: what a robot with a depth camera and TF gives the sampler
    (the node's ``geometry_source: sensor``)."""
    import cv2
    import numpy as np

    from ros2_spatial_mllm.sampling import frame_voxels_from_depth

    scene_dir = Path(scene_dir)
    cams = json.loads((scene_dir / "cameras.json").read_text())
    kmat = np.asarray(cams["intrinsics"], np.float64)
    out = []
    for f in frame_ids:
        depth = cv2.imread(str(scene_dir / "depth" / f"{int(f):06d}.png"), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise FileNotFoundError(f"missing depth frame {scene_dir / 'depth' / f'{int(f):06d}.png'}")
        out.append(frame_voxels_from_depth(depth, kmat, camera_from_world=np.asarray(cams["camera_from_world"][int(f)]),
                                           depth_scale=0.001, pixel_stride=pixel_stride))
    return out
