"""video.py: frames + timestamps from generated videos and PNG folders; clear errors."""

import cv2
import numpy as np
import pytest

from ros2_spatial_mllm.video import VideoInputError, list_images, read_frames


def write_video(path, num_frames, fps=10.0, size=(64, 48), codec="mp4v"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {codec}"
    for i in range(num_frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[..., 2] = 8 * i  # red channel (BGR order on disk) encodes the frame number
        writer.write(frame)
    writer.release()
    return path


def write_pngs(folder, num_frames, size=(40, 30), names=None):
    folder.mkdir(exist_ok=True)
    names = names or [f"frame{i}.png" for i in range(num_frames)]
    for i, name in enumerate(names):
        image = np.zeros((size[1], size[0], 3), np.uint8)
        image[..., 2] = 10 * i  # red in RGB
        cv2.imwrite(str(folder / name), image)
    return folder


@pytest.mark.parametrize("codec, suffix", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_candidates_and_timestamps(tmp_path, codec, suffix):
    path = write_video(tmp_path / f"clip{suffix}", 30, fps=10.0, codec=codec)
    clip = read_frames(path, max_candidates=8)
    assert clip.kind == "video" and clip.total_frames == 30 and clip.fps == 10.0
    assert clip.indices == [0, 4, 8, 12, 16, 20, 24, 29]
    assert clip.timestamps == pytest.approx([i / 10.0 for i in clip.indices])
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    red = clip.frames[:, 24, 32, 0].astype(int)  # RGB: channel 0 is red
    np.testing.assert_allclose(red, [8 * i for i in clip.indices], atol=6)
    everything = read_frames(path, max_candidates=128, fps=5.0)
    assert everything.indices == list(range(30)) and everything.timestamps[3] == pytest.approx(0.6)


def test_video_downscaled_to_max_side(tmp_path):
    clip = read_frames(write_video(tmp_path / "c.mp4", 5), max_side=32)
    assert clip.frames.shape == (5, 24, 32, 3)


def test_folder_natural_order_and_fps(tmp_path):
    names = [f"f{i}.png" for i in range(12)]
    folder = write_pngs(tmp_path / "imgs", 12, names=names)
    (folder / "notes.txt").write_text("ignored")
    assert [p.name for p in list_images(folder)][:3] == ["f0.png", "f1.png", "f2.png"]
    assert list_images(folder)[-1].name == "f11.png"  # natural sort, not f1, f10, f11, f2
    clip = read_frames(folder, max_candidates=4, fps=2.0)
    assert clip.kind == "images" and clip.total_frames == 12
    assert clip.indices == [0, 3, 7, 11] and clip.timestamps == [0.0, 1.5, 3.5, 5.5]
    assert clip.names == ["f0.png", "f3.png", "f7.png", "f11.png"]
    np.testing.assert_array_equal(clip.frames[:, 0, 0, 0], [0, 30, 70, 110])
    assert read_frames(folder).timestamps[:2] == [0.0, 1.0]  # default 1 fps for folders
    sub = clip.subset([1, 3])
    assert sub.indices == [3, 11] and sub.frames.shape[0] == 2


def test_grayscale_and_16bit_images_become_rgb_uint8(tmp_path):
    folder = tmp_path / "gray"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((10, 12), 100, np.uint8))
    cv2.imwrite(str(folder / "b.png"), np.full((10, 12), 65535, np.uint16))
    clip = read_frames(folder)
    assert clip.frames.shape == (2, 10, 12, 3) and clip.frames.dtype == np.uint8
    assert clip.frames[0, 0, 0].tolist() == [100, 100, 100] and clip.frames[1, 0, 0, 0] == 255


def test_errors_are_video_input_errors(tmp_path):
    with pytest.raises(VideoInputError, match="no such file"):
        read_frames(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(VideoInputError, match="cannot open video"):
        read_frames(bad)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(VideoInputError, match="no images"):
        read_frames(empty_dir)
    mixed = write_pngs(tmp_path / "mixed", 2)
    cv2.imwrite(str(mixed / "frame9.png"), np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(VideoInputError, match="different sizes"):
        read_frames(mixed)
    broken = write_pngs(tmp_path / "broken", 2)
    (broken / "frame5.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VideoInputError, match="cannot read image"):
        read_frames(broken)
    with pytest.raises(VideoInputError, match="fps"):
        read_frames(broken, fps=0)


def test_zero_frame_video_is_an_error(tmp_path):
    path = tmp_path / "zero.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    writer.release()
    if not path.exists():
        path.write_bytes(b"")
    with pytest.raises(VideoInputError, match="no frames|cannot open"):
        read_frames(path)
