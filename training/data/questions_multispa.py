"""MultiSPA-style multi-frame questions over frame pairs of a rendered scene.

Families (task_type, answer_type):
- multispa_point_depth (number_rel20): z-depth in metres of a marked pixel;
- multispa_depth_compare (choice): which of two marked pixels is closer to the camera;
- multispa_correspondence (pixel): where a pixel of image 1 appears in image 2;
- multispa_camera_direction (choice): main camera motion, forward/backward/left/right;
- multispa_camera_distance (number_rel20): camera travel in metres;
- multispa_camera_yaw / multispa_camera_pitch (number_rel20): signed turn in degrees
  (left / up positive), from E_rel = E1^-1 E2;
- multispa_camera_displacement (vector): (dx, dy, dz) of camera 2 in camera-1 coordinates;
- multispa_object_size (number_rel20): height of an object seen in both images, centimetres.

Coordinates are normalised to 0-1000 ((u / W) * 1000, (v / H) * 1000). Ambiguity filters:
pixels at least 4 % of the image away from borders and depth edges (3x3 depth spread < 5 %);
depth comparisons need a ratio >= 1.25; correspondences must be in view and unoccluded in
image 2 (depth agrees within 3 %); camera direction needs >= 0.25 m along the main axis and
twice any other axis; distances >= 0.3 m; yaw >= 10 deg, pitch >= 5 deg; object size needs a
single-instance category covering >= 0.5 % of both images.
"""
from __future__ import annotations

import math
import random
from typing import Dict, List, Optional, Tuple

import numpy as np

from training.data.meta_info import SceneMeta
from training.data.qa import QA, multiple_choice

MULTISPA_TASKS = ("multispa_point_depth", "multispa_depth_compare", "multispa_correspondence",
                  "multispa_camera_direction", "multispa_camera_distance", "multispa_camera_yaw",
                  "multispa_camera_pitch", "multispa_camera_displacement", "multispa_object_size")

PAIR_PREFIX = "Image 1 and image 2 are two frames from a video of the same room. "


def _f2(x: float) -> str:
    """Two decimals without a negative zero."""
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


def _norm_xy(u: float, v: float, w: int, h: int) -> Tuple[int, int]:
    return int(round(u / w * 1000)), int(round(v / h * 1000))


class FramePairContext:
    """Depth, poses and masks of one rendered video (arrays as in RenderedVideo)."""

    def __init__(self, depth: np.ndarray, instance: np.ndarray, intrinsics: np.ndarray,
                 world_from_camera: np.ndarray, meta: SceneMeta, rng: random.Random):
        self.depth, self.instance, self.K, self.pose, self.meta, self.rng = depth, instance, intrinsics, world_from_camera, meta, rng
        self.n, self.h, self.w = depth.shape

    def good_pixel(self, i: int, tries: int = 40, object_only: bool = False) -> Optional[Tuple[int, int]]:
        m = int(0.04 * min(self.h, self.w)) + 1
        for _ in range(tries):
            u, v = self.rng.randrange(m, self.w - m), self.rng.randrange(m, self.h - m)
            patch = self.depth[i, v - 1:v + 2, u - 1:u + 2]
            if patch.min() <= 0 or (patch.max() - patch.min()) > 0.05 * patch.mean():
                continue
            if object_only and self.instance[i, v, u] <= 0:
                continue
            return u, v
        return None

    def project(self, i: int, j: int, u: int, v: int) -> Optional[Tuple[float, float, float]]:
        """Pixel (u,v) of frame i -> (u', v', depth') in frame j, or None if outside/occluded."""
        z = float(self.depth[i, v, u])
        ray = np.linalg.inv(self.K) @ np.array([u + 0.5, v + 0.5, 1.0])
        world = self.pose[i, :3, :3] @ (ray * z) + self.pose[i, :3, 3]
        cam_j = np.linalg.inv(self.pose[j])
        pc = cam_j[:3, :3] @ world + cam_j[:3, 3]
        if pc[2] <= 0.05:
            return None
        uv = self.K @ (pc / pc[2])
        uj, vj = uv[0] - 0.5, uv[1] - 0.5
        m = 0.02 * self.w
        if not (m <= uj < self.w - m and m <= vj < self.h - m):
            return None
        dj = float(self.depth[j, int(round(vj)), int(round(uj))])
        if dj <= 0 or abs(dj - pc[2]) > 0.03 * pc[2]:
            return None
        return float(uj), float(vj), float(pc[2])

    def relative(self, i: int, j: int):
        """(t [3] camera-j centre in camera-i coords, R_rel [3,3] = R_i^T R_j)."""
        ri, rj = self.pose[i, :3, :3], self.pose[j, :3, :3]
        t = ri.T @ (self.pose[j, :3, 3] - self.pose[i, :3, 3])
        return t, ri.T @ rj


def _qa(ctx: FramePairContext, task: str, q: str, a: str, atype: str, truth: str, frames, options=None, **extra) -> QA:
    extra.update(image_width=ctx.w, image_height=ctx.h)
    return QA(question=q, answer=a, task_type=task, answer_type=atype, options=list(options or []),
              ground_truth=truth, family="multispa", scene_id=ctx.meta.name, frame_indices=list(frames), extra=extra)


def gen_pair(ctx: FramePairContext, i: int, j: int) -> List[QA]:
    """All questions that pass the filters for the ordered frame pair (i, j)."""
    out: List[QA] = []
    w, h = ctx.w, ctx.h
    p = ctx.good_pixel(i)
    if p is not None:
        x, y = _norm_xy(*p, w, h)
        d = float(ctx.depth[i, p[1], p[0]])
        out.append(_qa(ctx, "multispa_point_depth", f"In image 1, what is the depth (distance from the camera along its "
                       f"viewing direction) of the point at ({x}, {y})? Coordinates are normalised to 0-1000. "
                       "Answer in meters.", f"{d:.2f}", "number_rel20", f"{d:.2f}", [i], point=[x, y]))
    p2 = ctx.good_pixel(i)
    if p is not None and p2 is not None:
        d1, d2 = float(ctx.depth[i, p[1], p[0]]), float(ctx.depth[i, p2[1], p2[0]])
        if max(d1, d2) >= 1.25 * min(d1, d2):
            a, b = _norm_xy(*p, w, h), _norm_xy(*p2, w, h)
            closer = f"({a[0]}, {a[1]})" if d1 < d2 else f"({b[0]}, {b[1]})"
            other = f"({b[0]}, {b[1]})" if d1 < d2 else f"({a[0]}, {a[1]})"
            options, letter = multiple_choice(ctx.rng, closer, [other])
            out.append(_qa(ctx, "multispa_depth_compare", "In image 1, which of these two points is closer to the camera? "
                           "Coordinates are normalised to 0-1000.", letter, "choice", closer, [i], options))
    q = ctx.good_pixel(i, object_only=True) or ctx.good_pixel(i)
    if q is not None:
        proj = ctx.project(i, j, *q)
        if proj is not None:
            x1, y1 = _norm_xy(*q, w, h)
            x2, y2 = _norm_xy(proj[0], proj[1], w, h)
            out.append(_qa(ctx, "multispa_correspondence", PAIR_PREFIX + f"Which point in image 2 shows the same 3D point "
                           f"as ({x1}, {y1}) in image 1? Coordinates are normalised to 0-1000; answer as (x, y).",
                           f"({x2}, {y2})", "pixel", f"({x2}, {y2})", [i, j], point=[x1, y1]))
    t, r_rel = ctx.relative(i, j)
    dist = float(np.linalg.norm(t))
    axes = {"right": t[0], "left": -t[0], "forward": t[2], "backward": -t[2]}
    main = max(axes, key=axes.get)
    comps = sorted(np.abs(t))
    if axes[main] >= 0.25 and abs(axes[main]) >= 2 * comps[1] - 1e-9 and abs(axes[main]) == comps[2]:
        options, letter = multiple_choice(ctx.rng, main, [d for d in ("forward", "backward", "left", "right") if d != main])
        out.append(_qa(ctx, "multispa_camera_direction", PAIR_PREFIX + "Relative to where the camera faces in image 1, "
                       "in which direction did the camera mainly move between image 1 and image 2?", letter, "choice",
                       main, [i, j], options))
    if dist >= 0.3:
        vec = f"({_f2(t[0])}, {_f2(t[1])}, {_f2(t[2])})"
        out.append(_qa(ctx, "multispa_camera_distance", PAIR_PREFIX + "How far did the camera move between image 1 and "
                       "image 2, in meters?", f"{dist:.2f}", "number_rel20", f"{dist:.2f}", [i, j]))
        out.append(_qa(ctx, "multispa_camera_displacement", PAIR_PREFIX + "What is the displacement vector of the camera "
                       "from image 1 to image 2, in meters, in the camera coordinates of image 1 (x right, y down, "
                       "z forward)? Answer as (x, y, z).", vec, "vector", vec, [i, j]))
    fwd = r_rel[:, 2]
    yaw = math.degrees(math.atan2(-fwd[0], fwd[2]))                 # left positive
    pitch = math.degrees(math.atan2(-fwd[1], math.hypot(fwd[0], fwd[2])))   # up positive
    if abs(yaw) >= 10:
        out.append(_qa(ctx, "multispa_camera_yaw", PAIR_PREFIX + "By how many degrees did the camera turn horizontally "
                       "between image 1 and image 2? Positive means a turn to the left, negative to the right.",
                       f"{yaw:.0f}", "number_rel20", f"{yaw:.0f}", [i, j]))
    if abs(pitch) >= 5:
        out.append(_qa(ctx, "multispa_camera_pitch", PAIR_PREFIX + "By how many degrees did the camera tilt between "
                       "image 1 and image 2? Positive means tilting up, negative down.", f"{pitch:.0f}", "number_rel20",
                       f"{pitch:.0f}", [i, j]))
    need = 0.005 * w * h
    for cat, boxes in ctx.meta.objects.items():
        if len(boxes) != 1 or boxes[0].instance_id is None:
            continue
        iid = boxes[0].instance_id
        if (ctx.instance[i] == iid).sum() >= need and (ctx.instance[j] == iid).sum() >= need:
            hcm = int(round(float(boxes[0].axes_lengths[2]) * 100))
            out.append(_qa(ctx, "multispa_object_size", PAIR_PREFIX + f"The {cat} is visible in both images. How tall "
                           "is it, in centimeters?", str(hcm), "number_rel20", str(hcm), [i, j], category=cat))
    return out


def generate_multispa(ctx: FramePairContext, num_pairs: int = 12, min_gap: int = 2) -> Dict[str, List[QA]]:
    """Candidate questions grouped by task over ``num_pairs`` random frame pairs."""
    grouped: Dict[str, List[QA]] = {}
    if ctx.n < 2:
        return grouped
    max_gap = max(min_gap, ctx.n // 3)
    for _ in range(num_pairs):
        i = ctx.rng.randrange(0, ctx.n - 1)
        j = min(ctx.n - 1, i + ctx.rng.randint(min(min_gap, ctx.n - 1 - i), max(1, min(max_gap, ctx.n - 1 - i))))
        if j == i:
            continue
        for qa in gen_pair(ctx, i, j):
            grouped.setdefault(qa.task_type, []).append(qa)
    return grouped
