"""Image conversion between ROS 2 image payloads and numpy arrays, without rclpy or cv_bridge.

Raw images (``sensor_msgs/Image``) are decoded zero-copy when possible: the result is a numpy
view over the message's byte buffer (``np.frombuffer`` plus explicit strides for row padding),
so putting a 1080p ``rgb8`` frame into the buffer costs microseconds, not a 6 MB copy. Views are
read-only; call ``np.ascontiguousarray`` where a writable or contiguous array is needed.

Decoded layouts (``decode_image``):
    rgb8, bgr8, rgba8, bgra8  -> [H, W, 3] uint8, RGB channel order (bgr/alpha via a strided view)
    mono8, 8UC1               -> [H, W]    uint8
    mono16, 16UC1             -> [H, W]    uint16 (native byte order; 16UC1 is depth in mm)
    32FC1                     -> [H, W]    float32 (depth in metres)

Compressed images (``sensor_msgs/CompressedImage``, ``decode_compressed``): JPEG and PNG via
OpenCV -> [H, W, 3] uint8 RGB (colour) or [H, W] uint8/uint16 (grey); ``compressedDepth``
(image_transport's 12-byte header + PNG) -> [H, W] float32 metres (32FC1) or uint16 mm (16UC1).

``as_rgb8`` and ``as_depth_m`` turn any decoded array into the buffer's canonical forms.
Every failure raises ``ImageDecodeError`` with a message naming the problem and the numbers.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

__all__ = [
    "ImageDecodeError", "SUPPORTED_ENCODINGS", "decode_image", "decode_compressed",
    "decode_rgb", "decode_depth", "as_rgb8", "as_depth_m", "encode_image",
    "encode_compressed", "encode_compressed_depth",
]


class ImageDecodeError(ValueError):
    """Raised for any image payload that cannot be decoded; the message says why."""


# encoding -> (numpy dtype char, channels in payload, channel index order for RGB output or None)
_RAW_LAYOUTS: dict[str, tuple[str, int, tuple[int, ...] | None]] = {
    "rgb8": ("u1", 3, (0, 1, 2)),
    "bgr8": ("u1", 3, (2, 1, 0)),
    "rgba8": ("u1", 4, (0, 1, 2)),
    "bgra8": ("u1", 4, (2, 1, 0)),
    "mono8": ("u1", 1, None),
    "8uc1": ("u1", 1, None),
    "mono16": ("u2", 1, None),
    "16uc1": ("u2", 1, None),
    "32fc1": ("f4", 1, None),
}
SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "16UC1", "32FC1")
_MAX_SIDE = 1 << 15  # 32768 px: larger sides are treated as a corrupt header
# Compressed payloads are size-checked from their headers BEFORE decoding: a 40 kB PNG can declare
# 36 MP and cost ~0.5 GB and seconds inside a subscription callback. 2**25 px (33.5 MP) admits 8K UHD.
MAX_COMPRESSED_PIXELS = 1 << 25
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_image_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG's IHDR or a JPEG's SOF marker; None if not found."""
    if raw.startswith(_PNG_MAGIC):
        if len(raw) < 24 or raw[12:16] != b"IHDR":
            return None
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    pos = 2  # after SOI: walk the marker segments up to the frame header
    while pos + 9 <= len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_SOF:
            return int.from_bytes(raw[pos + 7:pos + 9], "big"), int.from_bytes(raw[pos + 5:pos + 7], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + int.from_bytes(raw[pos + 2:pos + 4], "big")
    return None


def _check_compressed_size(raw: bytes, kind: str) -> None:
    size = compressed_image_size(raw)
    if size is None:
        raise ImageDecodeError(f"corrupt {kind} data ({len(raw)} bytes): no image size in its header")
    width, height = size
    if width == 0 or height == 0 or width * height > MAX_COMPRESSED_PIXELS:
        raise ImageDecodeError(f"refusing {kind} of {width}x{height} px before decoding "
                               f"(limit {MAX_COMPRESSED_PIXELS} px)")
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_MAGIC, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND"
_DEPTH_HEADER = struct.Struct("<iff")  # compressedDepth ConfigHeader: format enum, depthQuantA, B


def _layout(encoding: str) -> tuple[str, int, tuple[int, ...] | None]:
    layout = _RAW_LAYOUTS.get(str(encoding).strip().lower())
    if layout is None:
        raise ImageDecodeError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    return layout


def decode_image(encoding: str, height: int, width: int, step: int, data,
                 is_bigendian: bool | int = False) -> np.ndarray:
    """Decode a raw ``sensor_msgs/Image`` payload; zero-copy for native-endian data.

    ``data`` is anything exposing the buffer protocol (bytes, bytearray, array.array, memoryview,
    numpy uint8 array). Rows may be padded (``step`` > width * bytes per pixel); trailing bytes
    after ``step * height`` are ignored. Returns the layouts listed in the module docstring.
    """
    dtype_char, channels, order = _layout(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"zero-size image {width}x{height} ({encoding})")
    if height > _MAX_SIDE or width > _MAX_SIDE:
        raise ImageDecodeError(f"implausible image size {width}x{height} (max side {_MAX_SIDE})")
    dtype = np.dtype(dtype_char).newbyteorder(">" if is_bigendian else "<")
    pixel_bytes = dtype.itemsize * channels
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageDecodeError(
            f"bad step {step} for {encoding} {width}x{height}: a row needs at least {row_bytes} bytes")
    try:
        buf = memoryview(data).cast("B")
    except TypeError as exc:
        raise ImageDecodeError(f"image data of type {type(data).__name__} is not a byte buffer") from exc
    needed = step * (height - 1) + row_bytes
    if buf.nbytes < needed:
        raise ImageDecodeError(
            f"truncated {encoding} image {width}x{height}: {buf.nbytes} bytes, "
            f"expected step*height = {step}*{height} = {step * height}")
    if channels == 1:
        shape, strides = (height, width), (step, dtype.itemsize)
    else:
        shape, strides = (height, width, channels), (step, pixel_bytes, dtype.itemsize)
    array = np.ndarray(shape=shape, dtype=dtype, buffer=buf, offset=0, strides=strides)
    if order is not None and (channels != 3 or order != (0, 1, 2)):
        # bgr -> rgb as a negative-stride view, alpha dropped by slicing: still zero-copy
        array = array[..., 2::-1] if order == (2, 1, 0) else array[..., :3]
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))  # foreign-endian payload: one swapping copy
    return array


def decode_rgb(encoding: str, height: int, width: int, step: int, data,
               is_bigendian: bool | int = False) -> np.ndarray:
    """``decode_image`` then ``as_rgb8``: [H, W, 3] uint8 RGB for colour and mono encodings."""
    return as_rgb8(decode_image(encoding, height, width, step, data, is_bigendian))


def decode_depth(encoding: str, height: int, width: int, step: int, data,
                 is_bigendian: bool | int = False) -> np.ndarray:
    """Decode a depth image (16UC1 mm or 32FC1 m) to [H, W] float32 metres, NaN where invalid."""
    enc = str(encoding).strip().lower()
    if enc not in ("16uc1", "mono16", "32fc1"):
        raise ImageDecodeError(f"encoding {encoding!r} is not a depth encoding (16UC1 or 32FC1)")
    return as_depth_m(decode_image(encoding, height, width, step, data, is_bigendian))


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """Canonical RGB frame [H, W, 3] uint8 from a decoded image (grey is broadcast, 16-bit >> 8)."""
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return image
    if image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8:
        return image[..., :3]
    if image.ndim == 2 and image.dtype == np.uint8:
        return np.broadcast_to(image[:, :, None], image.shape + (3,))  # zero-copy grey view
    if image.ndim == 2 and image.dtype == np.uint16:
        grey = (image >> 8).astype(np.uint8)
        return np.broadcast_to(grey[:, :, None], grey.shape + (3,))
    raise ImageDecodeError(f"cannot use a {image.dtype} image of shape {image.shape} as RGB")


def as_depth_m(depth: np.ndarray) -> np.ndarray:
    """Depth [H, W] in metres (float32), invalid (0, negative, inf) -> NaN.

    uint16 input is millimetres (16UC1 convention); float input is already metres.
    """
    if depth.ndim != 2:
        raise ImageDecodeError(f"depth must be one channel [H, W], got shape {depth.shape}")
    if depth.dtype == np.uint16:
        metres = depth.astype(np.float32) * np.float32(1e-3)
    elif depth.dtype in (np.float32, np.float64):
        metres = depth.astype(np.float32, copy=True)
    else:
        raise ImageDecodeError(f"unsupported depth dtype {depth.dtype} (uint16 mm or float32 m)")
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def decode_compressed(format: str, data) -> np.ndarray:  # noqa: A002 - ROS field name
    """Decode a ``sensor_msgs/CompressedImage`` payload (JPEG, PNG, compressedDepth PNG).

    The codec is taken from the bytes' magic number, the ``format`` string only decides the
    compressedDepth case (e.g. ``"32FC1; compressedDepth png"``) and colour order
    (``"bgr8; jpeg compressed bgr8"`` and ``"jpeg"`` both yield RGB output).
    """
    fmt = str(format).strip().lower()
    try:
        raw = bytes(memoryview(data).cast("B"))
    except TypeError as exc:
        raise ImageDecodeError(f"compressed data of type {type(data).__name__} is not a byte buffer") from exc
    if not raw:
        raise ImageDecodeError(f"empty compressed image (format {format!r})")
    if "compresseddepth" in fmt:
        return _decode_compressed_depth(fmt, raw)
    if raw.startswith(_JPEG_SOI):
        if _JPEG_EOI not in raw[-32:]:
            raise ImageDecodeError(f"truncated JPEG: no end-of-image marker ({len(raw)} bytes)")
        kind = "JPEG"
    elif raw.startswith(_PNG_MAGIC):
        if _PNG_IEND not in raw[-16:]:
            raise ImageDecodeError(f"truncated PNG: no IEND chunk ({len(raw)} bytes)")
        kind = "PNG"
    else:
        raise ImageDecodeError(
            f"unsupported or corrupt compressed image (format {format!r}): "
            f"bytes start with {raw[:4].hex()}, expected JPEG ffd8 or PNG 89504e47")
    _check_compressed_size(raw, kind)
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageDecodeError(f"corrupt {kind} data ({len(raw)} bytes): OpenCV could not decode it")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return image


def _decode_compressed_depth(fmt: str, raw: bytes) -> np.ndarray:
    if "rvl" in fmt:
        raise ImageDecodeError("compressedDepth RVL is not supported (only PNG)")
    if len(raw) <= _DEPTH_HEADER.size:
        raise ImageDecodeError(f"truncated compressedDepth: {len(raw)} bytes, header alone is 12")
    _, quant_a, quant_b = _DEPTH_HEADER.unpack_from(raw)
    png = raw[_DEPTH_HEADER.size:]
    if not png.startswith(_PNG_MAGIC):
        raise ImageDecodeError("corrupt compressedDepth: payload after the 12-byte header is not PNG")
    _check_compressed_size(png, "compressedDepth PNG")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2 or image.dtype != np.uint16:
        raise ImageDecodeError("corrupt compressedDepth PNG (expected a 16-bit single-channel image)")
    if fmt.startswith("16uc1") or fmt.startswith("mono16"):
        return image  # millimetres, like a raw 16UC1 image
    # 32FC1: inverse-depth quantisation, depth = A / (q - B); q == 0 marks invalid pixels
    q = image.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (q - np.float32(quant_b))
    depth[image == 0] = np.nan
    return depth.astype(np.float32)


def encode_image(image: np.ndarray, encoding: str, row_padding: int = 0,
                 is_bigendian: bool = False) -> tuple[int, int, int, bytes]:
    """Inverse of ``decode_image``: array -> (height, width, step, data bytes).

    Colour input is [H, W, 3] uint8 RGB (or [H, W, 4] RGBA); it is reordered/padded for the
    encoding (alpha 255 is added for rgba8/bgra8). ``row_padding`` adds that many bytes per row.
    """
    dtype_char, channels, order = _layout(encoding)
    image = np.asarray(image)
    if image.ndim < 2 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageDecodeError(f"cannot encode an image of shape {image.shape}")
    height, width = image.shape[:2]
    if order is not None:
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ImageDecodeError(f"{encoding} needs [H, W, 3] uint8 RGB, got {image.shape} {image.dtype}")
        rgb = image[..., :3][..., list(order)]
        if channels == 4:
            alpha = image[..., 3:4] if image.shape[2] == 4 else np.full((height, width, 1), 255, np.uint8)
            rgb = np.concatenate([rgb, alpha], axis=2)
        pixels = rgb
    else:
        if image.ndim != 2:
            raise ImageDecodeError(f"{encoding} needs a single-channel [H, W] array, got {image.shape}")
        pixels = image.astype(dtype_char, copy=False)
    dtype = np.dtype(dtype_char).newbyteorder(">" if is_bigendian else "<")
    pixels = np.ascontiguousarray(pixels, dtype=dtype).reshape(height, -1).view(np.uint8)
    if row_padding:
        pixels = np.concatenate([pixels, np.zeros((height, int(row_padding)), np.uint8)], axis=1)
    return height, width, pixels.shape[1], pixels.tobytes()


def encode_compressed(image: np.ndarray, format: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:  # noqa: A002
    """[H, W, 3] uint8 RGB (or [H, W] grey) -> (ROS format string, JPEG/PNG bytes)."""
    kind = str(format).strip().lower()
    if kind not in ("jpeg", "jpg", "png"):
        raise ImageDecodeError(f"unsupported compressed format {format!r} (jpeg or png)")
    image = np.asarray(image)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ext, params = (".png", []) if kind == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    ok, encoded = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ImageDecodeError(f"OpenCV failed to encode a {image.shape} {image.dtype} image as {kind}")
    colour = "rgb8" if image.ndim == 3 else ("mono16" if image.dtype == np.uint16 else "mono8")
    name = "png" if kind == "png" else "jpeg"
    return f"{colour}; {name} compressed {'bgr8' if image.ndim == 3 else colour}", encoded.tobytes()


def encode_compressed_depth(depth_m: np.ndarray, depth_max: float = 10.0,
                            depth_quantization: float = 100.0) -> tuple[str, bytes]:
    """[H, W] float32 metres -> ("32FC1; compressedDepth png", header + 16-bit inverse-depth PNG)."""
    depth = np.asarray(depth_m, np.float32)
    quant_a = depth_quantization * (depth_quantization + 1.0)
    quant_b = 1.0 - quant_a / depth_max
    valid = np.isfinite(depth) & (depth > 0) & (depth <= depth_max)
    q = np.zeros(depth.shape, np.uint16)
    q[valid] = np.clip(np.round(quant_a / depth[valid] + quant_b), 1, 65535).astype(np.uint16)
    ok, png = cv2.imencode(".png", q)
    if not ok:
        raise ImageDecodeError("OpenCV failed to encode the inverse-depth PNG")
    return "32FC1; compressedDepth png", _DEPTH_HEADER.pack(0, quant_a, quant_b) + png.tobytes()
