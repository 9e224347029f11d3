"""A second ROS 2 process for transport tests: publishes what the test asks for.

Usage: python peer.py segmentation <topic> <count>
       python peer.py images <topic> <width> <height> <hz> <seconds>
It waits for a subscriber before sending, so the test measures delivery, not discovery.
"""

from __future__ import annotations

import sys
import time

from lens_ros.ros_env import configure_dds

configure_dds()

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402

from lens_ros.image_conversion import numpy_to_image  # noqa: E402


def wait_for_subscriber(node, publisher, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise SystemExit("no subscriber appeared")
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # let the subscriber's matching finish on its side too


def publish_segmentation(node, topic: str, count: int) -> None:
    from lens_ros.msg import Segmentation, SegmentedObject

    publisher = node.create_publisher(Segmentation, topic, 10)
    wait_for_subscriber(node, publisher)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 30:50] = 255
    for i in range(count):
        msg = Segmentation()
        msg.header.frame_id = "camera_color_optical_frame"
        msg.header.stamp.sec = 100 + i
        msg.instruction = "the red cube"
        msg.rationale = f"reply {i}"
        obj = SegmentedObject()
        obj.label = "cube"
        obj.score = 0.9
        obj.box.x_offset, obj.box.y_offset, obj.box.width, obj.box.height = 30, 10, 20, 10
        obj.mask = numpy_to_image(mask, "mono8", header=msg.header)
        msg.objects.append(obj)
        publisher.publish(msg)
        time.sleep(0.05)


def publish_images(node, topic: str, width: int, height: int, hz: float, seconds: float) -> None:
    from sensor_msgs.msg import Image  # noqa: F401  (type of numpy_to_image's result)

    publisher = node.create_publisher(Image, topic, qos_profile_sensor_data)
    wait_for_subscriber(node, publisher)
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = numpy_to_image(frame, "rgb8")
    period = 1.0 / hz
    start = time.monotonic()
    for i in range(int(hz * seconds)):
        msg.header.stamp.sec = i
        publisher.publish(msg)
        next_time = start + (i + 1) * period
        time.sleep(max(0.0, next_time - time.monotonic()))


def main() -> None:
    kind, topic, *rest = sys.argv[1:]
    rclpy.init()
    node = rclpy.create_node("transport_peer")
    try:
        if kind == "segmentation":
            publish_segmentation(node, topic, int(rest[0]))
        else:
            w, h, hz, seconds = int(rest[0]), int(rest[1]), float(rest[2]), float(rest[3])
            publish_images(node, topic, w, h, hz, seconds)
        time.sleep(0.5)
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main()
