"""A tiny synthetic room with coloured boxes, rendered by numpy ray casting, with known answers.

World frame: z up, floor at z = 0, metres. Cameras use OpenCV axes (x right, y down, z forward);
poses are ``world_from_camera`` [4, 4]. The camera orbits the room centre on an arc, looking at
it, so every box is seen from several sides (what space-aware sampling and counting need).

``render(scene, pose, K, hw)`` -> (rgb [H, W, 3] uint8, depth [H, W] float32 metres along the
optical axis); ``scene_facts(scene, poses)`` -> JSON-ready ground truth (object counts per
colour, box sizes, centre distances, camera path length) and ``scene_questions`` -> questions with
their answers in the node's request form.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Box", "Scene", "default_scene", "orbit_poses", "intrinsics_for", "render",
           "scene_facts", "scene_questions"]


@dataclass(frozen=True)
class Box:
    """Axis-aligned box standing on the floor: colour name, RGB, centre (x, y) and size (m)."""

    colour: str
    rgb: tuple[int, int, int]
    centre_xy: tuple[float, float]
    size_xyz: tuple[float, float, float]

    @property
    def lo(self) -> np.ndarray:
        sx, sy, _ = self.size_xyz
        return np.array([self.centre_xy[0] - sx / 2, self.centre_xy[1] - sy / 2, 0.0])

    @property
    def hi(self) -> np.ndarray:
        sx, sy, sz = self.size_xyz
        return np.array([self.centre_xy[0] + sx / 2, self.centre_xy[1] + sy / 2, sz])

    @property
    def centre(self) -> np.ndarray:
        return (self.lo + self.hi) / 2


@dataclass(frozen=True)
class Scene:
    """Boxes inside a square room of side ``room_m`` centred at the origin (walls 2.5 m high)."""

    boxes: tuple[Box, ...]
    room_m: float = 6.0
    wall_height_m: float = 2.5


def default_scene() -> Scene:
    """Two red boxes, one green, one blue: counting, size and distance have exact answers."""
    return Scene(boxes=(
        Box("red", (220, 40, 40), (-1.2, 0.8), (0.5, 0.5, 0.5)),
        Box("red", (220, 40, 40), (1.3, 1.0), (0.4, 0.4, 0.8)),
        Box("green", (40, 190, 60), (0.2, -1.1), (1.0, 0.6, 0.4)),
        Box("blue", (40, 80, 220), (-0.3, 0.1), (0.3, 0.3, 1.2)),
    ))


def intrinsics_for(width: int, height: int, hfov_deg: float = 70.0) -> np.ndarray:
    """Pinhole K [3, 3] with square pixels and the principal point at the image centre."""
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """world_from_camera [4, 4] (OpenCV axes) for a camera at ``eye`` looking at ``target``."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = eye
    return pose


def orbit_poses(n: int, radius: float = 2.6, height: float = 1.4, arc_deg: float = 300.0) -> np.ndarray:
    """n camera poses [n, 4, 4] on a circular arc around the room centre, looking at it."""
    angles = np.radians(np.linspace(-90.0, -90.0 + arc_deg, n))
    target = np.array([0.0, 0.0, 0.4])
    return np.stack([look_at(np.array([radius * math.cos(a), radius * math.sin(a), height]), target)
                     for a in angles])


def _ray_aabb(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test: (entry distance [P] (inf = miss), hit-face axis [P]) for rays [P, 3]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t0, t1 = (lo - origin) * inv, (hi - origin) * inv
    t_near, t_far = np.minimum(t0, t1), np.maximum(t0, t1)
    t_enter, axis = t_near.max(axis=1), t_near.argmax(axis=1)
    hit = (t_enter <= t_far.min(axis=1)) & (t_enter > 1e-6)
    return np.where(hit, t_enter, np.inf), axis


def render(scene: Scene, world_from_camera: np.ndarray, K: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the scene: (rgb [H, W, 3] uint8, depth [H, W] float32 metres along camera z)."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    cam_dirs = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    R, origin = world_from_camera[:3, :3], world_from_camera[:3, 3]
    dirs = cam_dirs @ R.T                                   # [P, 3], z-component along optical axis = 1
    best_t = np.full(len(dirs), np.inf)
    colour = np.zeros((len(dirs), 3))
    half, top = scene.room_m / 2, scene.wall_height_m
    # room: inside of a box -> exit distance; floor checker, walls by direction, ceiling grey
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t_a, t_b = (np.array([-half, -half, 0.0]) - origin) * inv, (np.array([half, half, top]) - origin) * inv
    t_exit_axes = np.maximum(t_a, t_b)
    t_room, axis = t_exit_axes.min(axis=1), t_exit_axes.argmin(axis=1)
    hit_pt = origin + dirs * t_room[:, None]
    checker = ((np.floor(hit_pt[:, 0] * 2) + np.floor(hit_pt[:, 1] * 2)) % 2).astype(bool)
    floor = (axis == 2) & (dirs[:, 2] < 0)
    colour[:] = np.where(axis[:, None] == 0, [200, 190, 170], [170, 180, 200])
    colour[floor] = np.where(checker[floor, None], [120, 110, 100], [160, 150, 135])
    colour[(axis == 2) & (dirs[:, 2] > 0)] = [235, 235, 235]
    best_t = t_room
    for box in scene.boxes:
        t, face = _ray_aabb(origin, dirs, box.lo, box.hi)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        shade = np.array([0.85, 0.7, 1.0])[face[closer]][:, None]    # per-face shading
        colour[closer] = np.asarray(box.rgb, np.float64) * shade
    depth = best_t.reshape(h, w).astype(np.float32)          # t along dirs with unit camera z == depth
    return np.clip(colour, 0, 255).astype(np.uint8).reshape(h, w, 3), depth


def _box_distance(a: Box, b: Box, samples: int = 6) -> float:
    """Minimum distance between points sampled on two boxes' surfaces (grid on the faces)."""
    def surface(box: Box) -> np.ndarray:
        g = np.linspace(0, 1, samples)
        pts = np.array(list(itertools.product(g, g, g)))
        on_face = (np.isclose(pts, 0) | np.isclose(pts, 1)).any(axis=1)
        return box.lo + pts[on_face] * (box.hi - box.lo)
    pa, pb = surface(a), surface(b)
    return float(np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min())


def scene_facts(scene: Scene, poses: np.ndarray) -> dict:
    """Ground truth: counts per colour, boxes (centre, size, longest side cm), pairwise distances
    (centre-to-centre and VSI-style surface minimum, m), camera path length (m)."""
    counts: dict[str, int] = {}
    for box in scene.boxes:
        counts[box.colour] = counts.get(box.colour, 0) + 1
    boxes = [{"colour": b.colour, "centre": [round(float(c), 4) for c in b.centre],
              "size_m": list(b.size_xyz), "longest_side_cm": round(max(b.size_xyz) * 100)} for b in scene.boxes]
    pairs = [{"a": i, "b": j,
              "centre_distance_m": round(float(np.linalg.norm(a.centre - b.centre)), 3),
              "min_distance_m": round(_box_distance(a, b), 1)}
             for (i, a), (j, b) in itertools.combinations(enumerate(scene.boxes), 2)]
    path = float(np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum())
    return {"counts": counts, "total_boxes": len(scene.boxes), "boxes": boxes, "pairs": pairs,
            "room_size_m2": scene.room_m ** 2, "camera_path_length_m": round(path, 3)}


def scene_questions(facts: dict) -> list[dict]:
    """Questions with known answers, in request form ({question, options, answer, kind})."""
    tallest = max(range(len(facts["boxes"])), key=lambda i: facts["boxes"][i]["size_m"][2])
    colours = ["red", "green", "blue"]
    return [
        {"question": "How many red boxes are in the room?", "options": [], "kind": "number",
         "answer": facts["counts"]["red"]},
        {"question": "How many boxes are in the room in total?", "options": [], "kind": "number",
         "answer": facts["total_boxes"]},
        {"question": "What colour is the tallest box?", "options": [c.capitalize() for c in colours],
         "kind": "choice", "answer": "ABC"[colours.index(facts["boxes"][tallest]["colour"])]},
        {"question": "What is the length of the longest side of the green box, in centimeters?",
         "options": [], "kind": "number",
         "answer": next(b["longest_side_cm"] for b in facts["boxes"] if b["colour"] == "green")},
        {"question": "What is the size of this room (in square meters)?", "options": [], "kind": "number",
         "answer": facts["room_size_m2"]},
    ]
