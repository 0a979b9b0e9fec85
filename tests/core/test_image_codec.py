"""image_codec: raw/compressed round trips, zero-copy views, and precise errors on bad payloads."""
import array

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ros2_spatial_mllm.image_codec import (
    ImageDecodeError, as_depth_m, as_rgb8, decode_compressed, decode_depth, decode_image, decode_rgb,
    encode_compressed, encode_compressed_depth, encode_image,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (7, 11, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("padding", [0, 5])
def test_colour_round_trip_returns_rgb(encoding, padding):
    h, w, step, data = encode_image(RGB, encoding, row_padding=padding)
    assert step == w * (3 if encoding.endswith("8") and len(encoding) == 4 else 4) + padding
    out = decode_image(encoding, h, w, step, data)
    assert out.shape == (7, 11, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


def test_rgb8_decode_is_zero_copy_view_of_message_buffer():
    h, w, step, data = encode_image(RGB, "rgb8", row_padding=3)
    source = np.frombuffer(data, np.uint8)
    out = decode_image("rgb8", h, w, step, source)
    assert np.shares_memory(out, source)
    assert not out.flags.writeable
    bgr = decode_image("bgr8", *encode_image(RGB, "bgr8")[:3], source_bgr := np.frombuffer(encode_image(RGB, "bgr8")[3], np.uint8))
    assert np.shares_memory(bgr, source_bgr)


@pytest.mark.parametrize("encoding,dtype", [("mono8", np.uint8), ("8UC1", np.uint8), ("mono16", np.uint16),
                                            ("16UC1", np.uint16), ("32FC1", np.float32)])
@pytest.mark.parametrize("bigendian", [False, True])
def test_single_channel_round_trip(encoding, dtype, bigendian):
    image = (RNG.random((5, 9)) * 1000).astype(dtype)
    h, w, step, data = encode_image(image, encoding, row_padding=2, is_bigendian=bigendian)
    out = decode_image(encoding, h, w, step, array.array("B", data), is_bigendian=bigendian)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, image)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), pad=st.integers(0, 9),
       enc=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8"]))
def test_colour_round_trip_any_size_and_padding(h, w, pad, enc):
    image = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(enc, *encode_image(image, enc, row_padding=pad)), image)


def test_depth_helpers_convert_to_metres_with_nan_for_invalid():
    mm = np.array([[0, 1500], [65535, 250]], np.uint16)
    metres = decode_depth("16UC1", *encode_image(mm, "16UC1"))
    assert np.isnan(metres[0, 0]) and metres[0, 1] == pytest.approx(1.5) and metres[1, 1] == pytest.approx(0.25)
    m = np.array([[np.inf, -1.0], [2.5, 0.0]], np.float32)
    out = decode_depth("32FC1", *encode_image(m, "32FC1"))
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 1]) and out[1, 0] == 2.5 and np.isnan(out[1, 1])
    with pytest.raises(ImageDecodeError, match="not a depth encoding"):
        decode_depth("rgb8", *encode_image(RGB, "rgb8"))
    with pytest.raises(ImageDecodeError, match="one channel"):
        as_depth_m(RGB)


def test_mono_to_rgb_is_broadcast_grey():
    grey = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    rgb = decode_rgb("mono8", *encode_image(grey, "mono8"))
    assert rgb.shape == (4, 6, 3) and (rgb[..., 0] == grey).all() and (rgb[..., 2] == grey).all()
    assert as_rgb8(np.full((2, 2), 0x1234, np.uint16))[0, 0, 0] == 0x12
    with pytest.raises(ImageDecodeError, match="as RGB"):
        as_rgb8(np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("args,match", [
    (("yuv422", 2, 2, 4, bytes(8)), "unsupported encoding 'yuv422'"),
    (("rgb8", 0, 4, 12, b""), "zero-size image 4x0"),
    (("rgb8", 4, 0, 0, b""), "zero-size image 0x4"),
    (("rgb8", 2, 4, 11, bytes(24)), "bad step 11 .* at least 12"),
    (("rgb8", 2, 4, 12, bytes(20)), "truncated rgb8 image 4x2: 20 bytes, expected .* 24"),
    (("32FC1", 3, 3, 12, bytes(30)), "truncated 32FC1"),
    (("mono8", 100000, 2, 2, b""), "implausible image size"),
    (("rgb8", 1, 1, 3, 12345), "not a byte buffer"),
])
def test_raw_decode_errors_are_precise(args, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(*args)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_compressed_round_trip(kind):
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[:, :24] = (200, 30, 30)
    smooth[:, 24:] = (20, 40, 220)
    fmt, data = encode_compressed(smooth, kind)
    assert kind in fmt
    out = decode_compressed(fmt, data)
    assert out.shape == (32, 48, 3)
    tolerance = 0 if kind == "png" else 12
    interior = np.r_[0:16, 32:48]                                 # away from the JPEG-blurred edge
    diff = np.abs(out[:, interior].astype(int) - smooth[:, interior])
    assert diff.max() <= tolerance   # RGB order preserved (red stays red)


def test_compressed_grey_png_and_16bit():
    grey16 = RNG.integers(0, 65535, (6, 5), dtype=np.uint16)
    out = decode_compressed("mono16; png compressed mono16", encode_compressed(grey16, "png")[1])
    np.testing.assert_array_equal(out, grey16)


def test_compressed_depth_png_round_trip():
    depth = np.linspace(0.5, 8.0, 60, dtype=np.float32).reshape(6, 10)
    depth[0, 0] = np.nan
    fmt, data = encode_compressed_depth(depth)
    out = decode_compressed(fmt, data)
    assert out.dtype == np.float32 and np.isnan(out[0, 0])
    rel = np.abs(out[1:] - depth[1:]) / depth[1:]
    assert np.nanmax(rel) < 0.01    # inverse-depth quantisation: < 1 % up to 8 m
    mm = RNG.integers(1, 5000, (4, 4), dtype=np.uint16)
    raw16 = b"\x00" * 12 + encode_compressed(mm, "png")[1]
    np.testing.assert_array_equal(decode_compressed("16UC1; compressedDepth png", raw16), mm)


def test_corrupt_compressed_payloads_raise():
    fmt, jpeg = encode_compressed(RGB, "jpeg")
    with pytest.raises(ImageDecodeError, match="truncated JPEG"):
        decode_compressed(fmt, jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageDecodeError, match="corrupt JPEG"):
        decode_compressed("jpeg", b"\xff\xd8" + bytes(200) + b"\xff\xd9")
    fmt, png = encode_compressed(RGB, "png")
    with pytest.raises(ImageDecodeError, match="truncated PNG"):
        decode_compressed(fmt, png[:-20])
    with pytest.raises(ImageDecodeError, match="empty compressed image"):
        decode_compressed("jpeg", b"")
    with pytest.raises(ImageDecodeError, match="expected JPEG ffd8 or PNG"):
        decode_compressed("jpeg", b"GIF89a....")
    with pytest.raises(ImageDecodeError, match="RVL is not supported"):
        decode_compressed("32FC1; compressedDepth rvl", bytes(40))
    with pytest.raises(ImageDecodeError, match="not PNG"):
        decode_compressed("32FC1; compressedDepth png", bytes(40))
    with pytest.raises(ImageDecodeError, match="unsupported compressed format"):
        encode_compressed(RGB, "webp")


def test_compressed_size_is_read_from_headers_before_decoding():
    from ros2_spatial_mllm.image_codec import compressed_image_size
    img = np.zeros((37, 53, 3), np.uint8)
    for fmt in ("jpeg", "png"):
        _, data = encode_compressed(img, fmt)
        assert compressed_image_size(data) == (53, 37)


def test_jpeg_declaring_too_many_pixels_is_refused():
    _, data = encode_compressed(np.zeros((16, 16, 3), np.uint8), "jpeg")
    raw = bytearray(data)
    sof = next(i for i in range(2, len(raw) - 9) if raw[i] == 0xFF and raw[i + 1] in (0xC0, 0xC2))
    raw[sof + 5:sof + 7] = (20000).to_bytes(2, "big")   # height
    raw[sof + 7:sof + 9] = (20000).to_bytes(2, "big")   # width
    with pytest.raises(ImageDecodeError, match="refusing JPEG of 20000x20000"):
        decode_compressed("jpeg", bytes(raw))
