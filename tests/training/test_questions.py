"""Question generators: box tasks agree with the conformance recompute; filters; MultiSPA maths."""
import random

import numpy as np
import pytest

from training.data.conformance import recompute
from training.data.questions_multispa import FramePairContext, gen_pair
from training.data.questions_vsi import VSI_TASKS, generate_vsibench, turn_label
from training.data.render import SceneRenderer
from training.data.scenes import make_scene
from training.data.spatial_gt import direction_label
from training.data.visibility import first_visible_frames


@pytest.fixture(scope="module")
def rendered():
    scene = make_scene(3, num_frames=24)
    video = SceneRenderer(scene).render_video(160, 120)
    return scene, video


def test_all_vsibench_tasks_and_self_conformance(rendered):
    scene, video = rendered
    meta = scene.to_meta()
    vis = first_visible_frames(video.instance)
    grouped = generate_vsibench(meta, random.Random(0), visibility=vis)
    assert set(grouped) == set(VSI_TASKS)
    checked = 0
    for task, items in grouped.items():
        if task in ("route_planning", "obj_appearance_order"):
            continue
        for qa in items:
            rec = {"problem": qa.question, "options": qa.options, "original_question_type": task}
            ours, _ = recompute(rec, meta)
            assert ours == qa.answer, (task, qa.question)
            checked += 1
    assert checked > 30


def test_appearance_order_matches_masks(rendered):
    scene, video = rendered
    vis = first_visible_frames(video.instance)
    grouped = generate_vsibench(scene.to_meta(), random.Random(1), visibility=vis, tasks=["obj_appearance_order"])
    for qa in grouped["obj_appearance_order"]:
        order = qa.ground_truth.split(", ")
        firsts = [min(vis[o.instance_id] for o in scene.objects if o.category == c and o.instance_id in vis) for c in order]
        assert firsts == sorted(firsts) and len(set(firsts)) == 4
        letter = qa.answer
        assert any(o.startswith(f"{letter}. ") and o[3:] == qa.ground_truth for o in qa.options)


def test_direction_labels_and_turns():
    assert direction_label(10, "hard") == "front-left" and direction_label(100, "hard") == "back-left"
    assert direction_label(200, "hard") == "back-right" and direction_label(300, "hard") == "front-right"
    assert direction_label(134, "medium") == "left" and direction_label(135, "medium") == "back"
    assert direction_label(225, "medium") == "right" and direction_label(179, "easy") == "left"
    assert turn_label(np.array([1.0, 0]), np.array([0, 1.0]))[0] == "Turn Left"
    assert turn_label(np.array([1.0, 0]), np.array([0, -1.0]))[0] == "Turn Right"
    assert turn_label(np.array([1.0, 0]), np.array([-1.0, 0.01]))[0] == "Turn Back"
    assert turn_label(np.array([1.0, 0]), np.array([1.0, 0.1]))[0] is None        # straight on: filtered


def test_multispa_camera_answers(rendered):
    scene, video = rendered
    poses = video.world_from_camera.copy()
    # frame 1 = frame 0 moved 1 m forward along its optical axis and turned 30 deg left
    poses[1] = poses[0].copy()
    poses[1, :3, 3] = poses[0, :3, 3] + poses[0, :3, 2] * 1.0
    yaw = np.radians(30)
    turn = np.array([[np.cos(yaw), 0, -np.sin(yaw)], [0, 1, 0], [np.sin(yaw), 0, np.cos(yaw)]])   # about camera y
    poses[1, :3, :3] = poses[0, :3, :3] @ turn
    ctx = FramePairContext(video.depth, video.instance, video.intrinsics, poses, scene.to_meta(), random.Random(0))
    qas = {q.task_type: q for q in gen_pair(ctx, 0, 1)}
    assert qas["multispa_camera_direction"].ground_truth == "forward"
    assert float(qas["multispa_camera_distance"].answer) == pytest.approx(1.0, abs=0.01)
    assert qas["multispa_camera_displacement"].answer == "(0.00, 0.00, 1.00)"
    assert float(qas["multispa_camera_yaw"].answer) == pytest.approx(30, abs=1)


def test_correspondence_points_back(rendered):
    scene, video = rendered
    ctx = FramePairContext(video.depth, video.instance, video.intrinsics, video.world_from_camera, scene.to_meta(), random.Random(5))
    found = 0
    for i in range(0, 20, 2):
        for qa in gen_pair(ctx, i, i + 2):
            if qa.task_type == "multispa_correspondence":
                x2, y2 = (int(v) for v in qa.answer.strip("()").split(", "))
                u, v = int(x2 / 1000 * ctx.w), int(y2 / 1000 * ctx.h)
                back = ctx.project(i + 2, i, min(u, ctx.w - 1), min(v, ctx.h - 1))
                assert back is not None
                x1, y1 = qa.extra["point"]
                assert abs(back[0] / ctx.w * 1000 - x1) < 25 and abs(back[1] / ctx.h * 1000 - y1) < 25
                found += 1
    assert found >= 3


def _yaw_rotation(yaw: float, digits: int | None = None) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return rot if digits is None else np.round(rot, digits)


def test_box_distance_with_rounded_axes_is_defined_and_exact():
    """Annotations store normalizedAxes rounded (not exactly orthonormal): the pruned sample set
    used to come out empty ("zero-size array to reduction operation") for this pair."""
    from training.data.meta_info import ObjectBox
    from training.data.spatial_gt import _min_pair_distance, box_distance, box_grid_points

    a = ObjectBox("a", np.array([0.31075157, 0.40895671, 1.84969237]), np.array([0.09081996, 0.50997337, 0.74921553]),
                  np.array([[0.439, -0.899, 0.0], [0.899, 0.439, 0.0], [0.0, 0.0, 1.0]]))
    b = ObjectBox("b", np.array([-0.44773307, -1.74841801, 0.90352346]), np.array([0.10601253, 0.40718987, 0.87605218]),
                  np.array([[-0.986, -0.165, 0.0], [0.165, -0.986, 0.0], [0.0, 0.0, 1.0]]))
    brute = _min_pair_distance(box_grid_points(a), box_grid_points(b))   # all sample pairs
    assert box_distance(a, b) == pytest.approx(brute, abs=1e-9) and box_distance(b, a) == pytest.approx(brute, abs=1e-9)
    rng = np.random.default_rng(7)
    for i in range(60):   # rounded frames, exact frames, thin and zero-extent boxes
        digits = (2, 3, None)[i % 3]
        boxes = [ObjectBox(n, rng.uniform(-1, 1, 3), rng.uniform(0.0, 0.6, 3) * (rng.random(3) > 0.2),
                           _yaw_rotation(rng.uniform(0, 2 * np.pi), digits)) for n in "ab"]
        brute = _min_pair_distance(box_grid_points(boxes[0]), box_grid_points(boxes[1]))
        assert box_distance(*boxes) == pytest.approx(brute, abs=1e-9), i
    assert _min_pair_distance(np.zeros((0, 3)), np.ones((4, 3))) == np.inf   # empty set: inf, not a crash


def test_train_scene_seed_5000000_ground_truth_is_defined():
    """Regression: the train-split scene with seed 5000000 (reported to abort generate_dataset)."""
    from training.data.spatial_gt import box_distance

    meta = make_scene(5_000_000, num_frames=4).to_meta()
    boxes = [b for group in meta.objects.values() for b in group]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            d = box_distance(a, b)
            assert np.isfinite(d) and d >= 0.0
    questions = generate_vsibench(meta, random.Random(5_000_000))
    assert questions["object_abs_distance"] and questions["object_rel_distance"]
