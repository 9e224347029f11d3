"""The console's rclpy node: the lens node's outputs into ``ConsoleState``, instructions out.

Callbacks only copy a few fields into the state. The target pose is read from
``~/segmentation`` (each answer carries it): a ``~/target_pose`` subscription would add one
message a frame to this process. The overlay is taken serialized (``raw=True``): a 640x480
rgb8 frame is deserialized and JPEG-encoded only when a browser is about to be sent one (at
most ``max_fps``), not for each of the camera's frames.
"""

from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from lens_ros.console.config import ConsoleConfig, declare_parameters
from lens_ros.console.state import Answer, ConsoleState
from lens_ros.messages import INSTRUCTION_TOPIC, latched_qos
from lens_ros.msg import Segmentation
from lens_ros.node_inputs import clean_instruction

NODE_NAME = "lens_console"
# The lens node's private output topics (lens_ros/node.py), under its name.
OUTPUTS = ("overlay", "segmentation", "rationale", "rationale_stream")
DIAGNOSTICS_TOPIC = "/diagnostics"


def output_topic(lens_node: str, name: str) -> str:
    return f"/{lens_node.strip('/')}/{name}"


class ConsoleBridge(Node):
    def __init__(self, defaults: ConsoleConfig | None = None, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.config = declare_parameters(self, defaults)
        self.state = state = ConsoleState(self.config.history_size)
        self._publish_lock = threading.Lock()
        lens = self.config.lens_node
        self.instruction_pub = self.create_publisher(String, INSTRUCTION_TOPIC, latched_qos())
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, latched_qos())
        # Depth 1, best effort: only the newest overlay matters, and a late one is worthless.
        overlay_qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
        self.create_subscription(Image, output_topic(lens, "overlay"), state.on_overlay, overlay_qos, raw=True)
        self.create_subscription(Segmentation, output_topic(lens, "segmentation"), self._on_segmentation, 10)
        self.create_subscription(String, output_topic(lens, "rationale"), self._on_rationale, latched_qos())
        self.create_subscription(String, output_topic(lens, "rationale_stream"), self._on_stream, 10)
        self.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
        self._diagnostics_prefix = f"{lens.strip('/').split('/')[-1]}:"

    def publish_instruction(self, raw: str) -> str:
        """Publish one instruction typed on the page; returns "" or why it was refused.

        The text is cleaned and bounded by the node's own rule, so the history shows
        what the node will answer."""
        text, problem = clean_instruction(raw, self.config.max_instruction_length)
        if problem:
            return problem
        with self._publish_lock:  # called from the web server's thread
            self.state.on_instruction(text, "console")
            self.instruction_pub.publish(String(data=text))
        return ""

    # -- callbacks (executor thread) --------------------------------------------------
    def _on_instruction(self, msg: String) -> None:
        self.state.on_instruction(msg.data, "topic")

    def _on_segmentation(self, msg: Segmentation) -> None:
        first = msg.objects[0] if msg.objects else None
        box = (first.box.x_offset, first.box.y_offset, first.box.width, first.box.height) if first else None
        self.state.on_answer(
            Answer(
                instruction=msg.instruction,
                status=int(msg.status),
                status_text=msg.status_text,
                tracked=bool(msg.tracked),
                rationale=msg.rationale,
                answer=msg.answer,
                reasoning_ms=float(msg.reasoning_ms),
                total_ms=float(msg.total_ms),
                label=first.label if first else "",
                score=float(first.score) if first else 0.0,
                box=box,
            )
        )
        if first is not None and first.has_pose:
            self._on_pose(msg.header.frame_id, first.pose)

    def _on_rationale(self, msg: String) -> None:
        self.state.on_rationale(msg.data)

    def _on_stream(self, msg: String) -> None:
        self.state.on_rationale_partial(msg.data)

    def _on_pose(self, frame_id: str, pose) -> None:
        p, q = pose.position, pose.orientation
        self.state.on_pose(frame_id, (p.x, p.y, p.z), (q.x, q.y, q.z, q.w))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(self._diagnostics_prefix):
                level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
                self.state.on_diagnostics(level, status.message, {kv.key: kv.value for kv in status.values})


def overlay_jpeg(serialized: bytes, quality: int) -> bytes:
    """A serialized sensor_msgs/Image (as the raw subscription gives it) -> JPEG bytes."""
    import cv2
    from rclpy.serialization import deserialize_message

    from lens_ros.image_conversion import image_to_numpy, to_rgb8

    msg = deserialize_message(serialized, Image)
    rgb = to_rgb8(image_to_numpy(msg), msg.encoding)
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding of a {msg.width}x{msg.height} {msg.encoding} overlay failed")
    return data.tobytes()
