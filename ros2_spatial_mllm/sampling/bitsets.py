"""Voxel sets as bit rows of uint64 words, written word by word (no dense frame x voxel table).

Voxel id ``j`` is bit ``j & 63`` of word ``j >> 6``. A set of ids becomes *sparse words*: the
indices of its non-zero words (increasing) and their uint64 values. Building them is one sort
(skipped when the ids are already sorted, as they are wherever ids come from sorted keys), a
neighbour compare and ``np.bitwise_or.reduceat`` over the runs of equal word index (OR, so
duplicate ids are harmless). ``pack_voxel_sets`` does that on batches of frames (~32k ids each,
so temporaries stay small) and scatters each batch's words into the bit matrix ``[N, W]``;
``pack_used_words`` keeps only the word columns in use, so ids may come from a huge sparse space
(e.g. a linearised voxel grid) without a dense id table.

``VoxelIndex`` keeps each frame's sparse words (in its vocabulary's id space) and only stacks
them at query time (``stack_sparse_rows``), dropping word columns no queried frame uses; the
greedy result depends on popcounts of row intersections only, so the word layout never changes
a selection.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

from ros2_spatial_mllm.sampling.voxels import sorted_unique

__all__ = ["SparseWords", "sparse_words", "pack_voxel_sets", "pack_used_words", "stack_sparse_rows"]

SparseWords = Tuple[np.ndarray, np.ndarray]  # (word indices int64 [M] increasing, bits uint64 [M])

_ONE = np.uint64(1)
_CHUNK = 1 << 15  # ids packed per batch (256 KiB int64 temporaries; fresh multi-MB ones page-fault)


def sparse_words(bit_positions: np.ndarray) -> SparseWords:
    """Non-zero words of a bit set.

    Args:
        bit_positions: int64 [T] bit positions >= 0, any order, duplicates allowed.
    Returns:
        (word indices int64 [M] strictly increasing, word values uint64 [M], all non-zero).
    """
    positions = np.array(bit_positions, dtype=np.int64).reshape(-1)  # own copy: overwritten below
    if positions.size and positions.min() < 0:
        raise ValueError(f"bit positions must be >= 0, got {positions.min()}")
    return _sparse_words_inplace(positions)


def _sparse_words_inplace(positions: np.ndarray) -> SparseWords:
    """``sparse_words`` on a caller-owned int64 [T] array that it overwrites (one extra [T]
    buffer only: large fresh temporaries cost page faults on a busy machine)."""
    if positions.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    if positions.size > 1 and not (positions[1:] >= positions[:-1]).all():
        positions.sort()
    bits = np.bitwise_and(positions, 63).view(np.uint64)  # [T] bit within its word
    np.left_shift(_ONE, bits, out=bits)  # [T] the word value of each single bit
    np.right_shift(positions, 6, out=positions)  # [T] word index, non-decreasing
    run_start = np.empty(positions.size, dtype=bool)  # [T] first position of each word
    run_start[0] = True
    np.not_equal(positions[1:], positions[:-1], out=run_start[1:])
    starts = np.flatnonzero(run_start)  # [M]
    return positions[starts], np.bitwise_or.reduceat(bits, starts)


def frame_batches(arrays: Sequence[np.ndarray]) -> Iterator[Tuple[int, int, np.ndarray]]:
    """(first frame, stop frame, their values concatenated [T]) for consecutive frames holding
    about ``_CHUNK`` values together (never empty; a bigger frame is a batch of its own). Small
    batches keep temporaries cache-resident: fresh multi-MB arrays cost page faults."""
    sizes = [a.size for a in arrays]
    n, row = len(arrays), 0
    while row < n:
        stop, total = row, 0
        while stop < n and (total == 0 or total + sizes[stop] <= _CHUNK):
            total += sizes[stop]
            stop += 1
        if total:
            yield row, stop, np.concatenate(arrays[row:stop])
        row = stop


def _batch_words(ids_per_frame: Sequence[np.ndarray], num_ids: int, words: int,
                 to_ids: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Iterator[SparseWords]:
    """Sparse words of the flat ``[N * words]`` matrix (row r's bits start at ``r * 64 * words``),
    one batch of frames at a time; ``to_ids`` maps a batch's values [T] to ids [T] (in place ok)."""
    arrays = [np.asarray(ids, dtype=np.int64).reshape(-1) for ids in ids_per_frame]
    sizes = [a.size for a in arrays]
    for row, stop, positions in frame_batches(arrays):  # [T] ids, then flat bit positions
        if to_ids is not None:
            positions = to_ids(positions)
        low, high = positions.min(), positions.max()
        if low < 0 or high >= num_ids:
            raise ValueError(f"voxel ids must lie in [0, {num_ids}), got [{low}, {high}]")
        start = 0
        for frame in range(row, stop):  # per-frame offsets keep sorted rows sorted
            end = start + sizes[frame]
            if frame and end > start:
                positions[start:end] += frame * words * 64
            start = end
        yield _sparse_words_inplace(positions)


def pack_voxel_sets(ids_per_frame: Sequence[np.ndarray], num_voxels: int) -> np.ndarray:
    """Bit matrix of voxel sets.

    Args:
        ids_per_frame: N arrays of voxel ids in ``[0, num_voxels)`` (duplicates allowed; sorted
            ids per frame, e.g. from ``searchsorted`` on sorted keys, skip the sort).
        num_voxels: size of the id space U.
    Returns:
        uint64 ``[N, ceil(U / 64)]`` (at least one word per row), bit ``j`` = voxel ``j``.
    Raises:
        ValueError: an id outside ``[0, num_voxels)``.
    """
    n = len(ids_per_frame)
    words = max(1, -(-int(num_voxels) // 64))
    packed = np.zeros(n * words, dtype=np.uint64)  # [N * W]
    for word_index, word_bits in _batch_words(ids_per_frame, num_voxels, words):
        packed[word_index] = word_bits
    return packed.reshape(n, words)


def pack_used_words(ids_per_frame: Sequence[np.ndarray], num_ids: int,
                    to_ids: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> np.ndarray:
    """Bit matrix of voxel sets in a sparse id space, keeping only the word columns in use.

    Args:
        ids_per_frame: N arrays of ids in ``[0, num_ids)`` (duplicates allowed, sorted is faster);
            ``N * num_ids`` may be far larger than memory, only ``N * num_ids < 2**62`` is needed.
        to_ids: optional map applied to each batch of concatenated frame values [T] -> ids [T]
            (may work in place): the arrays then hold e.g. keys, converted batch by batch.
    Returns:
        uint64 ``[N, W']``, ``W'`` = words some frame uses (at least 1), in word order: popcounts
        of any row combination equal those of ``pack_voxel_sets(ids_per_frame, num_ids)``.
    """
    n = len(ids_per_frame)
    words = max(1, -(-int(num_ids) // 64))
    if n * words * 64 >= 1 << 62:
        raise ValueError(f"id space too large for {n} frames: {num_ids}")
    parts = list(_batch_words(ids_per_frame, num_ids, words, to_ids))
    if not parts:
        return np.zeros((n, 1), dtype=np.uint64)
    word_index = np.concatenate([p[0] for p in parts])  # [M] flat word index, r * W + word
    word_bits = np.concatenate([p[1] for p in parts])  # [M]
    row = word_index // words  # [M]
    word = word_index - row * words  # [M]
    used = sorted_unique(word)  # [W']
    packed = np.zeros(n * used.size, dtype=np.uint64)  # [N * W']
    packed[row * used.size + np.searchsorted(used, word)] = word_bits
    return packed.reshape(n, used.size)


def stack_sparse_rows(rows: Sequence[SparseWords], width: int) -> np.ndarray:
    """Bit matrix from per-frame sparse words, keeping only the word columns some row uses.

    Args:
        rows: N pairs (word indices int64 [M_i] unique, bits uint64 [M_i]) in one id space.
        width: number of words of that id space (every word index is < width).
    Returns:
        uint64 ``[N, W']`` with ``W'`` = number of word columns used by any row (at least 1);
        column order follows the word indices, so popcounts of any row combination are those
        of the full-width matrix.
    """
    n = len(rows)
    lengths = np.fromiter((r[0].size for r in rows), dtype=np.int64, count=n)  # [N]
    if not lengths.sum():
        return np.zeros((n, 1), dtype=np.uint64)
    word_index = np.concatenate([r[0] for r in rows])  # [T]
    word_bits = np.concatenate([r[1] for r in rows])  # [T]
    used = np.zeros(max(int(width), 1), dtype=bool)  # [width]
    used[word_index] = True
    column = np.cumsum(used, dtype=np.int64) - 1  # [width] word index -> compact column
    columns = int(column[-1]) + 1
    packed = np.zeros(n * columns, dtype=np.uint64)  # [N * W']
    packed[np.repeat(np.arange(n, dtype=np.int64) * columns, lengths) + column[word_index]] = word_bits
    return packed.reshape(n, columns)
