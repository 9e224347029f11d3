"""Fuzzing image conversion: any field values give an array or ImageConversionError, nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels are installed by `make setup`")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from lens_ros.image_conversion import (  # noqa: E402
    ENCODINGS,
    ImageConversionError,
    compressed_to_numpy,
    image_to_numpy,
)

encodings = st.one_of(st.sampled_from(sorted(ENCODINGS)), st.text(max_size=20))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=encodings,
    height=st.integers(0, 40),
    width=st.integers(0, 40),
    step=st.integers(0, 400),
    bigendian=st.integers(0, 1),
    data=st.binary(max_size=2000),
)
def test_arbitrary_image_messages_convert_or_raise_typed_error(encoding, height, width, step, bigendian, data):
    msg = Image()
    msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian = encoding, height, width, step, bigendian
    msg.data = data
    try:
        array = image_to_numpy(msg)
    except ImageConversionError as exc:
        assert str(exc), "errors must say what is wrong"
        return
    assert array.shape[:2] == (height, width)
    assert array.dtype == ENCODINGS[encoding].dtype


@settings(max_examples=150, deadline=None)
@given(fmt=st.sampled_from(["jpeg", "png", "", "bmp"]), data=st.binary(max_size=600))
def test_arbitrary_compressed_bytes_decode_or_raise_typed_error(fmt, data):
    msg = CompressedImage()
    msg.format, msg.data = fmt, data
    try:
        rgb = compressed_to_numpy(msg)
    except ImageConversionError:
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
