"""Renderer: depth/instance/pose consistency on a small image."""
import time

import numpy as np

from training.data.render import SceneRenderer, intrinsics_for
from training.data.scenes import make_scene


def test_render_outputs_are_consistent():
    scene = make_scene(7, num_frames=6)
    video = SceneRenderer(scene).render_video(96, 72)
    n = len(scene.world_from_camera)
    assert video.rgb.shape == (n, 72, 96, 3) and video.rgb.dtype == np.uint8
    assert video.depth.shape == (n, 72, 96) and video.depth.dtype == np.float32
    assert (video.depth > 0).all()                         # closed room: every ray hits something
    assert np.allclose(video.camera_from_world @ video.world_from_camera, np.eye(4), atol=1e-9)
    ids = set(np.unique(video.instance).tolist()) - {0}
    assert ids and ids <= {o.instance_id for o in scene.objects}
    # an object pixel unprojects onto that object's box surface
    K_inv = np.linalg.inv(video.intrinsics)
    checked = 0
    for f in range(n):
        vs, us = np.nonzero(video.instance[f] > 0)
        for v, u in list(zip(vs, us))[::37][:5]:
            ray = K_inv @ np.array([u + 0.5, v + 0.5, 1.0])
            world = video.world_from_camera[f, :3, :3] @ (ray * video.depth[f, v, u]) + video.world_from_camera[f, :3, 3]
            box = scene.object_by_id(int(video.instance[f, v, u])).to_box()
            assert box.distance_to(world[None])[0] < 0.01
            checked += 1
    assert checked > 0


def test_deterministic_and_fast_enough():
    scene = make_scene(2, num_frames=4)
    a = SceneRenderer(scene).render_video(64, 48)
    b = SceneRenderer(scene).render_video(64, 48)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.instance, b.instance)
    renderer = SceneRenderer(scene)
    K = intrinsics_for(640, 480)
    start = time.perf_counter()
    renderer.render(scene.world_from_camera[0], K, 640, 480)
    assert time.perf_counter() - start < 10.0              # "seconds per scene", on a loaded CI machine
