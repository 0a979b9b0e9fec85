"""Property-based bad-input tests over D2's image codec and the node's intake path.

Pinned behaviour: every payload a ROS image message can carry (any encoding string, any
height/width/step a uint32 can hold, any endianness flag, truncated / oversized / random data,
corrupted JPEG/PNG/compressedDepth bytes) either decodes to an array of the documented shape or
raises ImageDecodeError. Nothing else escapes. Through the node's real intake path
(sensor_msgs/Image -> ros.convert -> FrameIntake -> FrameBuffer) nothing raises at all and the
buffer's counters stay consistent (received == kept + rejected_total).
"""
from __future__ import annotations

import array
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ros2_spatial_mllm.image_codec import (SUPPORTED_ENCODINGS, ImageDecodeError, decode_compressed,
                                           decode_depth, decode_image, decode_rgb, encode_compressed,
                                           encode_compressed_depth, encode_image)

SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
UINT32 = st.integers(0, 2**32 - 1)
ENCODINGS = st.one_of(st.sampled_from(SUPPORTED_ENCODINGS + ("RGB8", " bgr8 ", "yuv422", "16SC1", "")),
                      st.text(max_size=12))
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1,
                   "mono16": 2, "16uc1": 2, "32fc1": 4}
COLOUR = ("rgb8", "bgr8", "rgba8", "bgra8")


def _as_buffer(data: bytes, kind: int):
    return [bytes, bytearray, lambda d: array.array("B", d), memoryview,
            lambda d: np.frombuffer(d, np.uint8)][kind](data)


def _check_decoded(out, encoding: str, height: int, width: int) -> None:
    assert isinstance(out, np.ndarray)
    assert out.shape[:2] == (height, width)
    assert out.ndim == (3 if encoding.strip().lower() in COLOUR else 2)


@SETTINGS
@given(encoding=ENCODINGS, height=st.one_of(st.integers(0, 40), UINT32), width=st.one_of(st.integers(0, 40), UINT32),
       step=st.one_of(st.integers(0, 200), UINT32), data=st.binary(max_size=5000), kind=st.integers(0, 4),
       bigendian=st.integers(0, 255))
def test_raw_decode_never_raises_anything_else(encoding, height, width, step, data, kind, bigendian):
    try:
        out = decode_image(encoding, height, width, step, _as_buffer(data, kind), bigendian)
    except ImageDecodeError:
        return
    _check_decoded(out, encoding, height, width)
    assert step * (height - 1) + width * BYTES_PER_PIXEL[encoding.strip().lower()] <= len(data)


@SETTINGS
@given(encoding=st.sampled_from(SUPPORTED_ENCODINGS), height=st.integers(1, 24), width=st.integers(1, 24),
       padding=st.integers(0, 9), cut=st.integers(-40, 40), step_delta=st.integers(-8, 8),
       bigendian=st.booleans(), seed=st.integers(0, 2**16))
def test_valid_images_roundtrip_and_mutations_are_rejected_cleanly(encoding, height, width, padding, cut,
                                                                   step_delta, bigendian, seed):
    rng = np.random.default_rng(seed)
    if encoding.lower() in COLOUR:
        image = rng.integers(0, 256, (height, width, 3), np.uint8)
    else:
        dtype = {1: np.uint8, 2: np.uint16, 4: np.float32}[BYTES_PER_PIXEL[encoding.lower()]]
        image = (rng.random((height, width)) * 1000).astype(dtype)
    h, w, step, data = encode_image(image, encoding, row_padding=padding, is_bigendian=bigendian)
    np.testing.assert_array_equal(decode_image(encoding, h, w, step, data, bigendian), image)
    # mutate: truncate/extend the data, shrink/grow the step
    mutated = data[:max(0, len(data) + cut)] if cut < 0 else data + b"\x07" * cut
    try:
        out = decode_rgb(encoding, h, w, step + step_delta, mutated, bigendian)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
    except ImageDecodeError as exc:
        assert str(exc)
    if encoding.lower() in ("16uc1", "32fc1", "mono16"):
        try:
            depth = decode_depth(encoding, h, w, step + step_delta, mutated, bigendian)
            assert depth.shape == (h, w) and depth.dtype == np.float32
        except ImageDecodeError:
            pass


_JPEG = encode_compressed(np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8), "jpeg")[1]
_PNG = encode_compressed(np.random.default_rng(1).integers(0, 256, (24, 32, 3), np.uint8), "png")[1]
_PNG16 = encode_compressed(np.random.default_rng(2).integers(0, 60000, (12, 16)).astype(np.uint16), "png")[1]
_DEPTH = encode_compressed_depth(np.random.default_rng(3).random((12, 16)).astype(np.float32) * 5 + 0.1)[1]


@st.composite
def compressed_payloads(draw):
    base = draw(st.sampled_from([_JPEG, _PNG, _PNG16, _DEPTH, b""]))
    how = draw(st.sampled_from(["keep", "truncate", "flip", "append", "prefix", "random"]))
    if how == "truncate":
        return base[:draw(st.integers(0, max(0, len(base) - 1)))]
    if how == "flip" and base:
        raw = bytearray(base)
        for _ in range(draw(st.integers(1, 20))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    if how == "append":
        return base + draw(st.binary(max_size=64))
    if how == "prefix":
        return draw(st.binary(max_size=16)) + base
    if how == "random":
        return draw(st.sampled_from([b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b""])) + draw(st.binary(max_size=200))
    return base


@SETTINGS
@given(fmt=st.one_of(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "32FC1; compressedDepth png",
                                      "16UC1; compressedDepth png", "32FC1; compressedDepth rvl", ""]),
                     st.text(max_size=30)),
       data=compressed_payloads(), kind=st.integers(0, 4))
def test_compressed_decode_never_raises_anything_else(fmt, data, kind):
    try:
        out = decode_compressed(fmt, _as_buffer(data, kind))
    except ImageDecodeError:
        return
    assert isinstance(out, np.ndarray) and out.ndim in (2, 3) and out.size > 0


class _Log(logging.LoggerAdapter):
    """rclpy loggers are called as logger.warning(text); a stdlib logger has the same method."""


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.text(max_size=8)),
                          st.integers(0, 30), st.integers(0, 30), st.integers(0, 200), st.binary(max_size=3000),
                          st.integers(-5, 2**31 - 1), st.integers(0, 10**9 - 1)), min_size=1, max_size=8),
       st.lists(st.tuples(st.text(max_size=20), compressed_payloads()), max_size=4))
def test_node_intake_path_never_raises(raw_msgs, compressed_msgs):
    """Real sensor_msgs messages through ros.convert + FrameIntake into a FrameBuffer."""
    from sensor_msgs.msg import CompressedImage, Image

    from ros2_spatial_mllm.buffer import FrameBuffer
    from ros2_spatial_mllm.ros.intake import FrameIntake

    buffer = FrameBuffer(max_frames=4, max_bytes=1 << 20)
    intake = FrameIntake(buffer, _Log(logging.getLogger("fuzz.intake"), {}), log_throttle_s=0.0)
    intake.enabled = True
    sent = 0
    for encoding, height, width, step, data, sec, nanosec in raw_msgs:
        msg = Image(encoding=encoding, height=height, width=width, step=step, data=data)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        intake.on_image(msg)
        sent += 1
    for fmt, data in compressed_msgs:
        intake.on_image(CompressedImage(format=fmt, data=data))
        sent += 1
    stats = buffer.stats()
    assert stats["received"] == sent
    assert stats["received"] == stats["kept"] + stats["rejected_total"]
    assert stats["frames"] <= 4


def _png_bomb(side: int) -> bytes:
    """A ~100 kB grey PNG whose header declares side x side pixels (all zero)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    packer, row = zlib.compressobj(9), bytes(side + 1)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_compressed_decompression_bomb_is_refused_before_decoding():
    bomb = _png_bomb(6000)                       # 36 MP > 2**25 px, ~40 kB on the wire
    assert len(bomb) < 100_000
    with pytest.raises(ImageDecodeError):
        decode_compressed("png", bomb)
