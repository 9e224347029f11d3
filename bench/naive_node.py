"""The naive baseline as a ROS node, for the through-ROS comparison in bench.ros_bench.

What a first version of the node would be: keep the newest camera image; when an
instruction arrives, run the naive sequential pipeline of bench.model_bench on it (HF
``generate``, then ``SamPredictor.set_image`` + ``predict`` with the parsed box, fp32, no
caching, no overlap) in the subscription callback and publish one ``Segmentation`` with
the mask. Same model, same camera, same DDS profile and the same instruction QoS as
lens_node, so the two first-mask times differ only by what lens_node does differently.

    python -m bench.naive_node --ros-args -p model:=lens-tiny -r image:=/camera/image_raw
"""

from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
import torch
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from lens_ros.image_conversion import image_to_numpy, to_rgb8
from lens_ros.messages import INSTRUCTION_TOPIC, latched_qos, mask_image
from lens_ros.msg import Segmentation, SegmentedObject
from lens_ros.ros_env import configure_dds

NODE_NAME = "naive_node"


class NaiveNode(Node):
    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        from bench.model_bench import load_pipeline

        model = str(self.declare_parameter("model", "lens-tiny").value)
        self.pipe, used, _ = load_pipeline(model)
        self.max_new = self.pipe.config.max_new_tokens or self.pipe.model.config.max_new_tokens
        self.latest: Image | None = None
        self.pending: str | None = None
        sensor_qos = QoSProfile(depth=2, reliability=qos_profile_sensor_data.reliability)
        self.create_subscription(Image, "image", self._on_image, sensor_qos)
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, latched_qos())
        self.pub = self.create_publisher(Segmentation, "~/segmentation", 10)
        self.get_logger().info(f"naive baseline node ready ({used})")

    def _on_image(self, msg: Image) -> None:
        self.latest = msg
        if self.pending is not None:
            text, self.pending = self.pending, None
            self._answer(text)

    def _on_instruction(self, msg: String) -> None:
        if self.latest is None:
            self.pending = msg.data  # answered on the first image
            return
        self._answer(msg.data)

    def _answer(self, text: str) -> None:
        from bench.model_bench import naive_segment

        frame = self.latest
        t0 = time.perf_counter()
        image = np.ascontiguousarray(to_rgb8(image_to_numpy(frame), frame.encoding))
        with torch.no_grad():
            masks = naive_segment(self.pipe, image, text, self.max_new)
        elapsed = (time.perf_counter() - t0) * 1000
        out = Segmentation(header=frame.header, instruction=text, tracked=False, total_ms=float(elapsed))
        out.reasoning_ms = float(elapsed)  # not split: the whole naive pipeline
        obj = SegmentedObject(mask=mask_image(np.asarray(masks[0], dtype=bool), frame.header))
        out.objects.append(obj)
        self.pub.publish(out)


def main(args: list[str] | None = None) -> int:
    configure_dds()
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = NaiveNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
