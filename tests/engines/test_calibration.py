"""INT8 calibration batches: from .npy/.npz folders and from the data engine's rendered scenes."""
import numpy as np
import pytest

from engines.calibration import (directory_calibration_batches, frames_to_batch,
                                 scene_calibration_batches)
from engines.trt_builder import CalibrationFeeder


def test_directory_batches_feed_the_calibrator(tmp_path):
    np.save(tmp_path / "a.npy", np.full((1, 2, 3, 28, 28), 0.5, np.float64))
    np.savez(tmp_path / "b.npz", images=np.zeros((1, 4, 3, 28, 28), np.float32))
    batches = list(directory_calibration_batches(tmp_path))
    assert [b["images"].shape[1] for b in batches] == [2, 4]
    assert all(b["images"].dtype == np.float32 for b in batches)
    feeder = CalibrationFeeder(iter(batches), device="cpu")
    assert feeder.next_pointers(["images"]) and feeder.next_pointers(["images"])
    assert feeder.next_pointers(["images"]) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no .npy/.npz"):
        list(directory_calibration_batches(empty))


def test_frames_to_batch_layout():
    rgb = np.zeros((3, 10, 20, 3), np.uint8)
    rgb[..., 0] = 255
    batch = frames_to_batch(rgb, 28, 56)
    assert batch.shape == (1, 3, 3, 28, 56)
    assert np.allclose(batch[0, :, 0], 1.0) and np.allclose(batch[0, :, 1:], 0.0)


@pytest.mark.slow
def test_scene_batches_come_from_the_data_engine():
    (batch,) = list(scene_calibration_batches(1, frames=4, height=112, width=168))
    images = batch["images"]
    assert images.shape == (1, 4, 3, 112, 168) and images.dtype == np.float32
    assert 0.0 <= images.min() < images.max() <= 1.0
