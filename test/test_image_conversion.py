"""Image <-> numpy conversion: round trips for every encoding, padding, endianness, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels are installed by `make setup`")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from lens_ros.image_conversion import (  # noqa: E402
    ENCODINGS,
    ImageConversionError,
    compressed_to_numpy,
    depth_to_metres,
    image_to_numpy,
    numpy_to_compressed,
    numpy_to_image,
    to_rgb8,
)
from lens_ros.model.types import BadInputError  # noqa: E402


def array_for(encoding: str, height: int, width: int):
    info = ENCODINGS[encoding]
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype == np.float32:
        elements = st.floats(-1e6, 1e6, width=32, allow_nan=False)
    else:
        elements = st.integers(0, np.iinfo(info.dtype).max)
    return hnp.arrays(info.dtype, shape, elements=elements)


@st.composite
def encoded_arrays(draw):
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    height = draw(st.integers(1, 12))
    width = draw(st.integers(1, 12))
    return encoding, draw(array_for(encoding, height, width))


def padded_message(array: np.ndarray, encoding: str, pad: int, bigendian: bool) -> Image:
    """Build an Image by hand, as a driver with row padding / big-endian data would."""
    info = ENCODINGS[encoding]
    height, width = array.shape[:2]
    row_bytes = width * info.channels * info.dtype.itemsize
    data = np.ascontiguousarray(array, dtype=info.dtype.newbyteorder(">" if bigendian else "<"))
    rows = data.view(np.uint8).reshape(height, row_bytes)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    msg = Image()
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = int(bigendian)
    msg.step = row_bytes + pad
    msg.data = padded.tobytes()
    return msg


@settings(max_examples=60, deadline=None)
@given(encoded_arrays())
def test_round_trip_preserves_every_encoding(case):
    encoding, array = case
    msg = numpy_to_image(array, encoding)
    assert msg.step == array.shape[1] * ENCODINGS[encoding].channels * array.dtype.itemsize
    back = image_to_numpy(msg)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@settings(max_examples=60, deadline=None)
@given(encoded_arrays(), st.integers(1, 9), st.booleans())
def test_row_padding_and_big_endian_are_decoded(case, pad, bigendian):
    encoding, array = case
    back = image_to_numpy(padded_message(array, encoding, pad, bigendian))
    np.testing.assert_array_equal(back, array)
    assert back.dtype.isnative


def test_converted_array_does_not_alias_message_data():
    msg = numpy_to_image(np.zeros((2, 3, 3), np.uint8), "rgb8")
    array = image_to_numpy(msg)
    array[:] = 7
    assert bytes(msg.data) == bytes(18)


@pytest.mark.parametrize(
    "encoding, pixel, rgb",
    [
        ("rgb8", [10, 20, 30], [10, 20, 30]),
        ("bgr8", [10, 20, 30], [30, 20, 10]),
        ("rgba8", [10, 20, 30, 40], [10, 20, 30]),
        ("bgra8", [10, 20, 30, 40], [30, 20, 10]),
        ("mono8", 50, [50, 50, 50]),
        ("mono16", 0x1234, [0x12, 0x12, 0x12]),
    ],
)
def test_to_rgb8_orders_channels(encoding, pixel, rgb):
    info = ENCODINGS[encoding]
    shape = (1, 1) if info.channels == 1 else (1, 1, info.channels)
    array = np.array(pixel, dtype=info.dtype).reshape(shape)
    assert to_rgb8(array, encoding).tolist() == [[rgb]]


def test_depth_to_metres_marks_invalid_pixels():
    mm = np.array([[0, 1000, 65535]], np.uint16)
    metres = depth_to_metres(mm, "16UC1")
    assert np.isnan(metres[0, 0]) and metres[0, 1] == pytest.approx(1.0)
    raw = np.array([[np.nan, np.inf, -1.0, 0.0, 2.5]], np.float32)
    metres = depth_to_metres(raw, "32FC1")
    assert np.isnan(metres[0, :4]).all() and metres[0, 4] == pytest.approx(2.5)
    with pytest.raises(ImageConversionError, match="depth must be"):
        depth_to_metres(mm, "rgb8")


def test_compressed_round_trip_png_is_exact_and_jpeg_close():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    assert np.array_equal(compressed_to_numpy(numpy_to_compressed(rgb, "png")), rgb)
    smooth = np.zeros((32, 32, 3), np.uint8)
    smooth[:, :, 0] = 200  # a flat red image survives jpeg almost unchanged
    back = compressed_to_numpy(numpy_to_compressed(smooth, "jpeg"))
    assert np.abs(back.astype(int) - smooth).max() <= 3


def test_compressed_format_follows_image_transport():
    """What image_transport's compressed plugin writes and reads: "<source encoding>; <codec>
    compressed <encoded channel order>". A bare "jpeg" (older publishers) is BGR as OpenCV writes it."""
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :, 0] = 255  # pure red
    msg = numpy_to_compressed(rgb, "png")
    assert msg.format == "rgb8; png compressed bgr8"
    assert np.array_equal(compressed_to_numpy(msg), rgb)
    msg.format = "png"
    assert np.array_equal(compressed_to_numpy(msg), rgb)
    # a publisher that encoded the channels in RGB order says so: red stays red
    ok, encoded = cv2.imencode(".png", rgb)
    msg.format, msg.data = "rgb8; png compressed rgb8", encoded.tobytes()
    assert ok and np.array_equal(compressed_to_numpy(msg), rgb)


def bad(**fields) -> Image:
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = 2, 2, "rgb8", 6
    msg.data = bytes(12)
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    "msg, message",
    [
        (bad(encoding="yuv422_yuy2"), "unsupported image encoding"),
        (bad(encoding=""), "unsupported image encoding"),
        (bad(height=0, width=0, step=0, data=b""), "empty image"),
        (bad(step=5), "step 5 is smaller than one row"),
        (bad(data=bytes(11)), "data has 11 bytes"),
        (bad(data=bytes(13)), "data has 13 bytes"),
        (bad(encoding="32FC1", step=8), "data has 12 bytes"),
        (bad(height=100000, width=2, step=6), "too large"),
    ],
)
def test_inconsistent_messages_raise_clear_errors(msg, message):
    with pytest.raises(ImageConversionError, match=message):
        image_to_numpy(msg)


def test_errors_are_bad_input_errors():
    assert issubclass(ImageConversionError, BadInputError)
    assert issubclass(ImageConversionError, ValueError)


@pytest.mark.parametrize(
    "array, encoding, message",
    [
        (np.zeros((2, 2), np.uint8), "rgb8", "does not fit encoding rgb8"),
        (np.zeros((2, 2, 3), np.float32), "rgb8", "dtype float32"),
        (np.zeros((2, 2, 3), np.uint8), "nv12", "unsupported"),
    ],
)
def test_numpy_to_image_rejects_mismatched_arrays(array, encoding, message):
    with pytest.raises(ImageConversionError, match=message):
        numpy_to_image(array, encoding)


def test_undecodable_compressed_image_is_rejected():
    msg = CompressedImage()
    msg.format = "jpeg"
    msg.data = b"not a jpeg at all"
    with pytest.raises(ImageConversionError, match="cannot decode"):
        compressed_to_numpy(msg)
    msg.data = b""
    with pytest.raises(ImageConversionError, match="no data"):
        compressed_to_numpy(msg)
