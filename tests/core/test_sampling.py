"""Space-aware / uniform sampling on hand-built scenes where the right answer is known."""

import numpy as np
import pytest

from ros2_spatial_mllm.geometry import depth_to_world_points, invert_extrinsics
from ros2_spatial_mllm.sampling import (
    FrameVoxels,
    VoxelIndex,
    candidate_indices,
    coarsen_keys,
    coarsening_factor,
    frame_voxels_from_depth,
    frame_voxels_from_prediction,
    greedy_max_coverage,
    pack_keys,
    pack_voxel_sets,
    reference_space_aware_sample,
    reference_voxel_size,
    space_aware_sample,
    uniform_sample,
    unpack_keys,
)
from ros2_spatial_mllm.sampling.synthetic import pinhole_intrinsics, room_scan, yaw_pose


# ------------------------------------------------------------------------------ uniform baseline
def test_uniform_sample_matches_linspace_and_clamps():
    assert uniform_sample(10, 4) == [0, 3, 6, 9]
    assert uniform_sample(300, 128) == np.linspace(0, 299, 128).astype(int).tolist()
    assert uniform_sample(5, 8) == [0, 1, 2, 3, 4]
    assert uniform_sample(0, 3) == []
    for n in range(1, 40):
        for k in range(1, n + 1):
            picks = uniform_sample(n, k)
            assert len(set(picks)) == k and picks == sorted(picks)
    with pytest.raises(ValueError, match="positive integer"):
        uniform_sample(10, 0)
    assert candidate_indices(1000)[-1] == 999 and len(candidate_indices(1000)) == 128


# ------------------------------------------------------------------------------ greedy on id sets
def test_duplicates_never_picked_before_new_coverage():
    a, b, c = [1, 2, 3, 4], [5, 6, 7], [8, 9]
    result = space_aware_sample([a, a, b, a, c, b], 3)
    assert result.indices == [0, 2, 4]
    assert result.gains == [4, 3, 2] and result.coverage == 1.0


def test_largest_gain_first_and_ties_to_earliest():
    sets = [[1, 2], [3, 4, 5], [6, 7, 8], [1, 2, 3, 4, 5, 6]]
    result = space_aware_sample(sets, 2)
    assert result.pick_order == [3, 2]  # 6 new voxels, then {7, 8} beats {} and {} (tie 0,1 lose)
    assert result.gains == [6, 2]
    tie = space_aware_sample([[1], [2], [3]], 1)
    assert tie.indices == [0]


def test_fill_by_temporal_spread_after_saturation():
    sets = [[1, 2, 3]] + [[] for _ in range(9)]
    result = space_aware_sample(sets, 3)
    # frame 0 covers everything; then farthest in time from {0}: 9; then 4 (tie 4/5 -> earliest)
    assert result.pick_order == [0, 9, 4] and result.indices == [0, 4, 9]
    assert result.gains == [3, 0, 0]
    empty = space_aware_sample([[] for _ in range(5)], 3)
    assert empty.indices == [0, 2, 4] and empty.coverage == 0.0


def test_exactly_k_whenever_enough_candidates():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 40))
        sets = [rng.choice(50, size=int(rng.integers(0, 6)), replace=False) for _ in range(n)]
        for k in (1, 3, 16, 64):
            result = space_aware_sample(sets, k)
            assert len(result.indices) == min(k, n) == len(set(result.indices))
            assert result.indices == sorted(result.indices)
            assert all(g1 >= g2 for g1, g2 in zip(result.gains, result.gains[1:]))


def test_timestamps_order_result_and_fill():
    sets = [[1], [1], [1], [1]]
    times = [0.0, 10.0, 1.0, 2.0]  # frame 1 is the latest
    result = space_aware_sample(sets, 2, timestamps=times)
    assert result.pick_order == [0, 1]  # gain at the earliest, then farthest in time
    assert result.indices == [0, 1]
    result = space_aware_sample(sets, 3, timestamps=times)
    assert result.indices == [0, 3, 1]  # sorted by time: 0.0, 2.0, 10.0


def test_greedy_bitset_matches_bruteforce_sets():
    rng = np.random.default_rng(1)
    sets = [set(rng.choice(300, size=int(rng.integers(1, 60)), replace=False).tolist()) for _ in range(30)]
    result = space_aware_sample([sorted(s) for s in sets], 10)
    covered, expected_gains = set(), []
    for pick in result.pick_order:
        expected_gains.append(len(sets[pick] - covered))
        assert expected_gains[-1] == max(len(s - covered) for i, s in enumerate(sets)
                                         if i not in result.pick_order[:len(expected_gains) - 1])
        covered |= sets[pick]
    assert expected_gains == result.gains
    assert result.coverage == pytest.approx(len(covered) / len(set().union(*sets)))


def test_pack_voxel_sets_bits():
    bits = pack_voxel_sets([np.array([0, 63, 64]), np.array([], np.int64)], 65)
    assert bits.shape == (2, 2) and bits.dtype == np.uint64
    assert bits[0, 0] == (1 | (1 << 63)) and bits[0, 1] == 1 and not bits[1].any()
    assert greedy_max_coverage(np.zeros((0, 1), np.uint64), 4).indices == []


# ------------------------------------------------------------------------------ voxel keys
def test_keys_roundtrip_and_exact_coarsening():
    rng = np.random.default_rng(2)
    points = rng.uniform(-50, 50, size=(5000, 3))
    base = 0.02
    cells = np.floor(points / base).astype(np.int64)
    np.testing.assert_array_equal(unpack_keys(pack_keys(cells)), cells)
    for factor in (2, 3, 6, 8):
        coarse = coarsen_keys(pack_keys(cells), factor)
        direct = np.unique(pack_keys(np.floor(points / (base * factor)).astype(np.int64)))
        np.testing.assert_array_equal(coarse, direct)


def test_frame_voxels_filters_and_caches():
    points = np.array([[[0.01, 0.01, 0.01], [1.0, 1.0, 1.0]], [[np.nan, 0, 0], [2.05, 0.5, 0.5]]])
    conf = np.array([[5.0, 0.05], [9.0, 3.0]])
    voxels = FrameVoxels.from_points(points, conf, base_voxel=0.1)
    # median of conf = 4.0 -> keeps conf 5 and 9 (9 is NaN -> dropped): one point left
    assert voxels.num_points == 1 and voxels.keys.size == 1
    np.testing.assert_allclose(voxels.bbox_min, [0.01, 0.01, 0.01])
    everything = FrameVoxels.from_points(points, None, base_voxel=0.1)
    assert everything.num_points == 3
    assert everything.keys_at(4) is everything.keys_at(4)  # cached
    assert FrameVoxels.from_points(points, np.zeros((2, 2)), base_voxel=0.1).empty
    with pytest.raises(ValueError, match="base_voxel"):
        FrameVoxels.from_points(points, conf, base_voxel=0)


def test_voxel_size_rules():
    assert reference_voxel_size([0, 0, 0], [5, 4, 2]) == pytest.approx(0.1)
    assert reference_voxel_size([0, 0, 0], [5, 4, 0]) == pytest.approx(0.2)  # planar: skip zero side
    assert reference_voxel_size([1, 1, 1], [1, 1, 1]) is None
    assert coarsening_factor(0.16, 0.02) == 8
    assert coarsening_factor(0.125, 0.02) == 6
    assert coarsening_factor(0.01, 0.02) == 1 and coarsening_factor(None, 0.02) == 1


# ------------------------------------------------------------------------------ scenes
def _lattice_scene(num_frames=24, seed=3):
    """Frames seeing random boxes of a voxel-centred lattice; bbox min side = 20 voxels of 1/8."""
    rng = np.random.default_rng(seed)
    voxel = 0.125
    grid = np.stack(np.meshgrid(np.arange(40), np.arange(30), np.arange(21), indexing="ij"), -1)
    points, conf = [], []
    for _ in range(num_frames):
        low = rng.integers(0, [30, 20, 12])
        size = rng.integers(4, 11, size=3)
        inside = ((grid >= low) & (grid < low + size)).all(-1)
        cells = grid[inside]
        cells = cells[rng.permutation(len(cells))[:400]]
        frame = np.full((20, 20, 3), np.nan)
        frame.reshape(-1, 3)[: len(cells)] = (cells + 0.5) * voxel
        points.append(frame)
        conf.append(rng.uniform(0.0, 3.0, size=(20, 20)))
    points, conf = np.stack(points), np.stack(conf)
    # corners of the lattice in frame 0 (high conf) so the bbox is exactly the lattice's
    points[0, 0, :2] = [(np.zeros(3) + 0.5) * voxel, (np.array([39, 29, 20]) + 0.5) * voxel]
    conf[0, 0, :2] = 10.0
    return points, conf, voxel


def test_incremental_equals_reference_when_grids_align():
    points, conf, voxel = _lattice_scene()
    reference = reference_space_aware_sample(points, conf, 6)
    assert reference.voxel_size == pytest.approx(voxel)  # z side = 20 lattice steps
    threshold = float(np.percentile(conf, 50))
    voxels = [FrameVoxels.from_points(p, c, base_voxel=voxel / 8, conf_threshold=threshold)
              for p, c in zip(points, conf)]
    incremental = space_aware_sample(voxels, 6)
    assert incremental.voxel_size == pytest.approx(reference.voxel_size)
    assert incremental.indices == reference.indices
    assert incremental.gains == reference.gains
    assert incremental.coverage == pytest.approx(reference.coverage)


def test_walls_each_seen_once_are_all_picked():
    # yaw 0/90/180/270 with a 60° lens see four different walls; extra copies of wall 0.
    yaws = np.radians([0, 0, 90, 0, 180, 0, 270, 0])
    depth, k, poses, _ = room_scan(len(yaws), yaws_rad=yaws)
    voxels = [frame_voxels_from_depth(d, k, world_from_camera=p) for d, p in zip(depth, poses)]
    result = space_aware_sample(voxels, 4)
    assert result.indices == [0, 2, 4, 6]
    assert result.coverage == pytest.approx(1.0)
    more = space_aware_sample(voxels, 6)
    assert len(more.indices) == 6 and more.gains[4:] == [0, 0]


def test_lingering_camera_space_aware_beats_uniform():
    # robot stares at one wall for 48 frames, then turns once in 16 frames
    yaws = np.concatenate([np.zeros(48), np.linspace(0, 2 * np.pi, 16, endpoint=False)])
    depth, k, poses, _ = room_scan(len(yaws), yaws_rad=yaws)
    points = depth_to_world_points(depth, invert_extrinsics(poses)[:, :3], np.repeat(k[None], len(yaws), 0))
    conf = np.ones(depth.shape, np.float32)
    reference = reference_space_aware_sample(points, conf, 8)
    voxels = [frame_voxels_from_depth(d, k, world_from_camera=p) for d, p in zip(depth, poses)]
    incremental = space_aware_sample(voxels, 8)
    sets = [v.keys_at(coarsening_factor(incremental.voxel_size, v.base_voxel)) for v in voxels]
    union = np.unique(np.concatenate(sets))
    uniform_cov = np.unique(np.concatenate([sets[i] for i in uniform_sample(64, 8)])).size / union.size
    assert incremental.coverage > uniform_cov + 0.2
    assert abs(incremental.coverage - reference.coverage) < 0.05
    assert sum(i < 48 for i in incremental.indices) <= 2
    assert space_aware_sample(voxels, 8).indices == incremental.indices  # deterministic


def test_sensor_depth_pinhole_wall_geometry():
    # camera at the origin facing +x sees a wall at x = 2 m; depth in uint16 millimetres
    k = pinhole_intrinsics(40, 30, 60.0)
    pose = yaw_pose([0, 0, 0], 0.0)
    depth_mm = np.full((30, 40), 2000, np.uint16)
    depth_mm[0, 0] = 0  # invalid pixel
    voxels = frame_voxels_from_depth(depth_mm, k, world_from_camera=pose, depth_scale=0.001, base_voxel=0.05)
    assert voxels.num_points == 30 * 40 - 1
    np.testing.assert_allclose([voxels.bbox_min[0], voxels.bbox_max[0]], [2.0, 2.0], atol=1e-5)
    half_width = 2.0 * np.tan(np.radians(30))  # 60° horizontal field of view
    assert voxels.bbox_max[1] == pytest.approx(half_width, abs=0.1) and voxels.bbox_min[1] < -1.0
    same = frame_voxels_from_depth(depth_mm, k, camera_from_world=invert_extrinsics(pose)[:3],
                                   depth_scale=0.001, base_voxel=0.05)
    np.testing.assert_array_equal(voxels.keys, same.keys)
    far = frame_voxels_from_depth(depth_mm, k, world_from_camera=pose, depth_scale=0.001, max_depth=1.5)
    assert far.empty
    with pytest.raises(ValueError, match="exactly one"):
        frame_voxels_from_depth(depth_mm, k)
    strided = frame_voxels_from_depth(depth_mm, k, world_from_camera=pose, depth_scale=0.001,
                                      base_voxel=0.05, pixel_stride=2)
    assert strided.num_points == 15 * 20 - 1
    assert strided.bbox_min[0] == pytest.approx(2.0, abs=1e-5)


def test_prediction_source_uses_global_percentile_and_reference_voxel():
    yaws = np.radians(np.arange(0, 360, 30))
    depth, k, poses, _ = room_scan(len(yaws), yaws_rad=yaws)
    extrinsics = invert_extrinsics(poses)[:, :3]
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.5, 5.0, size=depth.shape).astype(np.float32)
    prediction = dict(depth=depth, depth_conf=conf, extrinsics=extrinsics,
                      intrinsics=np.repeat(k[None], len(yaws), 0))
    voxels = frame_voxels_from_prediction(prediction)
    threshold = np.percentile(conf, 50)
    assert sum(v.num_points for v in voxels) == int((conf >= threshold).sum())
    points = depth_to_world_points(depth, extrinsics, prediction["intrinsics"])
    reference = reference_space_aware_sample(points, conf, 5)
    result = space_aware_sample(voxels, 5)
    assert result.voxel_size == pytest.approx(reference.voxel_size, rel=1e-5)
    assert abs(result.coverage - reference.coverage) < 0.05


# ------------------------------------------------------------------------------ VoxelIndex
def test_voxel_index_incremental_add_remove_select():
    yaws = np.radians(np.arange(0, 360, 20))
    depth, k, poses, _ = room_scan(len(yaws), yaws_rad=yaws)
    voxels = [frame_voxels_from_depth(d, k, world_from_camera=p) for d, p in zip(depth, poses)]
    index = VoxelIndex()
    for i, v in enumerate(voxels):
        index.add(f"f{i}", v, stamp=100.0 + i)
    window = [f"f{i}" for i in range(4, 16)]
    first = index.select(5, keys=window)
    assert first.indices == space_aware_sample(voxels[4:16], 5).indices
    assert first.indices == index.select(5, keys=window).indices  # cached path, same answer
    for i in range(0, 10):
        index.remove(f"f{i}")
    assert len(index) == 8 and index.keys()[0] == "f10"
    assert index.select(3).indices == space_aware_sample(voxels[10:], 3).indices
    with pytest.raises(KeyError):
        index.select(3, keys=["f0"])
    with pytest.raises(ValueError, match="base_voxel"):
        index.add("other", FrameVoxels.from_points(np.zeros((1, 3)), base_voxel=0.5))
    frozen = VoxelIndex(voxel_size=0.5)
    for i, v in enumerate(voxels):
        frozen.add(i, v)
    assert frozen.select(4).voxel_size == pytest.approx(0.48)  # 24 x 0.02, nearest ladder step


def test_determinism_repeated_runs():
    depth, k, poses, _ = room_scan(40)
    voxels = [frame_voxels_from_depth(d, k, world_from_camera=p) for d, p in zip(depth, poses)]
    runs = [space_aware_sample(voxels, 16).to_dict() for _ in range(3)]
    rebuilt = [frame_voxels_from_depth(d, k, world_from_camera=p) for d, p in zip(depth, poses)]
    runs.append(space_aware_sample(rebuilt, 16).to_dict())
    assert all(run == runs[0] for run in runs)
    assert len(runs[0]["indices"]) == 16


def test_window_candidates_are_the_truncated_linspace_of_training_and_the_reference():
    """Past 128 buffered frames select_frames pre-selects the same candidates as
    candidate_indices (training's space-aware sets): a frame only rounding would reach, however
    much it covers, is never picked."""
    from types import SimpleNamespace

    from ros2_spatial_mllm.sampling import candidate_indices
    from ros2_spatial_mllm.sampling.window import select_frames

    n = 300
    frames = [SimpleNamespace(stamp_ns=i * 10**8) for i in range(n)]
    truncated = set(candidate_indices(n, 128))
    rounded_only = set(np.linspace(0, n - 1, 128).round().astype(int).tolist()) - truncated
    assert rounded_only
    voxels = [np.arange(1000 * i, 1000 * i + (500 if i in rounded_only else 1)).reshape(-1, 1).repeat(3, 1)
              for i in range(n)]
    chosen, _, used = select_frames(frames, 4, "space_aware", voxels)
    assert used == "space_aware" and set(chosen) <= truncated
