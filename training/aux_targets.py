"""Auxiliary grounding targets for cached SFT, from the data engine's ground truth.

Answer tokens alone reward reading the frames only once the whole chain (find the object's
tokens, carry its position to the question, compute the answer) already works, so a tiny LLM
learns the question-text priors first and the frames late or never (docs/frame_signal.md). These
targets supervise the links of that chain directly, on every question, from what the renderer
knows: where each visual token looks (its category mix and 3-D position) and, for every object
category the prompt names, what the frames show of it (seen or not, how many instances, when
first, where, how big). Heads on the fused visual tokens and on the LLM's hidden states at the
category words learn them next to the answer loss (training/aux_heads.py); they are training-only
and never exported.

Coordinates are those of the first sampled frame's camera (OpenCV: x right, y down, z forward),
the world frame of the VGGT spatial encoder, in metres.

Per frame set (the K sampled frames, padded to the temporal patch by repeating the last, as the
model does), in Qwen's merged video-token order (t, h_block, w_block):
    tok_cat [N, C+1]  category mix of the token's pixels (0 = room surfaces), rows sum to 1
    tok_xyz [N, 3]    mean 3-D position of the token's pixels
Per prompt mention of a catalogue category (the name's last token):
    MENTION_FIELDS    seen, visible instances, first sampled frame, centroid xyz, longest side
Per option line of a multiple-choice prompt (its last token): whether it is the answer; per
category named inside an option line after another one: whether it was first seen later than
that one (the step "this list is in order" of appearance-order questions).
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

from training.semantic_pretrain import category_names, instance_classes

CLASS_NAMES = tuple(category_names())          # 0 = room surfaces, then the synthetic catalogue
CATEGORIES = CLASS_NAMES[1:]
NUM_CLASSES = len(CLASS_NAMES)
# longest names first so 'washing machine' wins over a shorter overlapping name
_CAT_PATTERN = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(CATEGORIES, key=len, reverse=True))
                          + r")(?:\(s\)|s)?\b")
MENTION_FIELDS = ("seen", "count", "first", "x", "y", "z", "size")
XYZ_SCALE = 3.0            # metres per unit of the regression targets
MIN_PIXELS = 20            # an instance counts as seen in a frame from this many pixels (grounding questions' rule)


@functools.lru_cache(maxsize=256)
def scene_info(scene_dir: str) -> dict:
    """meta.json + cameras.json of a data-engine scene: instance -> category, boxes, poses."""
    scene = Path(scene_dir)
    meta = next(iter(json.loads((scene / "meta.json").read_text()).values()))
    cams = json.loads((scene / "cameras.json").read_text())
    inst_cat = instance_classes(scene / "meta.json", list(CLASS_NAMES))
    objects = {}
    for cat, boxes in meta["object_bbox"].items():
        objects[cat] = {"ids": [int(b["instance_id"]) for b in boxes],
                        "centroids": np.asarray([b["centroid"] for b in boxes], np.float64),
                        "size": float(max(boxes[0]["axesLengths"]))}
    return {"inst_cat": inst_cat, "objects": objects, "room_size": float(meta["room_size"]),
            "K": np.asarray(cams["intrinsics"], np.float64),
            "cam_from_world": np.asarray(cams["camera_from_world"], np.float64),
            "world_from_cam": np.asarray(cams["world_from_camera"], np.float64)}


# Every frame of the default data set fits (2,000 rooms x 32 frames, ~2.5 KB each: ~200 MB). SFT
# rows draw random rooms, so a cache of 4,096 frames missed ~94 % of lookups and rebuilt each
# frame from its PNGs (2.5 ms) about eight times over a run: a quarter of the cached-SFT profile
# (docs/frame_signal.md, eighth sprint; the wall-time saving did not show on that VM).
FRAME_CACHE_SIZE = 1 << 17


@functools.lru_cache(maxsize=FRAME_CACHE_SIZE)
def frame_blocks(scene_dir: str, frame: int, block: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One frame cut into block x block pixel cells (row-major): category histogram [M, C+1],
    sum of world points [M, 3], valid-depth pixel count [M], and instance id -> pixel count."""
    import cv2

    info = scene_info(scene_dir)
    scene = Path(scene_dir)
    inst = cv2.imread(str(scene / "instance" / f"{frame:06d}.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
    depth = cv2.imread(str(scene / "depth" / f"{frame:06d}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0
    h, w = inst.shape
    cat = info["inst_cat"][np.clip(inst, 0, len(info["inst_cat"]) - 1)]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    kinv = np.linalg.inv(info["K"])
    rays = np.stack([u + 0.5, v + 0.5, np.ones_like(u)], -1) @ kinv.T              # [h, w, 3]
    cam_pts = rays * depth[..., None]
    wfc = info["world_from_cam"][frame]
    world = cam_pts @ wfc[:3, :3].T + wfc[:3, 3]
    valid = depth > 0
    gh, gw = h // block, w // block
    cells = lambda a: a[: gh * block, : gw * block].reshape(gh, block, gw, block, *a.shape[2:]).swapaxes(1, 2) \
        .reshape(gh * gw, block * block, *a.shape[2:])
    cat_c, world_c, valid_c = cells(cat), cells(world), cells(valid)
    hist = np.stack([np.bincount(row, minlength=NUM_CLASSES)[:NUM_CLASSES] for row in cat_c]).astype(np.float64)
    xyz_sum = (world_c * valid_c[..., None]).sum(1)
    ids, counts = np.unique(inst, return_counts=True)
    seen = {int(i): int(c) for i, c in zip(ids, counts) if i > 0}
    return hist, xyz_sum, valid_c.sum(1).astype(np.float64), seen


def split_key(key: tuple) -> tuple[str, list[int]]:
    """Feature-cache key (frame file paths) -> (scene dir, frame numbers)."""
    paths = [Path(p) for p in key]
    return str(paths[0].parent.parent), [int(p.stem) for p in paths]


def token_targets(key: tuple, temporal_patch: int = 2) -> dict:
    """tok_cat [N, C+1] and tok_xyz [N, 3] (first-camera coordinates / XYZ_SCALE) for the frame
    set, N = (S / temporal_patch) * cells, in the merged token order."""
    scene, frames = split_key(key)
    frames = frames + [frames[-1]] * (-len(frames) % temporal_patch)
    info = scene_info(scene)
    c0 = info["cam_from_world"][frames[0]]
    per = [frame_blocks(scene, f) for f in frames]
    hist = np.stack([p[0] for p in per])                         # [S, M, C+1]
    xyz = np.stack([p[1] for p in per])                          # [S, M, 3]
    cnt = np.stack([p[2] for p in per])                          # [S, M]
    s, m = hist.shape[:2]
    hist = hist.reshape(s // temporal_patch, temporal_patch, m, -1).sum(1)
    xyz = xyz.reshape(s // temporal_patch, temporal_patch, m, 3).sum(1)
    cnt = cnt.reshape(s // temporal_patch, temporal_patch, m).sum(1)
    mean = xyz / np.maximum(cnt, 1)[..., None]
    mean = mean @ c0[:3, :3].T + c0[:3, 3]
    return {"tok_cat": (hist / np.maximum(hist.sum(-1, keepdims=True), 1)).reshape(-1, NUM_CLASSES).astype(np.float32),
            "tok_xyz": (mean / XYZ_SCALE).reshape(-1, 3).astype(np.float32)}


def category_targets(key: tuple) -> dict[str, np.ndarray]:
    """category -> MENTION_FIELDS values (normalised) for the frames of `key`; a category the
    scene does not have maps to seen = 0 with the rest NaN (not supervised)."""
    scene, frames = split_key(key)
    info = scene_info(scene)
    c0 = info["cam_from_world"][frames[0]]
    first: dict[int, int] = {}
    for pos, f in enumerate(frames):
        for iid, n in frame_blocks(scene, f)[3].items():
            if n >= MIN_PIXELS:
                first.setdefault(iid, pos)
    out = {}
    k = max(len(frames) - 1, 1)
    for cat in CATEGORIES:
        obj = info["objects"].get(cat)
        row = np.full(len(MENTION_FIELDS), np.nan, np.float32)
        row[0] = 0.0
        if obj is not None:
            seen = [first[i] for i in obj["ids"] if i in first]
            if seen:
                xyz = obj["centroids"].mean(0) @ c0[:3, :3].T + c0[:3, 3]
                row[:] = [1.0, len(seen) / 3.0, min(seen) / k, *(xyz / XYZ_SCALE), obj["size"]]
        out[cat] = row
    return out


def room_target(key: tuple) -> float:
    """log(room floor area / 25 m^2)."""
    return float(np.log(scene_info(split_key(key)[0])["room_size"] / 25.0))


def mention_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, category) of each catalogue category named in `text` (character offsets)."""
    return [(m.start(1), m.end(1), m.group(1)) for m in _CAT_PATTERN.finditer(text)]


_OPTION_LINE = re.compile(r"^([A-Z])\. (.*)$", re.MULTILINE)


def option_spans(text: str) -> list[tuple[str, int, int]]:
    """(letter, start, end) of each option line ("A. ...") after the prompt's "Options:" line."""
    head = text.find("Options:\n")
    if head < 0:
        return []
    return [(m.group(1), m.start(), m.end()) for m in _OPTION_LINE.finditer(text, head)]


def mention_positions(offsets: list[tuple[int, int]], spans: list[tuple[int, int, str]]) -> list[tuple[int, str]]:
    """Token index of the last token of each span (offsets: the tokenizer's per-token char spans)."""
    out = []
    for start, end, cat in spans:
        last = [i for i, (a, b) in enumerate(offsets) if b > start and a < end]
        if last:
            out.append((last[-1], cat))
    return out


__all__ = ["CATEGORIES", "NUM_CLASSES", "MENTION_FIELDS", "XYZ_SCALE", "token_targets", "category_targets",
           "room_target", "mention_spans", "mention_positions", "option_spans", "scene_info", "frame_blocks", "split_key"]
