"""Object category names: robust matching and the synthetic category catalogue.

Real annotation sets spell categories differently from the questions asked about them
("trash_bin" vs "trash bin", "Chairs" vs "chair", "tv-monitor" vs "tv monitor"), so every
lookup goes through :func:`category_key`, which lower-cases, turns ``_``/``-`` into spaces,
collapses whitespace and singularises the last word.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Tuple

_IRREGULAR_SINGULAR = {"shelves": "shelf", "knives": "knife", "people": "person",
                       "feet": "foot", "mice": "mouse", "leaves": "leaf"}
_NO_SINGULAR = ("ss", "us", "is", "ics")   # glass, cactus, chassis, electronics stay as they are


def normalize_category(name: str) -> str:
    """'Trash_Bin ' -> 'trash bin' (case, separators and whitespace only)."""
    text = re.sub(r"[_\-]+", " ", str(name).strip().lower())
    return re.sub(r"\s+", " ", text).strip()


def singular(word: str) -> str:
    """English singular of one lower-case word, good enough for object category names."""
    if word in _IRREGULAR_SINGULAR:
        return _IRREGULAR_SINGULAR[word]
    if len(word) <= 2 or word.endswith(_NO_SINGULAR):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def category_key(name: str) -> str:
    """Matching key: normalised name with its last word singularised ('trash_bins' -> 'trash bin')."""
    words = normalize_category(name).split(" ")
    words[-1] = singular(words[-1])
    return " ".join(words)


def match_category(name: str, available: Iterable[str]) -> Optional[str]:
    """Return the entry of ``available`` that names the same category as ``name`` (or None).

    Exact match first, then the robust key; spaces removed entirely as a last resort
    ("trashbin" == "trash bin").
    """
    available = list(available)
    if name in available:
        return name
    key = category_key(name)
    for cand in available:
        if category_key(cand) == key:
            return cand
    squashed = key.replace(" ", "")
    for cand in available:
        if category_key(cand).replace(" ", "") == squashed:
            return cand
    return None


@dataclass(frozen=True)
class CategorySpec:
    """A furniture-like category for procedural scenes.

    size_min/size_max: (width x, depth y, height z) in metres, real-world ranges.
    placement: 'floor' (stands on the floor), 'wall' (against a wall, on the floor),
    'wall_mounted' (hangs on a wall at mount_height), 'on_top' (stands on a table/counter).
    shape: 'box', 'table' (top + legs), 'cylinder'.
    """
    name: str
    size_min: Tuple[float, float, float]
    size_max: Tuple[float, float, float]
    placement: str = "floor"
    shape: str = "box"
    mount_height: Tuple[float, float] = (0.0, 0.0)
    max_count: int = 2


# Real-world size ranges (metres), from common furniture dimensions.
SYNTHETIC_CATEGORIES: Tuple[CategorySpec, ...] = (
    CategorySpec("chair", (0.42, 0.45, 0.78), (0.55, 0.58, 1.0), "floor", "box", max_count=6),
    CategorySpec("table", (0.7, 0.6, 0.7), (1.8, 1.0, 0.78), "floor", "table", max_count=2),
    CategorySpec("sofa", (1.6, 0.8, 0.75), (2.4, 1.0, 0.95), "wall", "box", max_count=1),
    CategorySpec("bed", (1.4, 1.9, 0.45), (1.9, 2.1, 0.65), "wall", "box", max_count=1),
    CategorySpec("bookshelf", (0.6, 0.28, 1.5), (1.2, 0.4, 2.1), "wall", "box", max_count=2),
    CategorySpec("cabinet", (0.5, 0.4, 0.7), (1.2, 0.6, 1.2), "wall", "box", max_count=2),
    CategorySpec("nightstand", (0.4, 0.35, 0.45), (0.55, 0.45, 0.65), "wall", "box", max_count=2),
    CategorySpec("refrigerator", (0.6, 0.6, 1.5), (0.9, 0.75, 1.9), "wall", "box", max_count=1),
    CategorySpec("washing machine", (0.58, 0.55, 0.82), (0.62, 0.65, 0.88), "wall", "box", max_count=1),
    CategorySpec("trash bin", (0.25, 0.25, 0.3), (0.4, 0.4, 0.7), "floor", "cylinder", max_count=3),
    CategorySpec("plant", (0.3, 0.3, 0.5), (0.6, 0.6, 1.6), "floor", "cylinder", max_count=3),
    CategorySpec("lamp", (0.3, 0.3, 1.2), (0.45, 0.45, 1.8), "floor", "cylinder", max_count=2),
    CategorySpec("box", (0.3, 0.25, 0.2), (0.7, 0.5, 0.5), "floor", "box", max_count=4),
    CategorySpec("tv", (0.9, 0.08, 0.55), (1.6, 0.1, 0.95), "wall_mounted", "box", (1.0, 1.4), 1),
    CategorySpec("whiteboard", (1.2, 0.03, 0.8), (2.4, 0.04, 1.2), "wall_mounted", "box", (0.9, 1.2), 1),
    CategorySpec("picture", (0.4, 0.03, 0.3), (1.0, 0.04, 0.8), "wall_mounted", "box", (1.3, 1.7), 3),
    CategorySpec("monitor", (0.5, 0.15, 0.35), (0.7, 0.2, 0.5), "on_top", "box", max_count=2),
    CategorySpec("microwave", (0.45, 0.35, 0.26), (0.55, 0.42, 0.32), "on_top", "box", max_count=1),
    CategorySpec("backpack", (0.28, 0.18, 0.4), (0.35, 0.25, 0.5), "floor", "box", max_count=2),
)

CATEGORY_BY_NAME: Mapping[str, CategorySpec] = {c.name: c for c in SYNTHETIC_CATEGORIES}
