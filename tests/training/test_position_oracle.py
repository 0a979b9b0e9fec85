"""training/position_oracle.py: the pose-error model and the position features of the diagnostic."""
import numpy as np
import torch

from training.position_oracle import FREQS, perturb, position_features

KEY = ("scene/rgb/000001.png", "scene/rgb/000009.png", "scene/rgb/000017.png", "scene/rgb/000025.png")


def _points(groups: int = 3, per: int = 12) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(groups * per, 3)).astype(np.float32)


def test_perturb_leaves_the_first_group_and_moves_the_others_rigidly():
    xyz = _points()
    out = perturb(xyz, 3, KEY, yaw_deg=30.0, shift=0.5)
    a, b = xyz.reshape(3, -1, 3), out.reshape(3, -1, 3)
    np.testing.assert_array_equal(b[0], a[0])                      # the first camera's own group
    for g in (1, 2):
        assert not np.allclose(b[g], a[g], atol=1e-3)
        # a rigid motion: pairwise distances inside the group survive
        da = np.linalg.norm(a[g][:, None] - a[g][None], axis=-1)
        db = np.linalg.norm(b[g][:, None] - b[g][None], axis=-1)
        np.testing.assert_allclose(db, da, atol=1e-4)
        # a turn about the vertical (y) axis: heights shift by nothing
        np.testing.assert_allclose(b[g][:, 1], a[g][:, 1], atol=1e-5)


def test_perturb_is_a_function_of_the_frame_set():
    xyz = _points()
    first = perturb(xyz, 3, KEY, 24.0, 0.3)
    np.testing.assert_array_equal(first, perturb(xyz, 3, KEY, 24.0, 0.3))
    assert not np.allclose(first, perturb(xyz, 3, KEY[:-1] + ("scene/rgb/000033.png",), 24.0, 0.3))
    np.testing.assert_array_equal(perturb(xyz, 3, KEY, 0.0, 0.0), xyz)


def test_perturb_size_follows_the_requested_error():
    xyz = np.tile(np.array([[0.0, 0.0, 1.0]], np.float32), (2 * 400, 1))   # 3 m ahead, 2 groups
    keys = [(f"s/rgb/{i:06d}.png",) for i in range(300)]
    angles = []
    for k in keys:
        moved = perturb(xyz, 2, k, yaw_deg=20.0, shift=0.0).reshape(2, -1, 3)[1, 0]
        angles.append(np.degrees(np.arctan2(moved[0], moved[2])))
    assert 16.0 < np.std(angles) < 24.0


def test_position_features_layout():
    xyz = torch.tensor([[0.0, 0.5, -1.0], [0.25, 0.0, 2.0]])
    f = position_features(xyz)
    assert f.shape == (2, 3 + 6 * len(FREQS))
    torch.testing.assert_close(f[:, :3], xyz)
    torch.testing.assert_close(f[:, 3:6], torch.sin(np.pi * FREQS[0] * xyz))
    torch.testing.assert_close(f[:, 6:9], torch.cos(np.pi * FREQS[0] * xyz))
    # two points: the features differ, the same point gives the same features
    assert not torch.allclose(f[0], f[1])
    torch.testing.assert_close(position_features(xyz[:1]), f[:1])
