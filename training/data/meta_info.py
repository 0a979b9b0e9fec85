"""VSI-Bench ``meta_info`` scene annotations: reading, writing and the in-memory model.

File format (one JSON object keyed by scene name, shared by ScanNet, ScanNet++, ARKitScenes and
our procedural scenes)::

    {"scene0251_00": {"dataset": "scannet", "video_path": "...", "room_size": 35.86,
                      "room_center": [x, y, z],
                      "object_counts": {"chair": 2, ...},
                      "object_bbox": {"chair": [{"centroid": [3], "axesLengths": [3],
                                                  "normalizedAxes": [9 row-major],
                                                  "min": [3], "max": [3]}, ...]}}}

``normalizedAxes`` reshaped row-major to 3x3 has the box axes as rows; its transpose is the
rotation R (box frame -> world), so a box-local point p maps to ``R @ p + centroid``.
Extra keys written by the synthetic engine (``room_polygon``, ``instance_id``, ``color``) are
optional and ignored by readers of the real data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from training.data.categories import match_category


@dataclass
class ObjectBox:
    """One annotated instance: oriented 3D box in metres (world frame, z up)."""
    category: str
    centroid: np.ndarray                      # [3]
    axes_lengths: np.ndarray                  # [3] extent along each box axis
    rotation: np.ndarray                      # [3,3] box frame -> world (= normalizedAxes.T)
    instance_id: Optional[int] = None
    extra: Dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, category: str, d: Mapping) -> "ObjectBox":
        axes = np.asarray(d.get("normalizedAxes", np.eye(3).ravel()), dtype=np.float64).reshape(3, 3)
        extra = {k: v for k, v in d.items()
                 if k not in ("centroid", "axesLengths", "normalizedAxes", "min", "max", "instance_id")}
        iid = d.get("instance_id")
        return cls(category, np.asarray(d["centroid"], dtype=np.float64),
                   np.asarray(d["axesLengths"], dtype=np.float64), axes.T,
                   None if iid is None else int(iid), extra)

    def to_json(self) -> Dict:
        corners = self.corners()
        out = {"centroid": self.centroid.tolist(), "axesLengths": self.axes_lengths.tolist(),
               "normalizedAxes": self.rotation.T.ravel().tolist(),
               "min": corners.min(0).tolist(), "max": corners.max(0).tolist()}
        if self.instance_id is not None:
            out["instance_id"] = int(self.instance_id)
        out.update(self.extra)
        return out

    def corners(self) -> np.ndarray:
        """The 8 box corners in world coordinates, [8,3]."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        return (signs * self.axes_lengths / 2.0) @ self.rotation.T + self.centroid

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """World points [N,3] -> box-frame coordinates [N,3]."""
        return (np.asarray(points, float) - self.centroid) @ self.rotation

    def distance_to(self, points: np.ndarray) -> np.ndarray:
        """Euclidean distance of world points [N,3] to the solid box, [N] (0 inside)."""
        local = np.abs(self.to_local(points)) - self.axes_lengths / 2.0
        return np.linalg.norm(np.maximum(local, 0.0), axis=-1)


@dataclass
class SceneMeta:
    """A scene's annotations: room size/centre and per-category oriented boxes."""
    name: str
    dataset: str
    room_size: float
    room_center: np.ndarray
    objects: Dict[str, List[ObjectBox]]
    object_counts: Dict[str, int]
    video_path: str = ""
    extra: Dict = field(default_factory=dict)

    def resolve(self, category: str) -> Optional[str]:
        """The annotation's spelling of ``category`` (robust match), or None."""
        return match_category(category, list(self.object_counts) + list(self.objects))

    def boxes(self, category: str) -> List[ObjectBox]:
        key = match_category(category, self.objects)
        return [] if key is None else self.objects[key]

    def count(self, category: str) -> Optional[int]:
        key = match_category(category, self.object_counts)
        if key is not None:
            return int(self.object_counts[key])
        key = match_category(category, self.objects)
        return None if key is None else len(self.objects[key])

    def all_boxes(self) -> List[ObjectBox]:
        return [b for boxes in self.objects.values() for b in boxes]

    @classmethod
    def from_json(cls, name: str, d: Mapping) -> "SceneMeta":
        objects = {cat: [ObjectBox.from_json(cat, b) for b in boxes]
                   for cat, boxes in (d.get("object_bbox") or {}).items()}
        counts = dict(d.get("object_counts") or {cat: len(b) for cat, b in objects.items()})
        known = ("dataset", "room_size", "room_center", "object_counts", "object_bbox", "video_path")
        return cls(name, str(d.get("dataset", "")), float(d.get("room_size", float("nan"))),
                   np.asarray(d.get("room_center", [0.0, 0.0, 0.0]), float), objects, counts,
                   str(d.get("video_path", "")), {k: v for k, v in d.items() if k not in known})

    def to_json(self) -> Dict:
        out = {"room_size": float(self.room_size), "room_center": np.asarray(self.room_center).tolist(),
               "object_counts": {k: int(v) for k, v in self.object_counts.items()},
               "object_bbox": {cat: [b.to_json() for b in boxes] for cat, boxes in self.objects.items()},
               "video_path": self.video_path, "dataset": self.dataset}
        out.update(self.extra)
        return out


def load_meta_info(path: str | Path) -> Dict[str, SceneMeta]:
    """Read a meta_info JSON file -> {scene name: SceneMeta}."""
    with open(path, "r", encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by scene name")
    return {name: SceneMeta.from_json(name, d) for name, d in raw.items()}


def save_meta_info(scenes: Sequence[SceneMeta], path: str | Path) -> None:
    """Write scenes in the meta_info schema (readable by :func:`load_meta_info`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({s.name: s.to_json() for s in scenes}, f)
