"""Ground-truth definitions of the VSI-Bench box-based tasks (facts from the benchmark's
question generator, implemented here from scratch).

- object size: longest box side, in centimetres, rounded to an integer.
- counting: number of instances of the category.
- room size: the annotation's floor area (m^2), one decimal.
- absolute distance: minimum Euclidean distance between two point sets sampled on a regular
  grid inside each box (spacing 0.05 m per axis, endpoints on the faces, the inner half-size
  core left out), minimum over all instance pairs of the two categories, one decimal.
- relative distance: the option category with the smallest such distance to the anchor.
- relative direction: in the xy-plane, the counter-clockwise angle from (facing - standing) to
  (query - standing), using box centroids and the first instance of each category.
  hard: [0,90) front-left, [90,180) back-left, [180,270) back-right, [270,360) front-right;
  medium: [0,135) left, [135,225) back, [225,360) right; easy: [0,180) left, else right.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import numpy as np

from training.data.meta_info import ObjectBox

GRID_SPACING_M = 0.05

HARD_LABELS = ("front-left", "back-left", "back-right", "front-right")


def box_grid_points(box: ObjectBox, spacing: float = GRID_SPACING_M) -> np.ndarray:
    """Regular grid inside the box without its inner core, world coordinates [N,3].

    Per axis: n = ceil(extent/spacing) samples from -extent/2 to +extent/2 (n = 1 gives the
    single value -extent/2); a point is kept when any |coordinate| exceeds extent/4. The points
    are then moved to the world frame and cropped back to the box the way the reference
    generator does (projection of (p - centroid) on each box axis, summed left to right, must
    satisfy |.| <= extent/2): face points that rounding pushes outside are dropped. Keeping this
    floating-point detail raises agreement with the published distances from 76 % to > 99 %.
    """
    ext = np.maximum(box.axes_lengths, 1e-9)
    axes = []
    for e in ext:
        n = max(int(math.ceil(e / spacing)), 1)
        axes.append(np.linspace(-e / 2.0, e / 2.0, n))
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)   # [N,3] box frame
    keep = np.any(np.abs(pts) > ext / 4.0, axis=1)
    if keep.any():
        pts = pts[keep]
    world = np.dot(pts, box.rotation.T) + box.centroid             # [N,3]
    d, rot = world - box.centroid, box.rotation
    inside = np.ones(len(world), dtype=bool)
    for k in range(3):
        proj = d[:, 0] * rot[0, k] + d[:, 1] * rot[1, k] + d[:, 2] * rot[2, k]
        inside &= np.abs(proj) <= ext[k] / 2.0
    return world[inside] if inside.any() else world


def _min_pair_distance(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> float:
    """Exact minimum distance between point sets a [N,3] and b [M,3]; inf when either is empty."""
    if len(a) == 0 or len(b) == 0:
        return math.inf
    best = np.inf
    for i in range(0, len(a), chunk):
        blk = a[i:i + chunk]
        d2 = (blk * blk).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * blk @ b.T   # [n, M]
        best = min(best, float(d2.min()))
    return math.sqrt(max(best, 0.0))


def _frame_stretch(box: ObjectBox) -> float:
    """Largest singular value of the box rotation: ObjectBox.distance_to (computed in box
    coordinates) is at most this times the true Euclidean distance. 1 for an orthonormal frame;
    annotations store normalizedAxes rounded, so theirs are only nearly orthonormal."""
    return max(1.0, float(np.linalg.norm(box.rotation, 2)))


def box_distance(a: ObjectBox, b: ObjectBox, spacing: float = GRID_SPACING_M) -> float:
    """Minimum distance between the grid samples of two boxes (metres), exact on the samples.

    Pruning: U = an achieved pair distance (the A sample nearest to box B against all B samples,
    and vice versa); a sample farther than U from the other solid box cannot be in the optimal
    pair, because its distance to any sample of that box is at least its distance to the box.
    The box distance is computed in box coordinates, which over-estimate it by up to the frame's
    stretch when the axes are not exactly orthonormal (rounded annotations), so the bound is
    scaled by that; if a pruned set still comes out empty the full set is used (always
    well-defined, never a reduction over an empty array).
    """
    pa, pb = box_grid_points(a, spacing), box_grid_points(b, spacing)   # [N,3], [M,3], never empty
    da, db = b.distance_to(pa), a.distance_to(pb)                       # [N], [M]
    a0, b0 = pa[int(np.argmin(da))], pb[int(np.argmin(db))]
    upper = min(float(np.linalg.norm(pb - a0, axis=1).min()), float(np.linalg.norm(pa - b0, axis=1).min()))
    sa = pa[da <= upper * _frame_stretch(b) + 1e-9]
    sb = pb[db <= upper * _frame_stretch(a) + 1e-9]
    return min(upper, _min_pair_distance(sa if len(sa) else pa, sb if len(sb) else pb))


def category_distance(boxes_a: Sequence[ObjectBox], boxes_b: Sequence[ObjectBox]) -> float:
    """Minimum :func:`box_distance` over all instance pairs of two categories."""
    if not boxes_a or not boxes_b:
        raise ValueError("category_distance needs at least one box per category")
    return min(box_distance(a, b) for a in boxes_a for b in boxes_b)


def object_size_cm(boxes: Sequence[ObjectBox]) -> int:
    """Longest side of the (first) instance in centimetres, rounded."""
    return int(round(float(np.max(boxes[0].axes_lengths)) * 100.0))


def ccw_angle_deg(standing: np.ndarray, facing: np.ndarray, query: np.ndarray) -> float:
    """Counter-clockwise angle in degrees [0,360) in the xy-plane from the facing direction
    (facing - standing) to the query direction (query - standing)."""
    f = np.asarray(facing, float)[:2] - np.asarray(standing, float)[:2]
    q = np.asarray(query, float)[:2] - np.asarray(standing, float)[:2]
    ang = math.degrees(math.atan2(f[0] * q[1] - f[1] * q[0], f[0] * q[0] + f[1] * q[1]))
    return ang % 360.0


def direction_label(angle_deg: float, difficulty: str) -> str:
    """Answer word for a CCW angle: difficulty in {'easy','medium','hard'}."""
    a = angle_deg % 360.0
    if difficulty == "hard":
        return HARD_LABELS[int(a // 90) % 4]
    if difficulty == "medium":
        return "left" if a < 135 else ("back" if a < 225 else "right")
    if difficulty == "easy":
        return "left" if a < 180 else "right"
    raise ValueError(f"unknown difficulty {difficulty!r}")


def direction_margin_deg(angle_deg: float, difficulty: str) -> float:
    """Distance of the angle to the nearest class border (for the ambiguity filter)."""
    borders = {"hard": (0, 90, 180, 270, 360), "medium": (0, 135, 225, 360),
               "easy": (0, 180, 360)}[difficulty]
    return float(min(abs(angle_deg - b) for b in borders))


def rel_direction(standing: ObjectBox, facing: ObjectBox, query: ObjectBox, difficulty: str) -> Tuple[str, float]:
    """(label, ccw angle) from box centroids."""
    ang = ccw_angle_deg(standing.centroid, facing.centroid, query.centroid)
    return direction_label(ang, difficulty), ang


def corner_votes_agree(standing: ObjectBox, facing: ObjectBox, query: ObjectBox, difficulty: str,
                       max_disagree: int = 2) -> bool:
    """Ambiguity filter: at most ``max_disagree`` of the query box's 8 corners may fall in a
    different direction class than its centroid."""
    label, _ = rel_direction(standing, facing, query, difficulty)
    n_diff = sum(direction_label(ccw_angle_deg(standing.centroid, facing.centroid, c), difficulty) != label
                 for c in query.corners())
    return n_diff <= max_disagree


def closest_category(anchor: Sequence[ObjectBox], options: Dict[str, Sequence[ObjectBox]],
                     farthest: bool = False) -> Tuple[str, Dict[str, float]]:
    """Option name whose instances come closest to (or, farthest=True, farthest from) the anchor."""
    dists = {name: category_distance(anchor, boxes) for name, boxes in options.items()}
    pick = (max if farthest else min)(dists, key=dists.get)
    return pick, dists


def round1(x: float) -> float:
    """Round half away from zero-safe to one decimal as the benchmark stores it."""
    return float(round(float(x), 1))
