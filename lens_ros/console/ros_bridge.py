"""The console's rclpy node: the lens node's outputs into ``ConsoleState``, instructions out.

What a page needs is far less than what the lens node sends at the camera's rate (an
overlay and an answer with its mask for each frame, ~1.2 MB at 640x480), and rclpy's
executor costs about a millisecond per message however small, so the console takes:
- the overlay as JPEG from ``~/overlay/compressed``, which the node draws and encodes only
  while subscribed, at most ``overlay_compressed_max_hz`` (10 by default): forwarded to the
  browsers as it is, never decoded here;
- every answer that is not a tracked, good frame (a reasoned answer, a refusal, a parse
  fallback, no object, an error) from a content-filtered ``~/segmentation`` subscription:
  DDS drops the tracked frames before they reach Python (where the middleware has no content
  filter, the callback applies the same rule);
- the newest tracked frame ``status_hz`` times a second, taken from a depth-1 reader that no
  executor waits on (DDS keeps only the newest sample, nothing wakes this process per frame);
- the tracking rate from the node's own ``/diagnostics`` (``tracked_hz``);
- the target pose from the answers themselves (no ``~/target_pose``: one more message a frame).
"""

from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.subscription import ContentFilterOptions
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String

from lens_ros.console.config import ConsoleConfig, declare_parameters
from lens_ros.console.state import Answer, ConsoleState
from lens_ros.messages import INSTRUCTION_TOPIC, latched_qos
from lens_ros.msg import Segmentation
from lens_ros.node_inputs import clean_instruction

NODE_NAME = "lens_console"
# The lens node's private output topics (lens_ros/node.py), under its name.
OUTPUTS = ("overlay/compressed", "segmentation", "rationale", "rationale_stream")
DIAGNOSTICS_TOPIC = "/diagnostics"
# Answers the console must see every one of (DDS content filter, SQL subset of the DDS spec);
# is_event is the same rule in Python.
EVENT_FILTER = ContentFilterOptions(
    filter_expression="tracked = %0 OR status <> %1",
    expression_parameters=["FALSE", str(Segmentation.STATUS_OK)],
)


def output_topic(lens_node: str, name: str) -> str:
    return f"/{lens_node.strip('/')}/{name}"


def is_event(msg: Segmentation) -> bool:
    """An answer every one of which the page shows: not a tracked frame with a good mask."""
    return not msg.tracked or msg.status != Segmentation.STATUS_OK


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class ConsoleBridge(Node):
    def __init__(self, defaults: ConsoleConfig | None = None, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._sampler: Node | None = None
        self.config = declare_parameters(self, defaults)  # ValueError on a bad setting
        self.state = ConsoleState(self.config.history_size)
        self._publish_lock = threading.Lock()
        self._newest_stamp = -1  # of the answers shown, so a late sample never overwrites a newer answer
        self.answers_shown = 0
        lens = self.config.lens_node
        self.instruction_pub = self.create_publisher(String, INSTRUCTION_TOPIC, latched_qos())
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, latched_qos())
        # Depth 1, best effort: only the newest overlay matters, and a late one is worthless.
        overlay_qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
        self.create_subscription(
            CompressedImage, output_topic(lens, "overlay/compressed"), self._on_overlay, overlay_qos
        )
        segmentation = output_topic(lens, "segmentation")
        self.events = self.create_subscription(
            Segmentation, segmentation, self._on_event, 10, content_filter_options=EVENT_FILTER
        )
        # A node no executor spins: its reader holds the newest answer until the timer takes it.
        # Global arguments (a launch file's __node remap) are not applied to it: names stay apart.
        self._sampler = Node(
            f"{self.get_name()}_sampler",
            namespace=self.get_namespace(),
            context=self.context,
            use_global_arguments=False,
            start_parameter_services=False,
        )
        self._tracked = self._sampler.create_subscription(Segmentation, segmentation, lambda _msg: None, 1)
        self.create_timer(1.0 / self.config.status_hz, self._take_tracked)
        self.create_subscription(String, output_topic(lens, "rationale"), self._on_rationale, latched_qos())
        self.create_subscription(String, output_topic(lens, "rationale_stream"), self._on_stream, 10)
        self.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
        self._diagnostics_prefix = f"{lens.strip('/').split('/')[-1]}:"

    def destroy_node(self) -> None:
        if self._sampler is not None:
            self._sampler.destroy_node()
        super().destroy_node()

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

    def _on_overlay(self, msg: CompressedImage) -> None:
        data = msg.data
        self.state.on_overlay(data.tobytes() if hasattr(data, "tobytes") else bytes(data))

    def _on_event(self, msg: Segmentation) -> None:
        if is_event(msg):  # always true where DDS filtered; the same rule where it could not
            self._show(msg)

    def _take_tracked(self) -> None:
        # rclpy's own wait_for_message takes this way; None when nothing new arrived.
        taken = self._tracked.handle.take_message(self._tracked.msg_type, self._tracked.raw)
        if taken is not None and not is_event(taken[0]):  # events arrive through their own reader
            self._show(taken[0])

    def _show(self, msg: Segmentation) -> None:
        stamp = stamp_ns(msg)
        if not is_event(msg) and stamp <= self._newest_stamp:
            return  # a tracked frame older than an answer already shown
        self._newest_stamp = max(self._newest_stamp, stamp)
        self.answers_shown += 1
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
