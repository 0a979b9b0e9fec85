"""Read candidate frames from a video file (OpenCV) or a folder of images, with timestamps.

    clip = read_frames("room.mp4")                 # up to 128 candidates by linspace
    clip.frames      # [N, H, W, 3] uint8 RGB
    clip.indices     # source frame numbers, increasing
    clip.timestamps  # seconds: index / video fps (folders: index / ``fps`` argument)

Folders: files with an image extension, sorted naturally by name ("f2.png" before "f10.png");
only the candidate images are decoded. Videos are read sequentially (``grab`` every frame,
``retrieve`` only candidates), which is robust to codecs whose seeking is inexact; when the
container's frame count is wrong the actual count is used. Frames larger than ``max_side`` are
downscaled (aspect kept) so 128 candidates of a 4K clip fit in memory.

Every input problem raises ``VideoInputError`` with a message meant for the user.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ros2_spatial_mllm.sampling.greedy import MAX_CANDIDATES, candidate_indices

__all__ = ["VideoInputError", "VideoFrames", "IMAGE_EXTENSIONS", "read_frames", "read_depth_images",
           "list_images", "probe"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoInputError(ValueError):
    """The video/image input cannot be used (missing, unreadable, empty); message says why."""


@dataclass
class VideoFrames:
    """Frames read from one source. frames: [N, H, W, 3] uint8 RGB; indices: source frame numbers
    (increasing); timestamps: seconds [N]; total_frames: frames in the source; fps: rate used for
    timestamps; source: the path; kind: "video" | "images"."""

    frames: np.ndarray
    indices: List[int]
    timestamps: List[float]
    total_frames: int
    fps: float
    source: str
    kind: str
    names: List[str] = field(default_factory=list)  # image file names (folders only)

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, positions: Sequence[int]) -> "VideoFrames":
        """The frames at ``positions`` (positions into this object, not source indices)."""
        positions = list(positions)
        return VideoFrames(self.frames[positions], [self.indices[p] for p in positions],
                           [self.timestamps[p] for p in positions], self.total_frames, self.fps,
                           self.source, self.kind, [self.names[p] for p in positions] if self.names else [])


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: Union[str, Path]) -> List[Path]:
    """Image files in ``folder`` (not recursive), naturally sorted by name."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _downscale(image: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    import cv2

    if not max_side or max(image.shape[:2]) <= max_side:
        return image
    scale = max_side / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _stack(frames: List[np.ndarray], source: str) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoInputError(f"{source}: frames have different sizes {sorted(shapes)[:3]}; "
                              "use images of one size")
    return np.stack(frames).astype(np.uint8, copy=False)


def _open_capture(path: Path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoInputError(f"cannot open video {path} (not a video file, or an unsupported codec)")
    return capture


def probe(path: Union[str, Path]) -> tuple:
    """(frame count reported by the container, fps) of a video; VideoInputError if unreadable."""
    import cv2

    capture = _open_capture(Path(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()


def _read_video(path: Path, max_candidates: int, max_side: Optional[int], fps_override: Optional[float]):
    reported, video_fps = probe(path)
    fps = fps_override or (video_fps if video_fps and np.isfinite(video_fps) and video_fps > 0 else 30.0)
    for attempt in range(2):
        wanted = candidate_indices(reported, max_candidates) if reported > 0 else []
        wanted_set = set(wanted)
        capture = _open_capture(path)
        frames, indices, count = [], [], 0
        try:
            while True:
                if not capture.grab():
                    break
                if reported <= 0 or count in wanted_set:
                    ok, image = capture.retrieve()
                    if not ok or image is None:
                        raise VideoInputError(f"cannot decode frame {count} of {path}")
                    frames.append(_downscale(_to_rgb(image), max_side))
                    indices.append(count)
                count += 1
                if wanted and count > wanted[-1]:  # past the last candidate: stop decoding
                    break
        finally:
            capture.release()
        if count == 0:
            raise VideoInputError(f"video {path} has no frames (or none could be decoded)")
        if reported <= 0:  # unknown count: everything was read; keep the candidates
            keep = candidate_indices(count, max_candidates)
            frames, indices = [frames[i] for i in keep], [indices[i] for i in keep]
            return frames, indices, count, fps
        if len(indices) == len(wanted):
            return frames, indices, max(reported, count), fps
        reported = count  # the container over-reported its length: redo with the real count
    raise VideoInputError(f"cannot read {path}: its frame count changes between reads")


def read_frames(
    source: Union[str, Path],
    max_candidates: int = MAX_CANDIDATES,
    fps: Optional[float] = None,
    max_side: Optional[int] = 640,
) -> VideoFrames:
    """Read up to ``max_candidates`` frames evenly spread over a video or an image folder.

    Args:
        source: video file or folder of images.
        max_candidates: linspace pre-selection size (reference: 128).
        fps: frame rate for timestamps; default: the video's own rate (30 if unknown), 1.0 for
            image folders.
        max_side: downscale frames whose longer side exceeds this (None: never).
    Raises:
        VideoInputError: missing path, unreadable video or image, no frames, mixed image sizes.
    """
    if max_candidates < 1:
        raise VideoInputError(f"max_candidates must be >= 1, got {max_candidates}")
    if fps is not None and not (fps > 0 and np.isfinite(fps)):
        raise VideoInputError(f"fps must be a positive number, got {fps}")
    path = Path(os.path.expanduser(str(source)))
    if not path.exists():
        raise VideoInputError(f"no such file or directory: {path}")
    if path.is_dir():
        import cv2

        files = list_images(path)
        if not files:
            raise VideoInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        rate = fps or 1.0
        wanted = candidate_indices(len(files), max_candidates)
        frames = []
        for i in wanted:
            image = cv2.imread(str(files[i]), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise VideoInputError(f"cannot read image {files[i]}")
            if image.dtype != np.uint8:  # 16-bit images -> 8-bit
                image = (image / max(1, np.iinfo(image.dtype).max) * 255).astype(np.uint8)
            frames.append(_downscale(_to_rgb(image), max_side))
        return VideoFrames(_stack(frames, str(path)), wanted, [i / rate for i in wanted], len(files),
                           rate, str(path), "images", [files[i].name for i in wanted])
    if not path.is_file():
        raise VideoInputError(f"not a regular file: {path}")
    frames, indices, total, rate = _read_video(path, max_candidates, max_side, fps)
    return VideoFrames(_stack(frames, str(path)), indices, [i / rate for i in indices], total, rate,
                       str(path), "video")


def read_depth_images(folder: Union[str, Path], indices: Sequence[int],
                      expected_count: Optional[int] = None) -> List[np.ndarray]:
    """Depth images number ``indices`` (natural name order) of ``folder``, unchanged dtype
    (uint16 millimetres or float metres), one [H, W] array each.

    Raises VideoInputError when the folder is missing or empty, its image count differs from
    ``expected_count`` (frames of the matching video), or an image is unreadable or not 1-channel.
    """
    import cv2

    path = Path(os.path.expanduser(str(folder)))
    if not path.is_dir():
        raise VideoInputError(f"depth folder not found: {path}")
    files = list_images(path)
    if not files:
        raise VideoInputError(f"no depth images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
    if expected_count is not None and len(files) != expected_count:
        raise VideoInputError(f"depth folder {path} has {len(files)} images but the video has "
                              f"{expected_count} frames; they must match one to one")
    depths = []
    for i in indices:
        if not 0 <= i < len(files):
            raise VideoInputError(f"no depth image for frame {i} in {path}")
        image = cv2.imread(str(files[i]), cv2.IMREAD_UNCHANGED)
        if image is None or image.ndim != 2:
            raise VideoInputError(f"cannot read {files[i]} as a one-channel depth image")
        depths.append(image)
    return depths
