"""What the node publishes for one answer, and the answer itself.

``Answer`` is everything one instruction on one frame produced: the model's result, its
status, the mask and, with depth, the target's pose and points. ``build_answer`` makes it
(the topic path and the ``~/segment`` service both call it, so they cannot disagree);
``Outputs`` owns the publishers and sends an answer to each enabled topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from lens_ros import geometry, messages, visualization
from lens_ros.geometry import TargetPose
from lens_ros.image_conversion import numpy_to_compressed, numpy_to_image
from lens_ros.model.types import BadInputError, SegmentationResult
from lens_ros.msg import Segmentation
from lens_ros.node_config import NodeConfig
from lens_ros.node_inputs import DecodedFrame
from lens_ros.node_stats import NodeStats
from lens_ros.rate_limit import RateLimiter

OUTPUT_QOS = 10
USABLE_STATUSES = (Segmentation.STATUS_OK, Segmentation.STATUS_PARSE_FALLBACK)


@dataclass
class Answer:
    """One instruction answered on one frame (what every output is made from)."""

    frame: DecodedFrame
    instruction: str
    result: SegmentationResult
    status: int
    status_text: str
    mask: np.ndarray  # (H, W) bool: the first object's mask, all False when there is none
    pose: TargetPose | None = None
    points: np.ndarray | None = None  # (N, 3) metres, the object's depth points
    pixels: np.ndarray | None = None  # (N, 2) their (row, col)
    total_ms: float = 0.0
    depth_status: int = Segmentation.DEPTH_NONE  # Segmentation.DEPTH_*: whether the answer has 3D
    depth_text: str = ""  # why not, when depth was expected

    @property
    def usable(self) -> bool:
        return self.status in USABLE_STATUSES

    @property
    def label(self) -> str:
        return self.result.labels[0] if self.result.labels else self.instruction

    def message(self, mask_image: Image | None = None) -> Segmentation:
        """The lens_ros/Segmentation of this answer."""
        return messages.segmentation_message(
            self.frame.header,
            self.instruction,
            self.result,
            status=self.status,
            status_text=self.status_text,
            total_ms=self.total_ms,
            depth_status=self.depth_status,
            depth_text=self.depth_text,
            poses=[self.pose],
            mask_images=[mask_image] if mask_image is not None else None,
        )


def build_answer(
    config: NodeConfig,
    frame: DecodedFrame,
    instruction: str,
    result: SegmentationResult,
    received: float,
    depth: tuple[int, str] = (Segmentation.DEPTH_NONE, ""),
) -> Answer:
    """Status, mask and (with the frame's depth) the target's pose for a model result.

    ``depth``: (Segmentation.DEPTH_*, reason) of attaching the frame's depth; DEPTH_OK means
    ``frame.depth_m`` and ``frame.k`` are set. The answer's depth_status is DEPTH_OK only
    when it has a pose; a usable mask without 3D keeps its status (the mask is still right).
    """
    status, status_text = messages.status_of(result, config.min_score)
    mask = result.masks[0] if result.masks.shape[0] else np.zeros(frame.rgb.shape[:2], bool)
    answer = Answer(frame, instruction, result, status, status_text, mask)
    answer.depth_status, answer.depth_text = depth
    if not (answer.usable and mask.any()):
        answer.depth_status, answer.depth_text = Segmentation.DEPTH_NONE, ""
    elif answer.depth_status == Segmentation.DEPTH_OK:
        points, pixels = geometry.masked_points(mask, frame.depth_m, frame.k, config.min_depth_m, config.max_depth_m)
        try:
            pose = geometry.principal_pose(points)
        except BadInputError as exc:
            answer.depth_status, answer.depth_text = Segmentation.DEPTH_NO_POINTS, f"no pose: {exc}"
        else:
            answer.pose = geometry.behind_visible_surface(pose) if config.pose_position == "centre" else pose
            answer.points, answer.pixels = points, pixels
    answer.total_ms = (time.monotonic() - received) * 1000.0
    return answer


def throttled_rationale(period_s: float, send: Callable[[str], None]) -> Callable[[str], None]:
    """``~/rationale_stream``'s rule: a partial rationale is sent when it is new and at least
    ``period_s`` after the last one sent (the final text goes to ``~/rationale`` anyway)."""
    last = [0.0, ""]

    def publish(text: str) -> None:
        now = time.monotonic()
        if text and text != last[1] and now - last[0] >= period_s:
            last[0], last[1] = now, text
            send(messages.bounded(text))

    return publish


class Outputs:
    """The node's publishers (``~/segmentation`` and the optional visual and 3D topics)."""

    def __init__(self, node: Node, stats: NodeStats) -> None:
        self.stats = stats
        self.segmentation = node.create_publisher(Segmentation, "~/segmentation", OUTPUT_QOS)
        self.mask = node.create_publisher(Image, "~/mask", OUTPUT_QOS)
        self.overlay = node.create_publisher(Image, "~/overlay", OUTPUT_QOS)
        # image_transport's name for the JPEG twin: RViz and web viewers off the robot take it.
        self.overlay_compressed = node.create_publisher(CompressedImage, "~/overlay/compressed", OUTPUT_QOS)
        self._compressed_rate = RateLimiter(NodeConfig.overlay_compressed_max_hz)
        self.rationale = node.create_publisher(String, "~/rationale", messages.latched_qos())
        self.rationale_stream = node.create_publisher(String, "~/rationale_stream", OUTPUT_QOS)
        self.markers = node.create_publisher(MarkerArray, "~/markers", OUTPUT_QOS)
        self.pose = node.create_publisher(PoseStamped, "~/target_pose", OUTPUT_QOS)
        self.cloud = node.create_publisher(PointCloud2, "~/target_cloud", OUTPUT_QOS)
        self.all = [self.segmentation, self.mask, self.overlay, self.overlay_compressed, self.rationale]
        self.all += [self.rationale_stream, self.markers, self.pose, self.cloud]

    def publish(self, answer: Answer, config: NodeConfig) -> None:
        """Every enabled output of ``answer``, all stamped with its frame's header."""
        header, result = answer.frame.header, answer.result
        mask_msg = messages.mask_image(answer.mask, header)
        self.segmentation.publish(answer.message(mask_msg))
        if config.publish_mask:
            self.mask.publish(mask_msg)
        if config.publish_rationale and not result.tracked:
            self.rationale.publish(String(data=messages.bounded(result.rationale or result.answer)))
        if config.publish_overlay:
            self._publish_overlays(answer, config)
        if answer.frame.depth_m is not None:
            self._publish_3d(answer, config)

    def _publish_overlays(self, answer: Answer, config: NodeConfig) -> None:
        """``~/overlay`` with every answer and ``~/overlay/compressed`` at most
        ``overlay_compressed_max_hz``, each only while subscribed: drawing a 640x480 overlay
        costs ~4 ms and JPEG ~3 ms more, a tenth of a core at 30 Hz that nobody may be watching."""
        raw = self.overlay.get_subscription_count() > 0
        self._compressed_rate.set_rate(config.overlay_compressed_max_hz)
        jpeg = self.overlay_compressed.get_subscription_count() > 0 and self._compressed_rate.take()
        if not (raw or jpeg):
            return
        self.stats.event("overlay_drawn")  # /diagnostics: overlay_drawn_hz, _count
        result = answer.result
        box = result.boxes[0] if answer.usable and result.boxes.shape[0] else None
        score = float(result.scores[0]) if result.scores.size else None
        overlay = visualization.draw_overlay(
            answer.frame.rgb,
            answer.mask if answer.usable else None,
            box,
            answer.label,
            score,
            "tracked" if result.tracked else "",
            config.overlay_alpha,
        )
        header = answer.frame.header
        if raw:
            self.overlay.publish(numpy_to_image(overlay, "rgb8", header))
        if jpeg:
            self.overlay_compressed.publish(numpy_to_compressed(overlay, "jpeg", header, config.overlay_jpeg_quality))

    def _publish_3d(self, answer: Answer, config: NodeConfig) -> None:
        """Markers (cleared when there is no pose), target pose and the object's coloured points."""
        header, pose = answer.frame.header, answer.pose
        if config.publish_markers:
            self.markers.publish(visualization.target_markers(header, pose, answer.label))
        if pose is not None and config.publish_pose:
            self.pose.publish(messages.pose_stamped(header, pose))
        if pose is not None and config.publish_cloud:
            keep = geometry.subsample(np.arange(len(answer.points)), config.max_cloud_points)
            colours = answer.frame.rgb[answer.pixels[keep, 0], answer.pixels[keep, 1]]
            self.cloud.publish(messages.point_cloud(header, answer.points[keep], colours))

    def publish_status(self, header: Header, instruction: str, status: int, text: str) -> None:
        """An answer without a result (bad input, an error): status and its text only."""
        self.segmentation.publish(
            messages.segmentation_message(header, instruction, None, status=status, status_text=text)
        )
