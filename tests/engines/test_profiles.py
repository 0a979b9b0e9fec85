"""Optimisation profile ranges and the choice of profile per input shape (pure Python)."""
import pytest

from engines.profiles import (NoProfileFitsError, OptimizationProfile, TensorShapeRange,
                              frame_count_profiles, parse_range, profiles_from_json,
                              profiles_to_json, select_profile)

HW = (224, 336, 518)


def video_profiles():
    return frame_count_profiles("images", [(1, 1, 4), (4, 16, 32), (32, 64, 128)], HW, HW)


def test_shape_range_validation():
    with pytest.raises(ValueError, match="rank"):
        TensorShapeRange("x", (1, 2), (1, 2, 3), (1, 2, 3))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        TensorShapeRange("x", (1, 8), (1, 4), (1, 16))


@pytest.mark.parametrize("frames,expected", [(1, 0), (3, 0), (8, 1), (16, 1), (31, 1),
                                              (64, 2), (128, 2)])
def test_select_profile_by_frame_count(frames, expected):
    shapes = {"images": (1, frames, 3, 336, 336)}
    assert select_profile(video_profiles(), shapes) == expected


def test_overlapping_ranges_prefer_closest_opt():
    # 4 frames fits profile 0 (max 4, opt 1) and profile 1 (min 4, opt 16): |log 4/1| == |log 4/16|
    # -> tie goes to the lower index; 5 frames only fits profile 1.
    assert select_profile(video_profiles(), {"images": (1, 4, 3, 336, 336)}) == 0
    assert select_profile(video_profiles(), {"images": (1, 5, 3, 336, 336)}) == 1
    wide = frame_count_profiles("images", [(1, 16, 64), (8, 48, 64)], HW, HW)
    assert select_profile(wide, {"images": (1, 40, 3, 336, 336)}) == 1
    assert select_profile(wide, {"images": (1, 12, 3, 336, 336)}) == 0


def test_no_profile_fits_names_shapes_and_ranges():
    with pytest.raises(NoProfileFitsError, match=r"images=\[1, 200, 3, 336, 336\].*max=\[1, 128"):
        select_profile(video_profiles(), {"images": (1, 200, 3, 336, 336)})
    with pytest.raises(NoProfileFitsError):  # image too large
        select_profile(video_profiles(), {"images": (1, 8, 3, 700, 336)})
    with pytest.raises(NoProfileFitsError):  # wrong rank
        select_profile(video_profiles(), {"images": (8, 3, 336, 336)})
    with pytest.raises(NoProfileFitsError):  # input missing
        select_profile(video_profiles(), {"pixels": (1, 8, 3, 336, 336)})


def test_multi_input_profile_needs_all_inputs_inside():
    prof = OptimizationProfile((TensorShapeRange("a", (1, 1), (1, 8), (1, 16)),
                                TensorShapeRange("b", (2,), (4,), (8,))))
    assert prof.fits({"a": (1, 3), "b": (8,)})
    assert not prof.fits({"a": (1, 3), "b": (9,)})


def test_json_roundtrip_is_canonical():
    text = profiles_to_json(video_profiles())
    assert profiles_to_json(profiles_from_json(text)) == text
    assert profiles_from_json(text) == video_profiles()


def test_frame_multiple_rounds_to_even_frames():
    (prof,) = frame_count_profiles("pixel_values", [(1, 15, 31)], HW, HW, frame_multiple=2)
    r = prof.range_of("pixel_values")
    assert (r.min_shape[1], r.opt_shape[1], r.max_shape[1]) == (2, 16, 32)


@pytest.mark.parametrize("text,expected", [("16", (16, 16, 16)), ("1:16:32", (1, 16, 32))])
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["0:1:2", "8:4:16", "a:b:c", "1:2"])
def test_parse_range_rejects(text):
    with pytest.raises(ValueError):
        parse_range(text)
