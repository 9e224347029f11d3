"""Pipeline results and 3D poses -> ROS messages (no node state here).

Every string that goes on the wire is bounded: a runaway MLLM answer or an error
message with a whole traceback must not make a multi-megabyte message.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Pose, PoseStamped
from sensor_msgs.msg import PointCloud2, PointField, RegionOfInterest

from lens_ros.geometry import TargetPose
from lens_ros.image_conversion import numpy_to_image
from lens_ros.model.types import SegmentationResult

MAX_TEXT_CHARS = 8192
MAX_LABEL_CHARS = 128


INSTRUCTION_TOPIC = "/instruction"


def latched_qos():
    """Reliable + transient-local (depth 1): /instruction and ~/rationale, so a node or viewer
    that starts (or restarts) after the last message still receives it."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def bounded(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_of(result: SegmentationResult, min_score: float = 0.0) -> tuple[int, str]:
    """(Segmentation.STATUS_*, status_text) for a pipeline result."""
    from lens_ros.msg import Segmentation

    if result.parse_error and not result.tracked:
        return Segmentation.STATUS_PARSE_FALLBACK, bounded(
            f"answer not parsable ({result.parse_error}); mask from the context queries alone", 512
        )
    if result.empty:
        return Segmentation.STATUS_NO_OBJECT, "the mask is empty"
    if result.scores.size and float(result.scores.max()) < min_score:
        return (Segmentation.STATUS_NO_OBJECT, f"score {float(result.scores.max()):.3f} below min_score {min_score}")
    return Segmentation.STATUS_OK, ""


def fill_pose(msg_pose: Pose, pose: TargetPose) -> None:
    msg_pose.position.x, msg_pose.position.y, msg_pose.position.z = (float(v) for v in pose.position)
    q = pose.quaternion_xyzw
    msg_pose.orientation.x, msg_pose.orientation.y = float(q[0]), float(q[1])
    msg_pose.orientation.z, msg_pose.orientation.w = float(q[2]), float(q[3])


def box_to_roi(box_xyxy: np.ndarray, height: int, width: int) -> RegionOfInterest:
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    x1, x2 = int(np.clip(np.floor(x1), 0, width)), int(np.clip(np.ceil(x2), 0, width))
    y1, y2 = int(np.clip(np.floor(y1), 0, height)), int(np.clip(np.ceil(y2), 0, height))
    return RegionOfInterest(x_offset=x1, y_offset=y1, width=max(0, x2 - x1), height=max(0, y2 - y1), do_rectify=False)


def mask_image(mask: np.ndarray, header):
    """(H, W) bool -> mono8 Image, 255 inside."""
    return numpy_to_image(mask.astype(np.uint8) * np.uint8(255), "mono8", header)


def segmentation_message(
    header,
    instruction: str,
    result: SegmentationResult | None,
    *,
    status: int,
    status_text: str = "",
    total_ms: float = 0.0,
    depth_status: int = 0,
    depth_text: str = "",
    poses: list[TargetPose | None] | None = None,
    mask_images: list | None = None,
):
    """lens_ros/Segmentation for one frame; ``result`` None gives an empty answer with a status.

    ``depth_status``: Segmentation.DEPTH_* (0, DEPTH_NONE: no 3D attempted)."""
    from lens_ros.msg import Segmentation, SegmentedObject

    msg = Segmentation(header=header, instruction=bounded(instruction), status=int(status))
    msg.status_text = bounded(status_text, 1024)
    msg.total_ms = float(total_ms)
    msg.depth_status, msg.depth_text = int(depth_status), bounded(depth_text, 512)
    if result is None:
        return msg
    msg.rationale = bounded(result.rationale)
    msg.answer = bounded(result.answer)
    msg.tracked = bool(result.tracked)
    msg.reasoning_ms = float(result.timings.reasoning_ms)
    msg.segmentation_ms = float(result.timings.segmentation_ms)
    n = result.masks.shape[0]
    for i in range(n):
        mask = result.masks[i]
        obj = SegmentedObject()
        obj.label = bounded(result.labels[i] if i < len(result.labels) else "", MAX_LABEL_CHARS)
        obj.score = float(result.scores[i]) if i < result.scores.size else 0.0
        obj.box = box_to_roi(result.boxes[i], mask.shape[0], mask.shape[1])
        obj.mask = mask_images[i] if mask_images and i < len(mask_images) else mask_image(mask, header)
        pose = poses[i] if poses and i < len(poses) else None
        if pose is not None:
            obj.has_pose = True
            fill_pose(obj.pose, pose)
            obj.extent.x, obj.extent.y, obj.extent.z = (float(v) for v in pose.extent)
            obj.num_points = int(pose.num_points)
        msg.objects.append(obj)
    return msg


def pose_stamped(header, pose: TargetPose) -> PoseStamped:
    msg = PoseStamped(header=header)
    fill_pose(msg.pose, pose)
    return msg


def point_cloud(header, points: np.ndarray, rgb: np.ndarray | None = None) -> PointCloud2:
    """Unorganised PointCloud2 of (N, 3) float32 points, with packed rgb if (N, 3) uint8 colours are given."""
    points = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    ]
    if rgb is not None:
        rgb = np.asarray(rgb, dtype=np.uint32).reshape(-1, 3)
        packed = ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).astype("<u4")
        data = np.empty(len(points), dtype=[("xyz", "<f4", 3), ("rgb", "<u4")])
        data["xyz"], data["rgb"] = points, packed
        fields.append(PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1))
        step = 16
    else:
        data = points.astype("<f4")
        step = 12
    return PointCloud2(
        header=header,
        height=1,
        width=len(points),
        fields=fields,
        is_bigendian=False,
        point_step=step,
        row_step=step * len(points),
        data=data.tobytes(),
        is_dense=True,
    )


def cloud_to_numpy(msg: PointCloud2) -> np.ndarray:
    """(N, 3) float32 xyz of a cloud made by ``point_cloud`` (tests, demo)."""
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(-1, msg.point_step)
    return np.ascontiguousarray(raw[:, :12]).view("<f4").reshape(-1, 3)


def diagnostic_array(stamp, name: str, hardware_id: str, level: int, message: str, values: dict):
    """DiagnosticArray with one status (key/values stringified and bounded)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(level=bytes([level]), name=name, message=bounded(message, 512), hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=bounded(_fmt(v), 512)) for k, v in values.items()]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
