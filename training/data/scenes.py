"""Procedural indoor scenes: room (rectangular or L-shaped), furniture, camera walkthrough.

Everything is deterministic from ``seed`` (numpy Generator). World frame: metres, z up, floor
at z = 0. A scene exports to the VSI-Bench meta_info schema (:meth:`ProceduralScene.to_meta`)
so the same question generators serve real and synthetic scenes.

Placement rules (documented filters): objects lie inside the room polygon; 2-D footprints of
objects whose height ranges overlap do not intersect (0.08 m margin); floor objects keep
``PATH_CLEARANCE_M`` from the camera path so the camera never enters furniture; wall objects
back onto a wall; wall-mounted objects hang on a wall at their mount height; 'on_top' objects
stand on a table/cabinet top.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from training.data.categories import SYNTHETIC_CATEGORIES, CategorySpec
from training.data.meta_info import ObjectBox, SceneMeta

PATH_CLEARANCE_M = 0.45
FOOTPRINT_MARGIN_M = 0.08


@dataclass
class Room:
    """Rectilinear room. polygon: [V,2] CCW outline; rects: axis-aligned (x0,y0,x1,y1) whose
    union is the floor; height in metres."""
    polygon: np.ndarray
    rects: List[Tuple[float, float, float, float]]
    height: float

    @property
    def area(self) -> float:
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    def contains(self, pts: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """[N,2] -> [N] bool: inside the union of rects shrunk by ``margin`` from outer walls."""
        pts = np.atleast_2d(pts)
        ok = np.zeros(len(pts), bool)
        for x0, y0, x1, y1 in self.rects:
            ok |= (pts[:, 0] >= x0 - 1e-9) & (pts[:, 0] <= x1 + 1e-9) & (pts[:, 1] >= y0 - 1e-9) & (pts[:, 1] <= y1 + 1e-9)
        if margin > 0:
            ok &= self.wall_distance(pts) >= margin
        return ok

    def walls(self) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Wall segments (start, end) along the CCW outline; the room is on their left."""
        return [(self.polygon[i], self.polygon[(i + 1) % len(self.polygon)]) for i in range(len(self.polygon))]

    def wall_distance(self, pts: np.ndarray) -> np.ndarray:
        """Distance of points [N,2] to the nearest wall segment, [N]."""
        pts = np.atleast_2d(pts)
        best = np.full(len(pts), np.inf)
        for a, b in self.walls():
            best = np.minimum(best, _segment_distance(pts, a, b))
        return best


@dataclass
class SceneObject:
    """One furniture instance (oriented box, yaw about z) with its look."""
    instance_id: int
    category: str
    center: np.ndarray          # [3] box centre
    size: np.ndarray            # [3] (x, y, z) extents in the object frame
    yaw: float                  # radians, rotation about z
    shape: str
    color: np.ndarray           # [3] float 0..1
    texture: str                # 'plain' | 'stripes' | 'checker' | 'noise'

    @property
    def rotation(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def footprint(self) -> np.ndarray:
        """[4,2] corners of the footprint rectangle."""
        hx, hy = self.size[0] / 2, self.size[1] / 2
        local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
        return local @ self.rotation[:2, :2].T + self.center[:2]

    def z_range(self) -> Tuple[float, float]:
        return float(self.center[2] - self.size[2] / 2), float(self.center[2] + self.size[2] / 2)

    def to_box(self) -> ObjectBox:
        return ObjectBox(self.category, self.center.copy(), self.size.copy(), self.rotation,
                         self.instance_id, {"color": [round(float(c), 3) for c in self.color]})


@dataclass
class ProceduralScene:
    """A room, its objects and a camera trajectory (OpenCV world_from_camera poses)."""
    name: str
    seed: int
    room: Room
    objects: List[SceneObject]
    path: np.ndarray                    # [K,2] closed walk loop (xy)
    world_from_camera: np.ndarray       # [N,4,4]
    style: Dict = field(default_factory=dict)

    def object_by_id(self, iid: int) -> SceneObject:
        return next(o for o in self.objects if o.instance_id == iid)

    def to_meta(self, video_path: str = "") -> SceneMeta:
        """Export in the VSI-Bench meta_info schema (+ room polygon/height extras)."""
        objects: Dict[str, List[ObjectBox]] = {}
        for o in self.objects:
            objects.setdefault(o.category, []).append(o.to_box())
        lo, hi = self.room.polygon.min(0), self.room.polygon.max(0)
        center = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, self.room.height / 2])
        return SceneMeta(self.name, "synthetic", self.room.area, center, objects,
                         {k: len(v) for k, v in objects.items()}, video_path,
                         {"room_polygon": self.room.polygon.round(4).tolist(),
                          "room_height": round(self.room.height, 4), "seed": int(self.seed)})


def _segment_distance(pts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((pts - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(pts - (a + t[:, None] * ab), axis=1)


def _polyline_distance(pts: np.ndarray, poly: np.ndarray, closed: bool = True) -> np.ndarray:
    n = len(poly) if closed else len(poly) - 1
    return np.min([_segment_distance(pts, poly[i], poly[(i + 1) % len(poly)]) for i in range(n)], axis=0)


def _rects_overlap(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """Separating-axis test for two convex quads [4,2], inflated by ``margin``."""
    for quad in (a, b):
        for i in range(4):
            edge = quad[(i + 1) % 4] - quad[i]
            axis = np.array([-edge[1], edge[0]]) / (np.linalg.norm(edge) + 1e-12)
            pa, pb = a @ axis, b @ axis
            if pa.max() + margin <= pb.min() or pb.max() + margin <= pa.min():
                return False
    return True


def make_room(rng: np.random.Generator) -> Room:
    """Rectangle 3-8 m a side, or (40 %) an L-shape cut from a larger rectangle."""
    height = float(rng.uniform(2.5, 3.1))
    w, d = float(rng.uniform(3.5, 8.0)), float(rng.uniform(3.0, 7.0))
    if rng.random() < 0.4 and min(w, d) > 4.0:
        cw, cd = float(rng.uniform(0.35, 0.5)) * w, float(rng.uniform(0.35, 0.5)) * d
        # cut the (+x,+y) corner: outline CCW
        poly = np.array([[0, 0], [w, 0], [w, d - cd], [w - cw, d - cd], [w - cw, d], [0, d]], float)
        rects = [(0.0, 0.0, w, d - cd), (0.0, d - cd, w - cw, d)]
    else:
        poly = np.array([[0, 0], [w, 0], [w, d], [0, d]], float)
        rects = [(0.0, 0.0, w, d)]
    shift = -np.array([w, d]) / 2.0                       # centre the room on the origin
    poly = poly + shift
    rects = [(x0 + shift[0], y0 + shift[1], x1 + shift[0], y1 + shift[1]) for x0, y0, x1, y1 in rects]
    return Room(poly, rects, height)


def inset_polygon(poly: np.ndarray, margin: float) -> np.ndarray:
    """Move every edge of a CCW rectilinear polygon inward by ``margin`` (same vertex count)."""
    n = len(poly)
    out = np.zeros_like(poly)
    for i in range(n):
        prev_a, prev_b = poly[i - 1], poly[i]
        next_a, next_b = poly[i], poly[(i + 1) % n]
        pts = []
        for a, b in ((prev_a, prev_b), (next_a, next_b)):
            e = (b - a) / (np.linalg.norm(b - a) + 1e-12)
            left = np.array([-e[1], e[0]])
            pts.append((a + left * margin, e))
        (p1, e1), (p2, e2) = pts
        mat = np.array([e1, -e2]).T
        t = np.linalg.solve(mat, p2 - p1) if abs(np.linalg.det(mat)) > 1e-9 else np.zeros(2)
        out[i] = p1 + t[0] * e1
    return out


def make_path(room: Room, rng: np.random.Generator) -> np.ndarray:
    """Closed walk loop [K,2]: the outline inset towards the middle, rounded and resampled."""
    short = min(np.ptp(room.polygon[:, 0]), np.ptp(room.polygon[:, 1]))
    arm = min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in room.rects)
    margin = float(np.clip(rng.uniform(0.32, 0.4) * min(short, arm), 0.9, 1.6))
    margin = min(margin, 0.45 * arm)
    corners = inset_polygon(room.polygon, margin)
    # corner rounding (Chaikin) then uniform arclength resampling
    pts = corners
    for _ in range(3):
        q = 0.75 * pts + 0.25 * np.roll(pts, -1, axis=0)
        r = 0.25 * pts + 0.75 * np.roll(pts, -1, axis=0)
        pts = np.stack([q, r], axis=1).reshape(-1, 2)
    seg = np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    samples = np.linspace(0.0, s[-1], 200, endpoint=False)
    closed = np.vstack([pts, pts[:1]])
    path = np.stack([np.interp(samples, s, closed[:, 0]), np.interp(samples, s, closed[:, 1])], 1)
    return np.roll(path, int(rng.integers(0, len(path))), axis=0)


def _hsv_color(hue: float, sat: float, val: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + (hue % 1.0) * 6.0) % 6.0
    return val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hue = rng.random()
    sat, val = rng.uniform(0.25, 0.85), rng.uniform(0.35, 0.95)
    return _hsv_color(hue, sat, val)


TEXTURES = ("plain", "stripes", "checker", "noise")
PALETTES = ("category", "random")


def category_look(spec: CategorySpec, rng: np.random.Generator) -> Tuple[np.ndarray, str]:
    """(colour [3], texture) from the category's colour family.

    Our furniture is boxes and cylinders, so shape alone does not tell a cabinet from a
    nightstand; real categories have typical looks (plants green, fridges white), and a small
    model sees 28x28-pixel tokens. Each category therefore owns a hue (the catalogue order walked
    with stride 7 over 19 evenly spaced hues, so neighbours in the list end up far apart on the
    colour wheel) and a signature texture (cycling through TEXTURES); instances vary in shade,
    saturation, a little hue, and wear the plain finish one time in five."""
    k = SYNTHETIC_CATEGORIES.index(spec)
    n = len(SYNTHETIC_CATEGORIES)
    hue = (k * 7 % n) / n + rng.uniform(-0.012, 0.012)
    color = _hsv_color(hue, rng.uniform(0.55, 0.9), rng.uniform(0.5, 0.95))
    texture = TEXTURES[k % len(TEXTURES)] if rng.random() < 0.8 else "plain"
    return color, texture


def _try_place(spec: CategorySpec, rng, room: Room, placed: List[SceneObject], path: np.ndarray,
               iid: int, palette: str = "category") -> Optional[SceneObject]:
    size = np.array([rng.uniform(a, b) for a, b in zip(spec.size_min, spec.size_max)])
    shape = spec.shape
    if shape == "cylinder":
        size[1] = size[0] = min(size[0], size[1]) if rng.random() < 0.7 else size[0]
    if palette == "random":
        color = _random_color(rng)
        texture = str(rng.choice(list(TEXTURES), p=[0.4, 0.25, 0.15, 0.2]))
    else:
        color, texture = category_look(spec, rng)
    for _ in range(40):
        if spec.placement in ("wall", "wall_mounted"):
            a, b = room.walls()[int(rng.integers(len(room.walls())))]
            length = float(np.linalg.norm(b - a))
            if length < size[0] + 0.3:
                continue
            e = (b - a) / length
            inward = np.array([-e[1], e[0]])
            t = rng.uniform(size[0] / 2 + 0.1, length - size[0] / 2 - 0.1)
            xy = a + e * t + inward * (size[1] / 2 + 0.02)
            yaw = math.atan2(e[1], e[0])              # object x along the wall, y into the room
            z = size[2] / 2 if spec.placement == "wall" else rng.uniform(*spec.mount_height) + size[2] / 2
        elif spec.placement == "on_top":
            hosts = [o for o in placed if o.category in ("table", "cabinet", "nightstand")
                     and o.size[0] > size[0] + 0.1 and o.size[1] > size[1] + 0.05]
            if not hosts:
                return None
            host = hosts[int(rng.integers(len(hosts)))]
            off = np.array([rng.uniform(-1, 1) * (host.size[0] - size[0]) / 2,
                            rng.uniform(-1, 1) * (host.size[1] - size[1]) / 2])
            xy = host.center[:2] + host.rotation[:2, :2] @ off
            yaw = host.yaw + float(rng.choice([0.0, math.pi])) + rng.uniform(-0.3, 0.3)
            z = host.center[2] + host.size[2] / 2 + size[2] / 2 + 0.002
        else:
            lo, hi = room.polygon.min(0), room.polygon.max(0)
            xy = rng.uniform(lo, hi)
            yaw = float(rng.uniform(0, 2 * math.pi))
            z = size[2] / 2
        obj = SceneObject(iid, spec.name, np.array([xy[0], xy[1], z]), size.copy(), float(yaw), shape, color, texture)
        fp = obj.footprint()
        if not room.contains(fp).all() or (spec.placement == "floor" and room.wall_distance(fp).min() < 0.05):
            continue
        if spec.placement != "wall_mounted" and _polyline_distance(fp, path).min() < PATH_CLEARANCE_M:
            continue
        if _polyline_distance(path, np.vstack([fp, fp[:1]]), closed=False).min() < PATH_CLEARANCE_M and spec.placement != "wall_mounted":
            continue
        z0, z1 = obj.z_range()
        clash = False
        for other in placed:
            if spec.placement == "on_top" and other.category in ("table", "cabinet", "nightstand") and z0 >= other.z_range()[1] - 0.01:
                continue
            o0, o1 = other.z_range()
            if z0 < o1 and o0 < z1 and _rects_overlap(fp, other.footprint(), FOOTPRINT_MARGIN_M):
                clash = True
                break
        if not clash:
            return obj
    return None


CAMERA_PACES = ("steady", "dwell")


def dwell_progress(num_frames: int, span: float, rng: np.random.Generator) -> np.ndarray:
    """[N] position along the loop (path samples, 0..span) of a walker who stops 2-3 times.

    Handheld scans are not walked at one speed: people pause to look around, then hurry on.
    Each stop holds 12-25 % of the frames at about a tenth of the walking speed, so frames
    evenly spaced in time crowd where the camera lingers (what space-aware sampling is for)."""
    speed = np.ones(num_frames)
    for _ in range(int(rng.integers(2, 4))):
        length = max(2, int(round(rng.uniform(0.12, 0.25) * num_frames)))
        start = int(rng.integers(0, max(1, num_frames - length)))
        speed[start:start + length] = 0.1
    steps = np.concatenate([[0.0], np.cumsum(speed[:-1])])
    return steps / (steps[-1] + speed[-1]) * span


def make_trajectory(path: np.ndarray, room: Room, num_frames: int, rng: np.random.Generator,
                    pace: str = "steady") -> np.ndarray:
    """[N,4,4] OpenCV world_from_camera along the loop: handheld-like height bob, a yaw that
    looks across the room (the loop is CCW, so the room interior is on the left) and sweeps
    towards the near walls and back, a downward pitch and roll jitter. pace "steady" walks at one
    speed; "dwell" stops 2-3 times (`dwell_progress`) while the look-around sweep, bob and pitch
    go on in time (its extra draws come last, so the room and the other draws are unchanged)."""
    if pace not in CAMERA_PACES:
        raise ValueError(f"pace must be one of {CAMERA_PACES}, not {pace!r}")
    n = len(path)
    laps = float(rng.uniform(0.85, 1.0))
    t = np.linspace(0.0, laps * n, num_frames, endpoint=False)   # [N] time, in path samples walked at speed 1
    phase = rng.uniform(0, 2 * math.pi)
    sweep = np.radians(rng.uniform(25, 40)) * np.sin(2 * math.pi * rng.uniform(1.5, 3.0) * t / n + phase)
    yaw_offset = np.radians(rng.uniform(55, 80))
    height = rng.uniform(1.3, 1.6) + 0.02 * np.sin(2 * math.pi * 6 * t / n + phase)
    pitch = np.radians(rng.uniform(-26, -16)) + np.radians(3) * np.sin(2 * math.pi * t / n)
    roll = np.radians(rng.normal(0, 1.0, num_frames))
    walked = t if pace == "steady" else dwell_progress(num_frames, laps * n, rng)   # [N] position on the loop
    idx0 = np.floor(walked).astype(int) % n
    frac = (walked - np.floor(walked))[:, None]
    pos = path[idx0] * (1 - frac) + path[(idx0 + 1) % n] * frac
    tangent = path[(idx0 + 2) % n] - path[(idx0 - 2) % n]
    yaw = np.arctan2(tangent[:, 1], tangent[:, 0]) + yaw_offset + sweep
    poses = np.zeros((num_frames, 4, 4))
    for i in range(num_frames):
        fwd = np.array([math.cos(yaw[i]) * math.cos(pitch[i]), math.sin(yaw[i]) * math.cos(pitch[i]), math.sin(pitch[i])])
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        c, s = math.cos(roll[i]), math.sin(roll[i])
        right, down = c * right + s * down, -s * right + c * down
        poses[i, :3, :3] = np.stack([right, down, fwd], axis=1)   # columns: camera x,y,z in world
        poses[i, :3, 3] = [pos[i, 0], pos[i, 1], height[i] if np.ndim(height) else height]
        poses[i, 3, 3] = 1.0
    return poses


def make_scene(seed: int, num_frames: int = 128, name: Optional[str] = None,
               min_objects: int = 10, max_objects: int = 20, palette: str = "category",
               pace: str = "steady") -> ProceduralScene:
    """Build a procedural scene deterministically from ``seed``.

    palette: "category" (objects take their category's colour family, see `category_look`;
    walls and floor muted so the furniture stands out) or "random" (any colour for any object:
    the generator before 2026-12, kept so earlier scenes and the renderer's pinned reference
    figures reproduce). pace: the camera's walk, "steady" or "dwell" (see `make_trajectory`)."""
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {PALETTES}, not {palette!r}")
    rng = np.random.default_rng(seed)
    room = make_room(rng)
    path = make_path(room, rng)
    target = int(rng.integers(min_objects, max_objects + 1))
    cats = list(SYNTHETIC_CATEGORIES)
    weights = np.array([c.max_count for c in cats], float)
    order = ["wall", "floor", "wall_mounted", "on_top"]
    picks = [cats[i] for i in rng.choice(len(cats), size=target, p=weights / weights.sum())]
    picks.sort(key=lambda c: order.index(c.placement))
    objects: List[SceneObject] = []
    counts: Dict[str, int] = {}
    for spec in picks:
        if counts.get(spec.name, 0) >= spec.max_count:
            continue
        obj = _try_place(spec, rng, room, objects, path, len(objects) + 1, palette)
        if obj is not None:
            objects.append(obj)
            counts[spec.name] = counts.get(spec.name, 0) + 1
    if palette == "random":
        floor_color, wall_color = _random_color(rng), 0.55 + 0.4 * rng.random(3)
    else:   # muted structure: low saturation, so no wall or floor takes a category's colour
        floor_color = _hsv_color(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.8))
        wall_color = _hsv_color(rng.random(), rng.uniform(0.0, 0.12), rng.uniform(0.7, 0.95))
    style = {"floor_color": floor_color.tolist(), "wall_color": wall_color.tolist(),
             "ceiling_color": [0.92, 0.92, 0.9], "floor_texture": str(rng.choice(["checker", "planks", "plain"])),
             "light_dir": [float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5)), 1.0]}
    poses = make_trajectory(path, room, num_frames, rng, pace)
    return ProceduralScene(name or f"synth_{seed:07d}", seed, room, objects, path, poses, style)
