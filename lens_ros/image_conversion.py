"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

cv_bridge has no working ROS 2 build on PyPI, so lens_ros converts images itself:
row padding (``step > width * channels * bytes``), big-endian data and every
encoding the node accepts. Anything inconsistent raises ``ImageConversionError``
with a message that says what is wrong; nothing is guessed.

Arrays are (H, W) for one channel and (H, W, C) otherwise, in the message's own
channel order (``to_rgb8`` turns any colour/mono encoding into RGB for the model).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lens_ros.model.types import BadInputError

# Largest image accepted from the wire: 8192 x 8192 x 4 channels x 4 bytes (1 GiB)
# would already be absurd for a camera; refuse before allocating.
MAX_IMAGE_BYTES = 256 * 1024 * 1024
MAX_SIDE = 16384


class ImageConversionError(BadInputError):
    """An image message that cannot be converted; the message says why."""


@dataclass(frozen=True)
class EncodingInfo:
    dtype: np.dtype
    channels: int


ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(np.dtype(np.uint8), 3),
    "bgr8": EncodingInfo(np.dtype(np.uint8), 3),
    "rgba8": EncodingInfo(np.dtype(np.uint8), 4),
    "bgra8": EncodingInfo(np.dtype(np.uint8), 4),
    "mono8": EncodingInfo(np.dtype(np.uint8), 1),
    "8UC1": EncodingInfo(np.dtype(np.uint8), 1),
    "8UC3": EncodingInfo(np.dtype(np.uint8), 3),
    "mono16": EncodingInfo(np.dtype(np.uint16), 1),
    "16UC1": EncodingInfo(np.dtype(np.uint16), 1),
    "32FC1": EncodingInfo(np.dtype(np.float32), 1),
}

DEPTH_ENCODINGS = ("16UC1", "32FC1", "mono16")


def encoding_info(encoding: str) -> EncodingInfo:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {encoding[:64]!r}; supported: {', '.join(ENCODINGS)}"
        ) from None


def image_to_numpy(msg) -> np.ndarray:
    """sensor_msgs/Image -> array (H, W) or (H, W, C), native byte order, no padding.

    Returns a copy that does not alias ``msg.data``.
    """
    info = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: {width}x{height} ({msg.encoding})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ImageConversionError(f"image too large: {width}x{height} (max side {MAX_SIDE})")
    row_bytes = width * info.channels * info.dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than one row of {width} px {msg.encoding} ({row_bytes} bytes)"
        )
    if step * height > MAX_IMAGE_BYTES:
        raise ImageConversionError(f"image of {step * height} bytes exceeds {MAX_IMAGE_BYTES}")
    buffer = _as_bytes(msg.data)
    if buffer.size != step * height:
        raise ImageConversionError(f"data has {buffer.size} bytes but step*height = {step}*{height} = {step * height}")
    rows = buffer.reshape(height, step)[:, :row_bytes]
    dtype = info.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    array = np.ascontiguousarray(rows).view(dtype).reshape(height, width, info.channels)
    array = array.astype(info.dtype, copy=True)  # native order, own memory
    return array[:, :, 0] if info.channels == 1 else array


def numpy_to_image(array: np.ndarray, encoding: str, header=None):
    """array -> sensor_msgs/Image (little-endian, no padding)."""
    from sensor_msgs.msg import Image

    info = encoding_info(encoding)
    array = np.asarray(array)
    expected_ndim = 2 if info.channels == 1 else 3
    if array.ndim == 3 and info.channels == 1 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != expected_ndim or (expected_ndim == 3 and array.shape[2] != info.channels):
        raise ImageConversionError(
            f"array of shape {array.shape} does not fit encoding {encoding} "
            f"({info.channels} channel{'s' if info.channels > 1 else ''})"
        )
    if array.dtype != info.dtype:
        raise ImageConversionError(f"array dtype {array.dtype} does not fit encoding {encoding} ({info.dtype})")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * info.channels * info.dtype.itemsize
    little = np.ascontiguousarray(array, dtype=info.dtype.newbyteorder("<"))
    msg.data = little.tobytes()
    return msg


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Any colour or mono array (as returned by image_to_numpy) -> (H, W, 3) uint8 RGB."""
    info = encoding_info(encoding)
    if encoding in ("rgb8", "8UC3"):
        return np.ascontiguousarray(array)
    if encoding == "bgr8":
        return np.ascontiguousarray(array[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(array[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(array[:, :, 2::-1])
    if info.channels == 1 and info.dtype == np.uint8:
        return np.repeat(array[:, :, None], 3, axis=2)
    if encoding == "mono16":
        return np.repeat((array >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    raise ImageConversionError(f"encoding {encoding} is not a colour or mono image")


def depth_to_metres(array: np.ndarray, encoding: str) -> np.ndarray:
    """Depth image -> float32 metres; invalid pixels (0, NaN, inf, negative) become NaN."""
    if encoding in ("16UC1", "mono16"):
        depth = array.astype(np.float32) * 1e-3
        depth[array == 0] = np.nan
        return depth
    if encoding == "32FC1":
        depth = array.astype(np.float32, copy=True)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
        return depth
    raise ImageConversionError(f"depth must be 16UC1 (mm) or 32FC1 (m), got {encoding}")


def compressed_to_numpy(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB.

    ``format`` as image_transport's compressed plugin writes it ("rgb8; jpeg compressed bgr8":
    source encoding; codec and the channel order that was encoded) or a bare "jpeg"/"png"
    (encoded as OpenCV writes colour, BGR). Only "... compressed rgb8" data is in RGB order."""
    data = _as_bytes(msg.data)
    if data.size == 0:
        raise ImageConversionError("compressed image has no data")
    if data.size > MAX_IMAGE_BYTES:
        raise ImageConversionError(f"compressed image of {data.size} bytes exceeds {MAX_IMAGE_BYTES}")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageConversionError(f"cannot decode compressed image (format {msg.format[:64]!r})")
    if "compressed rgb" in msg.format[:64]:
        return decoded
    return np.ascontiguousarray(decoded[:, :, ::-1])


def numpy_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header=None, quality: int = 90):
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage, ``format`` as image_transport's
    compressed plugin writes it for an rgb8 image ("rgb8; jpeg compressed bgr8"), so that its
    subscribers (RViz's Image display with transport "compressed", rqt_image_view,
    ``image_transport republish``) decode it as rgb8."""
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"compressed format must be jpeg or png, got {fmt!r}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageConversionError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"), rgb[:, :, ::-1], params)
    if not ok:
        raise ImageConversionError(f"{fmt} encoding failed")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"rgb8; {fmt} compressed bgr8"
    msg.data = encoded.tobytes()
    return msg


def _as_bytes(data) -> np.ndarray:
    """A message's uint8[] field (array.array, bytes or list) as a flat uint8 array."""
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)
