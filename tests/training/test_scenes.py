"""Procedural scenes: determinism, valid placement, meta_info export."""
import itertools

import numpy as np
import pytest

from training.data.meta_info import load_meta_info, save_meta_info
from training.data.scenes import _rects_overlap, make_scene


def test_same_seed_same_scene_different_seed_different_scene():
    a, b, c = make_scene(11, num_frames=8), make_scene(11, num_frames=8), make_scene(12, num_frames=8)
    assert [o.category for o in a.objects] == [o.category for o in b.objects]
    assert np.array_equal(a.world_from_camera, b.world_from_camera)
    assert np.array_equal(a.room.polygon, b.room.polygon)
    assert not np.array_equal(a.world_from_camera, c.world_from_camera)


def test_objects_inside_room_and_not_overlapping():
    shapes = set()
    for seed in range(6):
        scene = make_scene(seed, num_frames=8)
        shapes.add(len(scene.room.rects))
        assert len(scene.objects) >= 4
        for obj in scene.objects:
            assert scene.room.contains(obj.footprint()).all()
            assert 0.0 <= obj.z_range()[0] and obj.z_range()[1] <= scene.room.height
        for a, b in itertools.combinations(scene.objects, 2):
            (a0, a1), (b0, b1) = a.z_range(), b.z_range()
            if a0 < b1 - 0.01 and b0 < a1 - 0.01:
                assert not _rects_overlap(a.footprint(), b.footprint(), 0.0), (seed, a.category, b.category)
        # the camera path stays inside the room, away from the walls
        pos = scene.world_from_camera[:, :2, 3]
        assert scene.room.contains(pos, margin=0.5).all()
    assert shapes == {1, 2}                      # rectangular and L-shaped rooms both occur


def test_poses_are_rigid_opencv():
    scene = make_scene(3, num_frames=16)
    for pose in scene.world_from_camera:
        rot = pose[:3, :3]
        assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        assert np.isclose(np.linalg.det(rot), 1.0)
        assert rot[2, 2] < 0                      # optical axis (z) points slightly down (world z up)
        assert rot[2, 1] < 0                      # image 'down' (y) has a downward world component


def test_l_shaped_area_and_meta_roundtrip(tmp_path):
    scene = next(make_scene(s, num_frames=4) for s in range(50) if len(make_scene(s, num_frames=4).room.rects) == 2)
    rect_area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in scene.room.rects)
    assert np.isclose(scene.room.area, rect_area)
    meta = scene.to_meta()
    save_meta_info([meta], tmp_path / "m.json")
    back = load_meta_info(tmp_path / "m.json")[scene.name]
    assert back.object_counts == meta.object_counts
    assert np.isclose(back.room_size, scene.room.area)
    first = scene.objects[0]
    box = back.boxes(first.category)[0]
    assert np.allclose(box.corners(), first.to_box().corners())


def test_dwell_walk_stops_in_the_same_room_and_steady_is_unchanged():
    from training.data.scenes import dwell_progress

    steady, dwell = make_scene(7, num_frames=32), make_scene(7, num_frames=32, pace="dwell")
    assert np.array_equal(steady.world_from_camera, make_scene(7, num_frames=32, pace="steady").world_from_camera)
    assert [o.category for o in steady.objects] == [o.category for o in dwell.objects]   # same room, same draws
    assert np.array_equal(dwell.world_from_camera, make_scene(7, num_frames=32, pace="dwell").world_from_camera)
    step = np.linalg.norm(np.diff(dwell.world_from_camera[:, :2, 3], axis=0), axis=1)
    steady_step = np.linalg.norm(np.diff(steady.world_from_camera[:, :2, 3], axis=0), axis=1)
    # the camera lingers (steps a tenth of its walk) for several frames and hurries elsewhere
    assert (step < 0.3 * np.median(steady_step)).sum() >= 4 and step.max() > 1.2 * steady_step.max()
    assert dwell.room.contains(dwell.world_from_camera[:, :2, 3], margin=0.5).all()
    progress = dwell_progress(32, 100.0, np.random.default_rng(0))
    assert progress[0] == 0.0 and np.all(np.diff(progress) > 0) and progress[-1] < 100.0
    with pytest.raises(ValueError, match="pace must be one of"):
        make_scene(7, num_frames=8, pace="run")
