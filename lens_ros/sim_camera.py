"""A synthetic RGB-D camera: the embedded tabletop world rendered live.

Publishes (relative names, remappable):
- ``camera/image_raw`` rgb8 Image (and ``camera/image_raw/compressed`` when asked),
- ``camera/depth/image_raw`` 32FC1 metres or 16UC1 millimetres, aligned to the colour image,
- ``camera/camera_info`` (ROS pixel-centre convention),
- ``~/ground_truth`` std_msgs/String JSON: stamp, scene time, every object's name,
  box, 3D centre (camera frame) and visible fraction; ``~/ground_truth_labels`` mono8,
  pixel = object index + 1 (0 = table).
All share one stamp per frame. Objects slide slowly (a few cm), so tracking shows.
"""

from __future__ import annotations

import json

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from lens_ros.entry import run_node
from lens_ros.image_conversion import numpy_to_compressed, numpy_to_image
from lens_ros.ros_env import configure_dds

MAX_GROUND_TRUTH_OBJECTS = 32


def ros_intrinsics(k: np.ndarray) -> np.ndarray:
    """The renderer's K (pixel corners at integers) -> ROS's (pixel centres at integers)."""
    k = np.asarray(k, dtype=np.float64).copy()
    k[0, 2] -= 0.5
    k[1, 2] -= 0.5
    return k


def camera_info(k: np.ndarray, width: int, height: int, header: Header) -> CameraInfo:
    info = CameraInfo(header=header, width=int(width), height=int(height), distortion_model="plumb_bob")
    k = ros_intrinsics(k)
    info.k = [float(v) for v in k.ravel()]
    info.d = [0.0] * 5
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [k[0, 0], 0.0, k[0, 2], 0.0, 0.0, k[1, 1], k[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def ground_truth(frame, t: float, seed: int, header: Header) -> dict:
    """JSON-able description of a rendered frame."""
    return {
        "stamp": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)},
        "frame_id": header.frame_id,
        "t": float(t),
        "seed": int(seed),
        "width": int(frame.image.shape[1]),
        "height": int(frame.image.shape[0]),
        "objects": [
            {
                "index": i,
                "name": o.name,
                "shape": o.shape,
                "color": o.color,
                "size": o.size,
                "box": [float(v) for v in o.box],
                "center": [float(v) for v in o.center],
                "visible_fraction": float(o.visible_fraction),
            }
            for i, o in enumerate(frame.objects[:MAX_GROUND_TRUTH_OBJECTS])
        ],
    }


def label_image(frame) -> np.ndarray:
    labels = np.zeros(frame.image.shape[:2], np.uint8)
    for i, o in enumerate(frame.objects[:MAX_GROUND_TRUTH_OBJECTS]):
        labels[o.mask] = i + 1
    return labels


class SimCamera(Node):
    def __init__(self) -> None:
        super().__init__("sim_camera")
        self.rate_hz = self.declare_parameter("rate_hz", 30.0).value
        self.width = self.declare_parameter("width", 320).value
        self.height = self.declare_parameter("height", 240).value
        self.seed = self.declare_parameter("seed", 0).value
        self.speed = self.declare_parameter("speed", 1.0).value  # scene seconds per second; 0 freezes it
        self.start_time = self.declare_parameter("start_time", 0.0).value
        self.depth_encoding = self.declare_parameter("depth_encoding", "32FC1").value
        self.frame_id = self.declare_parameter("frame_id", "camera_color_optical_frame").value
        self.publish_compressed = self.declare_parameter("publish_compressed", False).value
        self.publish_depth = self.declare_parameter("publish_depth", True).value
        if self.depth_encoding not in ("32FC1", "16UC1"):
            raise ValueError(f"depth_encoding must be 32FC1 or 16UC1, got {self.depth_encoding!r}")
        if not (0.0 < self.rate_hz <= 1000.0) or self.width < 16 or self.height < 16:
            raise ValueError("rate_hz must be in (0, 1000] and width/height at least 16")

        from lens_ros.world.scene import SceneAnimator

        self.animator = SceneAnimator(self.seed, size=(self.width, self.height))
        sensor = QoSProfile(depth=2, reliability=qos_profile_sensor_data.reliability)
        self.pub_image = self.create_publisher(Image, "camera/image_raw", sensor)
        self.pub_compressed = self.create_publisher(CompressedImage, "camera/image_raw/compressed", sensor)
        self.pub_depth = self.create_publisher(Image, "camera/depth/image_raw", sensor)
        self.pub_info = self.create_publisher(CameraInfo, "camera/camera_info", sensor)
        self.pub_truth = self.create_publisher(String, "~/ground_truth", 10)
        self.pub_labels = self.create_publisher(Image, "~/ground_truth_labels", 10)
        self.started = self.get_clock().now()
        self.frames = 0
        self._cached: tuple[float, dict] | None = None  # (scene time, its messages)
        self.create_timer(1.0 / self.rate_hz, self._tick)
        self.get_logger().info(
            f"synthetic camera {self.width}x{self.height} @ {self.rate_hz:g} Hz, seed {self.seed}, "
            f"{len(self.animator.objects)} objects, depth {self.depth_encoding}"
        )

    def scene_time(self, now) -> float:
        return self.start_time + self.speed * (now - self.started).nanoseconds * 1e-9

    def _tick(self) -> None:
        try:
            self._publish_frame()
        except Exception:
            if self.context.ok():
                raise
            # shutting down: the context went away between the timer firing and the publish

    def _render(self, t: float, header: Header) -> dict:
        """The messages of scene time t (stamped with ``header``)."""
        frame = self.animator.frame(t)
        msgs = {"image": numpy_to_image(frame.image, "rgb8", header)}
        if self.publish_compressed:
            msgs["compressed"] = numpy_to_compressed(frame.image, "jpeg", header)
        if self.publish_depth:
            depth = frame.depth.astype(np.float32)
            if self.depth_encoding == "16UC1":
                depth = np.nan_to_num(depth * 1000.0, nan=0.0, posinf=0.0).clip(0, 65535).round().astype(np.uint16)
            msgs["depth"] = numpy_to_image(depth, self.depth_encoding, header)
        msgs["info"] = camera_info(frame.K, self.width, self.height, header)
        msgs["truth"] = ground_truth(frame, t, self.seed, header)
        msgs["labels"] = numpy_to_image(label_image(frame), "mono8", header)
        return msgs

    def _publish_frame(self) -> None:
        now = self.get_clock().now()
        t = self.scene_time(now)
        header = Header(stamp=now.to_msg(), frame_id=self.frame_id)
        if self._cached is not None and self._cached[0] == t:
            # frozen scene (speed 0): publish the same pixels under a new stamp, the way a
            # camera driver costs (no rendering, ~1/10 of the CPU of a live scene at 640x480)
            msgs = self._cached[1]
            for key in ("image", "compressed", "depth", "info", "labels"):
                if key in msgs:
                    msgs[key].header = header
            msgs["truth"]["stamp"] = {"sec": header.stamp.sec, "nanosec": header.stamp.nanosec}
        else:
            msgs = self._render(t, header)
            self._cached = (t, msgs)
        self.pub_image.publish(msgs["image"])
        if "compressed" in msgs:
            self.pub_compressed.publish(msgs["compressed"])
        if "depth" in msgs:
            self.pub_depth.publish(msgs["depth"])
        self.pub_info.publish(msgs["info"])
        self.pub_truth.publish(String(data=json.dumps(msgs["truth"])))
        self.pub_labels.publish(msgs["labels"])
        self.frames += 1


def main(args: list[str] | None = None) -> int:
    configure_dds()
    rclpy.init(args=args)
    return run_node("sim_camera", SimCamera, rclpy.spin, (ValueError,))


if __name__ == "__main__":
    raise SystemExit(main())
