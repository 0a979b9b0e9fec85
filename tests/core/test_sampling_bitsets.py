"""Word-wise bit packing, cached VoxelIndex rows and the incremental greedy vs plain references.

The references below are deliberately naive: a dense boolean frame x voxel table packed with
``np.packbits`` (the previous implementation) and a greedy over Python sets following the rules of
``greedy.py``. Every fast path must give identical bits and identical SamplingResults.
"""

import math

import numpy as np
import pytest

from ros2_spatial_mllm.sampling import (
    FrameVoxels,
    VoxelIndex,
    greedy_max_coverage,
    pack_voxel_sets,
    space_aware_sample,
)
from ros2_spatial_mllm.sampling.bitsets import pack_used_words, sparse_words, stack_sparse_rows
from ros2_spatial_mllm.sampling.voxels import pack_keys


def dense_pack(ids_per_frame, num_voxels):
    """Reference packing: dense bool [N, 64W] table -> packbits -> uint64 [N, W]."""
    words = max(1, -(-num_voxels // 64))
    dense = np.zeros((len(ids_per_frame), words * 64), dtype=bool)
    for row, ids in enumerate(ids_per_frame):
        dense[row, np.asarray(ids, np.int64)] = True
    return np.packbits(dense, axis=1, bitorder="little").view(np.uint64)


def set_greedy(sets, k, times=None):
    """Reference greedy on Python sets: max gain, ties earliest (time, index); then temporal fill."""
    n = len(sets)
    times = list(range(n)) if times is None else [float(t) for t in times]
    rank = sorted(range(n), key=lambda i: (times[i], i))
    union = set().union(*sets) if sets else set()
    covered, picks, gains = set(), [], []
    nearest = [math.inf] * n
    for _ in range(min(k, n)):
        available = [i for i in rank if i not in picks]
        best = max(available, key=lambda i: len(sets[i] - covered))  # first max = earliest
        gain = len(sets[best] - covered)
        if gain <= 0:
            best, gain = max(available, key=lambda i: nearest[i]), 0
        gains.append(gain)
        covered |= sets[best]
        picks.append(best)
        nearest = [min(d, abs(times[i] - times[best])) for i, d in enumerate(nearest)]
    return {"indices": sorted(picks, key=lambda i: (times[i], i)), "pick_order": picks, "gains": gains,
            "coverage": len(covered) / len(union) if union else 0.0, "num_voxels": len(union)}


def assert_same_result(result, expected):
    got = result.to_dict()
    assert {key: got[key] for key in expected} == expected


def random_sets(rng, n, num_voxels, max_size, empty_fraction=0.2):
    """n id arrays in [0, num_voxels): duplicates, random order, some empty frames."""
    sets = []
    for _ in range(n):
        size = 0 if rng.random() < empty_fraction else int(rng.integers(0, max_size + 1))
        ids = rng.integers(0, num_voxels, size=size)
        sets.append(np.sort(ids) if rng.random() < 0.5 else ids)
    return sets


def walk_sets(rng, n=64, per_frame=400, window=900, step=25, revisit_every=16):
    """Robot-like sets: a sliding window of the space, with periodic returns to the start."""
    sets = []
    for i in range(n):
        base = 0 if i % revisit_every == revisit_every - 1 else i * step
        sets.append(np.sort(rng.choice(window, per_frame, replace=False) + base))
    return sets


# ------------------------------------------------------------------------------ packing
def test_pack_matches_dense_reference_random_and_edges():
    rng = np.random.default_rng(10)
    for _ in range(150):
        num_voxels = int(rng.integers(1, 700))
        sets = random_sets(rng, int(rng.integers(0, 30)), num_voxels, 90)
        np.testing.assert_array_equal(pack_voxel_sets(sets, num_voxels), dense_pack(sets, num_voxels))
    edges = [np.array([0, 63, 64, 127, 128]), np.array([], np.int64), np.array([128, 0, 0, 63])]
    for num_voxels in (129, 192, 193):
        packed = pack_voxel_sets(edges, num_voxels)
        assert packed.dtype == np.uint64 and packed.shape == (3, -(-num_voxels // 64))
        np.testing.assert_array_equal(packed, dense_pack(edges, num_voxels))
    # > 32k ids in all, one frame alone bigger than a packing batch, empty frames between
    big = [rng.integers(0, 20000, size=s) for s in (900, 0, 40000, 1500, 0, 30000, 17)] + \
          [np.sort(rng.choice(20000, 1500, replace=False)) for _ in range(30)]
    np.testing.assert_array_equal(pack_voxel_sets(big, 20000), dense_pack(big, 20000))
    with pytest.raises(ValueError, match="voxel ids"):
        pack_voxel_sets(big + [np.array([20000])], 20000)  # bad id in a later batch
    assert pack_voxel_sets([], 10).shape == (0, 1)
    np.testing.assert_array_equal(pack_voxel_sets([[], []], 0), np.zeros((2, 1), np.uint64))
    np.testing.assert_array_equal(pack_voxel_sets([[0], [5]], 6), dense_pack([[0], [5]], 6))


def test_pack_rejects_ids_outside_the_id_space():
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        pack_voxel_sets([np.array([1, 10])], 10)
    with pytest.raises(ValueError, match="voxel ids"):
        pack_voxel_sets([np.array([3]), np.array([-1])], 10)


def test_sparse_words_and_stacking_match_dense_rows():
    rng = np.random.default_rng(11)
    sets = random_sets(rng, 20, 1000, 120) + walk_sets(rng, n=8, per_frame=50, window=200, step=40)
    num_voxels = 1300
    dense = dense_pack(sets, num_voxels)  # [N, W]
    rows = [sparse_words(ids) for ids in sets]
    for (index, bits), dense_row in zip(rows, dense):
        assert index.dtype == np.int64 and bits.dtype == np.uint64
        assert (np.diff(index) > 0).all() and (bits != 0).all()
        np.testing.assert_array_equal(index, np.flatnonzero(dense_row))
        np.testing.assert_array_equal(bits, dense_row[index])
    stacked = stack_sparse_rows(rows, dense.shape[1])
    used = np.flatnonzero(np.bitwise_or.reduce(dense, axis=0))  # columns some row uses
    np.testing.assert_array_equal(stacked, dense[:, used])
    assert stack_sparse_rows([sparse_words([]), sparse_words([])], 4).shape == (2, 1)
    with pytest.raises(ValueError, match=">= 0"):
        sparse_words([3, -2])
    np.testing.assert_array_equal(pack_used_words(sets, num_voxels), dense[:, used])
    keys = [np.asarray(ids) * 1000 + 7 for ids in sets]  # a sparse space, mapped batch by batch
    np.testing.assert_array_equal(pack_used_words(keys, 1_300_000, to_ids=lambda k: k // 1000), dense[:, used])


# ------------------------------------------------------------------------------ greedy
@pytest.mark.parametrize("k", [1, 4, 16, 40, 200])
def test_greedy_matches_set_reference_random(k):
    rng = np.random.default_rng(12 + k)
    for _ in range(25):
        n, num_voxels = int(rng.integers(0, 40)), int(rng.integers(1, 500))
        sets = random_sets(rng, n, num_voxels, 70)
        times = rng.integers(0, 6, size=n).astype(float) if rng.random() < 0.5 else None  # time ties
        expected = set_greedy([set(s.tolist()) for s in sets], k, times)
        assert_same_result(greedy_max_coverage(dense_pack(sets, num_voxels), k, times), expected)
        assert_same_result(space_aware_sample(sets, k, timestamps=times), expected)


def test_greedy_matches_set_reference_structured():
    rng = np.random.default_rng(13)
    sets = walk_sets(rng)
    sets[5] = sets[6] = np.zeros(0, np.int64)  # empty frames in the middle
    sets[20] = sets[19].copy()  # an exact duplicate
    reference_sets = [set(s.tolist()) for s in sets]
    num_voxels = int(max(s.max() for s in sets if s.size)) + 1
    for k in (1, 8, 16, 63, 64, 100):  # up to and past saturation, k >= n
        expected = set_greedy(reference_sets, k)
        assert_same_result(greedy_max_coverage(dense_pack(sets, num_voxels), k), expected)
        assert_same_result(space_aware_sample(sets, k), expected)
    # many all-zero word columns (sparse id space) change nothing
    spread = [s * 97 for s in sets]
    wide = dense_pack(spread, int(max(s.max() for s in spread if s.size)) + 1)
    assert wide.shape[1] > 40 * dense_pack(sets, num_voxels).shape[1] // 2
    assert_same_result(greedy_max_coverage(wide, 16), set_greedy(reference_sets, 16))
    empty = [np.zeros(0, np.int64)] * 7
    assert_same_result(space_aware_sample(empty, 3), set_greedy([set()] * 7, 3))


def test_stateless_key_spaces_small_huge_and_negative():
    raw = [[2**62, 0, 5], [5], [-(2**62), 7, 0], [], [2**62]]  # range too big for bit positions
    assert_same_result(space_aware_sample(raw, 3), set_greedy([set(s) for s in raw], 3))
    raw = [[-5, 3, 3, -5], [3], [10**12, -5]]  # negative and far apart keys, duplicates
    assert_same_result(space_aware_sample(raw, 2), set_greedy([set(s) for s in raw], 2))
    rng = np.random.default_rng(16)
    far = 10**6  # cells +-1e6 apart on all axes: the grid box is too big, dense ids are used
    cells = [rng.integers(-far, far, size=(300, 3)) for _ in range(5)]
    cells += [np.concatenate([cells[0][:100], rng.integers(-50, 50, size=(200, 3))]) for _ in range(5)]
    frames = [_frame(pack_keys(c), rng) for c in cells]
    for voxel_size in (0.02, 0.04):  # factor 1 (far apart) and 2 (coarsened keys)
        result = space_aware_sample(frames, 4, voxel_size=voxel_size)
        assert_same_result(result, _expected_for(frames, 4, result.voxel_size, None))
    near = [_frame(pack_keys(rng.integers(-40, 40, size=(200, 3))), rng) for _ in range(12)]
    result = space_aware_sample(near, 5, voxel_size=0.06)  # small box: row-major grid ids
    assert_same_result(result, _expected_for(near, 5, result.voxel_size, None))


# ------------------------------------------------------------------------------ VoxelIndex
def _frame(keys, rng):
    keys = np.unique(np.asarray(keys, np.int64))
    if keys.size == 0:
        return FrameVoxels(keys, 0.02, None, None, 0)
    low = rng.uniform(-1, 1, 3)
    return FrameVoxels(keys, 0.02, low, low + rng.uniform(1, 3, 3), int(keys.size))


def _expected_for(frames, k, voxel_size, stamps):
    """Reference: the frames' keys at the query factor -> dense ids -> set greedy."""
    factor = int(round(voxel_size / 0.02))
    return set_greedy([set(f.keys_at(factor).tolist()) for f in frames], k, stamps)


@pytest.mark.parametrize("voxel_size", [None, 0.02, 0.06])
def test_voxel_index_matches_reference_through_adds_and_removes(voxel_size):
    rng = np.random.default_rng(14)
    index = VoxelIndex(voxel_size=voxel_size)
    frames, stamps = {}, {}
    checked = 0
    for i in range(170):  # > 64 removals: the vocabulary and cached rows are rebuilt on the way
        keys = [] if i % 23 == 7 else (rng.choice(2500, 300, replace=False) + 40 * i) * 1031
        frames[i], stamps[i] = _frame(keys, rng), float(i // 2)  # equal stamps: ties by insertion
        index.add(i, frames[i], stamp=stamps[i])
        if len(frames) > 40:
            oldest = min(frames)
            index.remove(oldest)
            del frames[oldest], stamps[oldest]
        if i % 9 == 0:
            window = sorted(frames)[-int(rng.integers(1, 41)):]
            for k in (1, 5, 16, 60):
                result = index.select(k, keys=window)
                expected = _expected_for([frames[j] for j in window], k, result.voxel_size,
                                         [stamps[j] for j in window])
                assert_same_result(result, expected)
                checked += 1
    assert checked > 60
    everything = index.select(16)
    assert_same_result(everything, _expected_for([frames[j] for j in sorted(frames)], 16,
                                                 everything.voxel_size, [stamps[j] for j in sorted(frames)]))
    stateless = space_aware_sample([frames[j] for j in sorted(frames)], 16,
                                   timestamps=[stamps[j] for j in sorted(frames)], voxel_size=voxel_size)
    assert stateless.to_dict() == everything.to_dict()


def test_voxel_index_caches_packed_rows():
    rng = np.random.default_rng(15)
    index = VoxelIndex(voxel_size=0.04)
    for i in range(6):
        index.add(i, _frame(rng.integers(0, 5000, 200) * 7, rng), stamp=float(i))
    first = index.select(3)
    rows = {key: entry.words[2] for key, entry in index._entries.items()}
    index.add(6, _frame(rng.integers(0, 5000, 200) * 7, rng), stamp=6.0)
    assert 2 in index._entries[6].words  # precomputed at add time for the last query's factor
    second = index.select(3, keys=list(range(6)))
    assert second.to_dict() == first.to_dict()
    assert all(index._entries[key].words[2] is row for key, row in rows.items())  # reused, not rebuilt
    assert index.select(1, keys=[]).indices == []
