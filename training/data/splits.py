"""Train/validation/test splits by scene with disjoint seed ranges.

Scene k of split s is built from seed ``SPLIT_SEED_BASE[s] + k``; the bases are 10^7 apart, so
no seed (hence no scene) can appear in two splits as long as a split has < 10^7 scenes.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

SPLITS = ("train", "val", "test")
SPLIT_SEED_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000}
SPLIT_STRIDE = 10_000_000


def split_counts(num_scenes: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> List[int]:
    """Scenes per split; every split with a non-zero fraction gets >= 1 scene when num_scenes >= 3."""
    counts = [int(num_scenes * f) for f in fractions]
    for i in range(len(counts)):
        if fractions[i] > 0 and counts[i] == 0 and num_scenes >= len(fractions):
            counts[i] = 1
    counts[0] = max(0, num_scenes - sum(counts[1:]))
    return counts


def scene_jobs(num_scenes: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> List[Tuple[str, int, str]]:
    """[(split, seed, scene_id)] for the whole dataset, deterministic."""
    jobs = []
    for split, n in zip(SPLITS, split_counts(num_scenes, fractions)):
        for k in range(n):
            seed = SPLIT_SEED_BASE[split] + k
            jobs.append((split, seed, f"{split}_{seed:08d}"))
    return jobs


def split_of_seed(seed: int) -> str:
    return SPLITS[seed // SPLIT_STRIDE]
