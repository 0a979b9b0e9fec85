"""Per-instance visibility from instance masks (drives appearance order and 'seen' filters)."""
from __future__ import annotations

from typing import Dict

import numpy as np

MIN_VISIBLE_FRACTION = 0.002     # an instance counts as visible with >= 0.2 % of the image


def first_visible_frames(instance: np.ndarray, min_fraction: float = MIN_VISIBLE_FRACTION,
                         min_pixels: int = 20) -> Dict[int, int]:
    """instance [N,H,W] int -> {instance_id: first frame index where it covers enough pixels}."""
    n, h, w = instance.shape
    need = max(min_pixels, int(round(min_fraction * h * w)))
    out: Dict[int, int] = {}
    for i in range(n):
        ids, counts = np.unique(instance[i], return_counts=True)
        for iid, c in zip(ids.tolist(), counts.tolist()):
            if iid > 0 and c >= need and iid not in out:
                out[iid] = i
    return out


def visible_counts(instance: np.ndarray) -> Dict[int, np.ndarray]:
    """{instance_id: [N] pixel count per frame}."""
    n = len(instance)
    flat = instance.reshape(n, -1)
    return {int(i): (flat == i).sum(1) for i in np.unique(flat) if i > 0}
