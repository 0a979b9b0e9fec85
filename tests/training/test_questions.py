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
