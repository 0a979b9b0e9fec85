"""Renderer output pinned against the reference implementation (before the vectorised rewrite).

The values below were recorded on 2026-11-21 with the previous per-pixel implementation of
training/data/render.py (Embree hits -> per-pixel gathers -> shading), rendering 3 frames at
80x60 of procedural scenes 3 (planks floor), 7 (checker floor) and 5 (plain floor), all four
object textures, plus one camera backed out of the room (the miss path). The rewrite reproduced
them bit for bit on the recording machine; the tolerances only leave room for float noise from a
different CPU / SIMD path (a pixel off by one moves a channel mean by 1/4800), while any change to
shading, textures, depth or masks moves these figures by far more.
"""
import numpy as np
import pytest

from training.data.render import SceneRenderer, intrinsics_for
from training.data.scenes import make_scene

W, H, FRAMES = 80, 60, 3

# per scene: per-frame RGB channel mean / std / fixed random-weight projection (0..255),
# z-depth mean / max (m), and per-frame pixel counts per instance id (0 = room structure / miss)
REFERENCE = {
    3: {
        'rgb_mean': [[82.1181, 87.1917, 106.6423], [79.4746, 85.7429, 101.5606], [90.85, 91.84, 114.51]],
        'rgb_std': [[45.7207, 19.5651, 37.7873], [43.4554, 17.5022, 36.4167], [45.904, 22.6134, 27.3608]],
        'rgb_proj': [[82.0889, 87.2903, 106.9735], [79.3929, 85.7292, 101.6409], [90.7721, 91.9664, 114.5498]],
        'depth_mean': [2.794606, 3.128442, 2.710791],
        'depth_max': [3.844825, 5.270896, 4.179445],
        'instance_px': {0: [3668, 3548, 4099], 2: [0, 0, 290], 4: [927, 898, 0], 5: [0, 0, 77], 6: [0, 46, 0], 7: [0, 173, 334], 10: [205, 104, 0], 11: [0, 31, 0]},
    },
    7: {
        'rgb_mean': [[87.7365, 100.7996, 102.3906], [79.2248, 106.434, 87.1431], [84.3594, 112.5675, 97.2827]],
        'rgb_std': [[21.1571, 32.438, 44.9056], [21.631, 27.2886, 40.0541], [16.7417, 26.4063, 50.0762]],
        'rgb_proj': [[87.842, 101.174, 102.2777], [79.2054, 106.3972, 87.2332], [84.4409, 112.8279, 97.2246]],
        'depth_mean': [2.324225, 3.679294, 2.746503],
        'depth_max': [4.098767, 6.916399, 5.45724],
        'instance_px': {0: [3670, 3729, 3957], 1: [185, 0, 0], 2: [519, 0, 83], 3: [0, 588, 354], 5: [0, 20, 0], 6: [0, 169, 0], 11: [0, 249, 24], 12: [426, 0, 54], 13: [0, 18, 0], 14: [0, 27, 328]},
    },
    5: {
        'rgb_mean': [[123.7469, 87.5698, 87.1704], [138.8921, 90.5442, 96.3694], [129.0402, 85.7208, 86.4858]],
        'rgb_std': [[21.7027, 18.9157, 23.5969], [8.97, 4.4761, 5.096], [13.6215, 7.9421, 23.4101]],
        'rgb_proj': [[123.7559, 87.8489, 87.3307], [138.8857, 90.5367, 96.3643], [129.2131, 85.8364, 86.7497]],
        'depth_mean': [2.92005, 2.371959, 2.590432],
        'depth_max': [4.777646, 5.078506, 4.161601],
        'instance_px': {0: [4073, 4800, 4260], 2: [23, 0, 0], 3: [457, 0, 540], 5: [245, 0, 0], 7: [2, 0, 0]},
    },
    'outside': {
        'rgb_mean': [[1.7221, 1.7481, 2.1319]],
        'rgb_std': [[11.6832, 11.7925, 13.6292]],
        'rgb_proj': [[1.7168, 1.7464, 2.1848]],
        'depth_mean': [0.728675],
        'depth_max': [34.673779],
        'instance_px': {0: [4800]},
    },
}


def _stats(rgb: np.ndarray, depth: np.ndarray, inst: np.ndarray) -> dict:
    """rgb [N,H,W,3] u8, depth [N,H,W] f32, inst [N,H,W] i32 -> the REFERENCE figures."""
    n = len(rgb)
    weight = np.random.default_rng(0).random((H, W))                         # [H,W]
    proj = (rgb.astype(np.float64) * weight[None, :, :, None]).sum((1, 2)) / weight.sum()
    return {"rgb_mean": rgb.reshape(n, -1, 3).mean(1), "rgb_std": rgb.reshape(n, -1, 3).astype(float).std(1),
            "rgb_proj": proj, "depth_mean": depth.reshape(n, -1).astype(np.float64).mean(1),
            "depth_max": depth.reshape(n, -1).max(1).astype(np.float64),
            "instance_px": {int(i): (inst == i).reshape(n, -1).sum(1) for i in np.unique(inst)}}


def _assert_matches(got: dict, ref: dict) -> None:
    for key in ("rgb_mean", "rgb_proj"):
        np.testing.assert_allclose(got[key], ref[key], atol=0.02, err_msg=key)
    np.testing.assert_allclose(got["rgb_std"], ref["rgb_std"], atol=0.05, err_msg="rgb_std")
    np.testing.assert_allclose(got["depth_mean"], ref["depth_mean"], rtol=1e-5, atol=1e-5, err_msg="depth_mean")
    np.testing.assert_allclose(got["depth_max"], ref["depth_max"], rtol=1e-5, err_msg="depth_max")
    assert set(got["instance_px"]) == set(ref["instance_px"])
    for iid, counts in ref["instance_px"].items():
        np.testing.assert_allclose(got["instance_px"][iid], counts, atol=2, err_msg=f"instance {iid}")


@pytest.mark.parametrize("seed", [3, 7, 5])
def test_render_video_matches_reference(seed):
    video = SceneRenderer(make_scene(seed, num_frames=FRAMES, palette="random")).render_video(W, H)
    _assert_matches(_stats(video.rgb, video.depth, video.instance), REFERENCE[seed])


def test_rays_that_miss_match_reference_and_are_zero():
    scene = make_scene(7, num_frames=FRAMES, palette="random")
    pose = scene.world_from_camera[1].copy()
    pose[:3, 3] -= pose[:3, 2] * 30.0                       # 30 m behind the camera, outside the room
    rgb, depth, inst = SceneRenderer(scene).render(pose, intrinsics_for(W, H), W, H)
    _assert_matches(_stats(rgb[None], depth[None], inst[None]), REFERENCE["outside"])
    miss = depth == 0
    assert 0 < miss.sum() < miss.size                      # both code paths: hits and misses
    assert (rgb[miss] == 0).all() and (inst[miss] == 0).all()


def test_render_equals_render_video_frame():
    scene = make_scene(5, num_frames=2, palette="random")
    renderer = SceneRenderer(scene)
    video = renderer.render_video(W, H)
    rgb, depth, inst = renderer.render(scene.world_from_camera[1], video.intrinsics, W, H)
    assert np.array_equal(rgb, video.rgb[1]) and np.array_equal(depth, video.depth[1])
    assert np.array_equal(inst, video.instance[1])
