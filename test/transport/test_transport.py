"""Messages between two real processes over Fast DDS with the shipped profile."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is installed by `make setup`")
pytest.importorskip("lens_ros.msg", reason="interfaces are built by `make setup`")
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from lens_ros.image_conversion import image_to_numpy  # noqa: E402
from lens_ros.msg import Segmentation  # noqa: E402

PEER = Path(__file__).with_name("peer.py")
pytestmark = pytest.mark.ros


def collect(context, msg_type, topic, qos, args, env, timeout):
    """Start the peer publisher and gather what arrives until it exits."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("transport_listener", context=context)
    received = []
    node.create_subscription(msg_type, topic, lambda m: received.append((time.monotonic(), m)), qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    peer = subprocess.Popen([sys.executable, str(PEER), *args], env=env)
    try:
        deadline = time.monotonic() + timeout
        while peer.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):  # drain what is still in flight
            executor.spin_once(timeout_sec=0.05)
        assert peer.wait(timeout=10) == 0, "peer publisher failed"
    finally:
        if peer.poll() is None:
            peer.kill()
        executor.shutdown()
        node.destroy_node()
    return received


def test_segmentation_with_mask_crosses_processes(rclpy_context, ros_env):
    received = collect(
        rclpy_context,
        Segmentation,
        "/lens_test/segmentation",
        10,
        ["segmentation", "/lens_test/segmentation", "5"],
        ros_env,
        timeout=40,
    )
    assert len(received) == 5, f"expected 5 Segmentation messages, got {len(received)}"
    msg = received[-1][1]
    assert msg.instruction == "the red cube" and msg.rationale == "reply 4"
    assert msg.header.frame_id == "camera_color_optical_frame" and msg.header.stamp.sec == 104
    obj = msg.objects[0]
    assert (obj.box.x_offset, obj.box.y_offset, obj.box.width, obj.box.height) == (30, 10, 20, 10)
    mask = image_to_numpy(obj.mask)
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert int((mask == 255).sum()) == 200 and mask[15, 40] == 255 and mask[0, 0] == 0


def test_720p_images_at_30hz_arrive_over_best_effort(rclpy_context, ros_env):
    """Without the shipped profile Fast DDS delivers none of these (> 512 KB each)."""
    sent = 90
    received = collect(
        rclpy_context,
        Image,
        "/lens_test/image",
        qos_profile_sensor_data,
        ["images", "/lens_test/image", "1280", "720", "30", str(sent / 30)],
        ros_env,
        timeout=60,
    )
    assert len(received) >= 0.8 * sent, f"only {len(received)} of {sent} 1280x720 frames delivered"
    first = received[0][1]
    assert (first.width, first.height, first.encoding) == (1280, 720, "rgb8")
    assert len(first.data) == 1280 * 720 * 3
    stamps = [m.header.stamp.sec for _, m in received]
    assert stamps == sorted(stamps), "frames arrived out of order"
