"""CPU renderer for procedural scenes: Intel Embree ray casting (``embreex`` binding; meshes
built with ``trimesh``), no hand-written ray/triangle code.

Per frame: RGB (uint8, Lambert shading + procedural textures evaluated at the hit points),
metric z-depth (float32 metres, 0 where nothing is hit), instance mask (int32: 0 = room
structure or nothing, k >= 1 = object instance_id), shared intrinsics K [3,3] and the
OpenCV poses camera_from_world / world_from_camera [4,4].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import trimesh
from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh

from training.data.scenes import ProceduralScene, Room, SceneObject

STRUCTURE_FLOOR, STRUCTURE_WALL, STRUCTURE_CEILING = -1, -2, -3


@dataclass
class RenderedVideo:
    """All frames of one trajectory.

    rgb [N,H,W,3] uint8; depth [N,H,W] float32 (m, z-depth); instance [N,H,W] int32;
    intrinsics [3,3] float64; camera_from_world [N,4,4]; world_from_camera [N,4,4].
    """
    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    intrinsics: np.ndarray
    camera_from_world: np.ndarray
    world_from_camera: np.ndarray

    def visible_pixels(self) -> dict:
        """{instance_id: [N] pixel counts per frame}."""
        ids = np.unique(self.instance)
        return {int(i): (self.instance == i).reshape(len(self.instance), -1).sum(1) for i in ids if i > 0}


def intrinsics_for(width: int, height: int, hfov_deg: float = 66.0) -> np.ndarray:
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _quad(a, b, c, d):
    return np.array([a, b, c, d], float), np.array([[0, 1, 2], [0, 2, 3]])


def _room_meshes(room: Room) -> List[tuple]:
    """(mesh, label) for floor, ceiling and each wall."""
    out = []
    for x0, y0, x1, y1 in room.rects:
        v, f = _quad((x0, y0, 0), (x1, y0, 0), (x1, y1, 0), (x0, y1, 0))
        out.append((trimesh.Trimesh(v, f, process=False), STRUCTURE_FLOOR))
        v, f = _quad((x0, y0, room.height), (x0, y1, room.height), (x1, y1, room.height), (x1, y0, room.height))
        out.append((trimesh.Trimesh(v, f, process=False), STRUCTURE_CEILING))
    for a, b in room.walls():
        v, f = _quad((a[0], a[1], 0), (b[0], b[1], 0), (b[0], b[1], room.height), (a[0], a[1], room.height))
        out.append((trimesh.Trimesh(v, f, process=False), STRUCTURE_WALL))
    return out


def _object_mesh(obj: SceneObject) -> trimesh.Trimesh:
    sx, sy, sz = obj.size
    if obj.shape == "cylinder":
        mesh = trimesh.creation.cylinder(radius=0.5, height=sz, sections=24)
        mesh.apply_scale([sx, sy, 1.0])
    elif obj.shape == "table":
        top = 0.04
        parts = [trimesh.creation.box((sx, sy, top), trimesh.transformations.translation_matrix((0, 0, sz / 2 - top / 2)))]
        leg = min(0.05, sx / 8, sy / 8)
        for px in (-1, 1):
            for py in (-1, 1):
                tr = trimesh.transformations.translation_matrix((px * (sx / 2 - leg), py * (sy / 2 - leg), -top / 2))
                parts.append(trimesh.creation.box((leg, leg, sz - top), tr))
        mesh = trimesh.util.concatenate(parts)
    else:
        mesh = trimesh.creation.box((sx, sy, sz))
    tf = np.eye(4)
    tf[:3, :3] = obj.rotation
    tf[:3, 3] = obj.center
    mesh.apply_transform(tf)
    return mesh


class SceneRenderer:
    """Builds one Embree scene for a ProceduralScene and renders arbitrary poses."""

    def __init__(self, scene: ProceduralScene):
        self.scene = scene
        meshes, labels = [], []
        for mesh, label in _room_meshes(scene.room):
            meshes.append(mesh)
            labels.append(np.full(len(mesh.faces), label, np.int32))
        for obj in scene.objects:
            mesh = _object_mesh(obj)
            meshes.append(mesh)
            labels.append(np.full(len(mesh.faces), obj.instance_id, np.int32))
        self.mesh = trimesh.util.concatenate(meshes)
        self.face_label = np.concatenate(labels)                     # [F]
        self.face_normal = np.asarray(self.mesh.face_normals)        # [F,3]
        self.embree = rtcore_scene.EmbreeScene()
        TriangleMesh(scene=self.embree, vertices=np.asarray(self.mesh.vertices, np.float32),
                     indices=np.asarray(self.mesh.faces, np.int32))
        st = scene.style
        colors = {STRUCTURE_FLOOR: st.get("floor_color", [0.5, 0.4, 0.3]), STRUCTURE_WALL: st.get("wall_color", [0.8, 0.8, 0.8]),
                  STRUCTURE_CEILING: st.get("ceiling_color", [0.9, 0.9, 0.9])}
        self.label_color = {k: np.asarray(v, float) for k, v in colors.items()}
        for obj in scene.objects:
            self.label_color[obj.instance_id] = np.asarray(obj.color, float)
        self.light = np.asarray(st.get("light_dir", [0.3, 0.2, 1.0]), float)
        self.light /= np.linalg.norm(self.light)
        self.light32 = self.light.astype(np.float32)
        self.face_normal32 = self.face_normal.astype(np.float32)
        # colour lookup table indexed by label + 3 (labels run from -3 = ceiling to max instance id)
        self._color_lut = np.zeros((max(self.label_color) + 4, 3), np.float32)
        for k, c in self.label_color.items():
            self._color_lut[int(k) + 3] = c

    def _texture(self, labels: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Per-hit multiplicative texture factor [M] from world hit points [M,3]."""
        factor = np.ones(len(labels), np.float32)
        floor = labels == STRUCTURE_FLOOR
        kind = self.scene.style.get("floor_texture", "plain")
        if kind == "checker":
            tile = (np.floor(pts[floor, 0] / 0.5) + np.floor(pts[floor, 1] / 0.5)) % 2
            factor[floor] = 0.8 + 0.25 * tile
        elif kind == "planks":
            factor[floor] = 0.85 + 0.15 * (np.floor(pts[floor, 0] / 0.2) % 3) / 2 + 0.04 * np.sin(pts[floor, 1] * 9)
        wall = labels == STRUCTURE_WALL
        factor[wall] = 0.97 + 0.03 * np.sin(pts[wall, 2] * 25.0)
        for obj in self.scene.objects:
            sel = labels == obj.instance_id
            if not sel.any() or obj.texture == "plain":
                continue
            local = (pts[sel] - obj.center) @ obj.rotation
            if obj.texture == "stripes":
                factor[sel] = 0.75 + 0.25 * (np.floor(local[:, 2] / 0.08) % 2)
            elif obj.texture == "checker":
                factor[sel] = 0.75 + 0.25 * ((np.floor(local[:, 0] / 0.1) + np.floor(local[:, 2] / 0.1)) % 2)
            else:
                factor[sel] = 0.85 + 0.15 * np.sin(local[:, 0] * 31.0) * np.sin(local[:, 1] * 23.0 + local[:, 2] * 17.0)
        return factor

    def _camera_rays(self, intrinsics: np.ndarray, width: int, height: int):
        """Cached unit ray directions in the camera frame [HW,3] f32 and their z-components [HW]."""
        key = (width, height, tuple(np.round(intrinsics.ravel(), 6)))
        if getattr(self, "_ray_key", None) != key:
            u, v = np.meshgrid(np.arange(width, dtype=np.float32) + 0.5, np.arange(height, dtype=np.float32) + 0.5)
            d = np.stack([(u - intrinsics[0, 2]) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1],
                          np.ones_like(u)], -1).reshape(-1, 3).astype(np.float32)
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            self._ray_key, self._rays = key, (d, d[:, 2].copy())
        return self._rays

    def render(self, world_from_camera: np.ndarray, intrinsics: np.ndarray, width: int, height: int):
        """One view -> (rgb [H,W,3] uint8, depth [H,W] float32, instance [H,W] int32)."""
        dirs_cam, cos_axis = self._camera_rays(intrinsics, width, height)          # [HW,3], [HW]
        rot = world_from_camera[:3, :3].astype(np.float32)
        origin = world_from_camera[:3, 3].astype(np.float32)
        dirs = np.ascontiguousarray(dirs_cam @ rot.T)                                # unit, world
        origins = np.empty_like(dirs)
        origins[:] = origin
        hits = self.embree.run(origins, dirs, output=1)
        prim = np.asarray(hits["primID"])
        all_hit = bool((prim >= 0).all())                 # closed rooms: skip the gathers
        ray = slice(None) if all_hit else np.flatnonzero(prim >= 0)
        tri = prim if all_hit else prim[ray]
        n_px = width * height
        depth = np.zeros(n_px, np.float32)
        inst = np.zeros(n_px, np.int32)
        rgb = np.zeros((n_px, 3), np.float32)
        if len(tri):
            t = np.asarray(hits["tfar"], np.float32)[ray]
            d = dirs[ray]
            loc = origin + d * t[:, None]
            depth[ray] = t * cos_axis[ray]                                            # z-depth
            labels = self.face_label[tri]
            inst[ray] = np.maximum(labels, 0)
            normal = self.face_normal32[tri]
            cos_view = np.abs(np.einsum("ij,ij->i", normal, d))
            shade = 0.5 + 0.35 * np.abs(normal @ self.light32) + 0.15 * cos_view
            shade *= 1.0 / (1.0 + 0.03 * t)
            shade *= self._texture(labels, loc)
            rgb[ray] = self._colors(labels) * shade[:, None]
        img = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).reshape(height, width, 3)
        return img, depth.reshape(height, width), inst.reshape(height, width)

    def _colors(self, labels: np.ndarray) -> np.ndarray:
        return self._color_lut[labels + 3]

    def render_video(self, width: int = 640, height: int = 480, poses: Optional[np.ndarray] = None,
                     hfov_deg: float = 66.0) -> RenderedVideo:
        poses = self.scene.world_from_camera if poses is None else poses
        K = intrinsics_for(width, height, hfov_deg)
        n = len(poses)
        rgb = np.zeros((n, height, width, 3), np.uint8)
        depth = np.zeros((n, height, width), np.float32)
        inst = np.zeros((n, height, width), np.int32)
        for i, pose in enumerate(poses):
            rgb[i], depth[i], inst[i] = self.render(pose, K, width, height)
        return RenderedVideo(rgb, depth, inst, K, np.linalg.inv(poses), poses.copy())


def render_scene(scene: ProceduralScene, width: int = 640, height: int = 480) -> RenderedVideo:
    """Render the scene's whole trajectory."""
    return SceneRenderer(scene).render_video(width, height)
