"""Calibration frames for INT8/FP8 engines: iterables of {input name: numpy batch}.

    batches = scene_calibration_batches(num_batches=32, frames=16, height=476, width=644)
    batches = directory_calibration_batches("calib/", input_name="images")

`scene_calibration_batches` renders procedural indoor scenes with the data engine
(training.data: make_scene + render_scene) and resizes them to the engine's input size, so INT8
ranges come from the same kind of imagery the model answers about. Directory batches are .npy
files ([1, S, 3, H, W] float32 in [0, 1]) or .npz files holding one array per input name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np


def frames_to_batch(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """rgb [S, h, w, 3] uint8 -> [1, S, 3, height, width] float32 in [0, 1] (bilinear resize)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).unsqueeze(0).numpy()


def scene_calibration_batches(num_batches: int, frames: int, height: int, width: int,
                              input_name: str = "images", seed: int = 1000
                              ) -> Iterator[dict[str, np.ndarray]]:
    """Yield `num_batches` batches, one rendered procedural scene each (seeds seed, seed+1...)."""
    from training.data.render import render_scene
    from training.data.scenes import make_scene

    for i in range(num_batches):
        video = render_scene(make_scene(seed + i, num_frames=frames), width=320, height=240)
        yield {input_name: frames_to_batch(video.rgb[:frames], height, width)}


def directory_calibration_batches(folder: str | Path, input_name: str = "images"
                                  ) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches from the .npy / .npz files of `folder` (sorted by name)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".npy", ".npz"))
    if not files:
        raise FileNotFoundError(f"no .npy/.npz calibration files in {folder}")
    for path in files:
        if path.suffix == ".npy":
            yield {input_name: np.load(path).astype(np.float32)}
        else:
            with np.load(path) as data:
                yield {k: data[k].astype(np.float32) for k in data.files}
