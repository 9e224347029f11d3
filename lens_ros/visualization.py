"""What a person looks at: the overlay image and the RViz markers.

``draw_overlay`` is numpy/OpenCV only (the demo and lens-predict use it too);
``target_markers`` builds a visualization_msgs/MarkerArray for one target pose.
"""

from __future__ import annotations

import cv2
import numpy as np

from lens_ros.geometry import TargetPose
from lens_ros.messages import fill_pose

MASK_COLOUR = (0, 200, 255)  # RGB
BOX_COLOUR = (255, 220, 0)
TEXT_COLOUR = (255, 255, 255)
MAX_LABEL_CHARS = 60


def draw_overlay(
    rgb: np.ndarray,
    mask: np.ndarray | None = None,
    box: np.ndarray | None = None,
    label: str = "",
    score: float | None = None,
    status: str = "",
    alpha: float = 0.5,
) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3 uint8) with the mask tinted, its outline, the box and a caption."""
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    if mask is not None and mask.any():
        colour = np.array(MASK_COLOUR, dtype=np.float32)
        region = out[mask].astype(np.float32)
        out[mask] = (region * (1.0 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, MASK_COLOUR, 1)
    scale = max(out.shape[0], out.shape[1]) / 640.0
    thickness = max(1, round(2 * scale))
    if box is not None and np.all(np.isfinite(box)):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOUR, thickness)
    caption = label[:MAX_LABEL_CHARS]
    if score is not None and caption:
        caption = f"{caption} {score:.2f}"
    if status:
        caption = f"{caption} [{status}]" if caption else f"[{status}]"
    if caption:
        font_scale = max(0.3, 0.5 * scale)
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        cv2.rectangle(out, (0, 0), (min(tw + 4, out.shape[1]), th + base + 4), (0, 0, 0), -1)
        cv2.putText(out, caption, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, TEXT_COLOUR, 1, cv2.LINE_AA)
    return out


def target_markers(header, pose: TargetPose | None, label: str, lifetime_s: float = 1.0):
    """A MarkerArray: an oriented box at the target pose and its label above it.

    With no pose, a DELETEALL marker clears what the last frame drew.
    """
    from builtin_interfaces.msg import Duration
    from visualization_msgs.msg import Marker, MarkerArray

    markers = MarkerArray()
    if pose is None:
        clear = Marker(header=header, ns="lens_target", action=Marker.DELETEALL)
        markers.markers.append(clear)
        return markers
    lifetime = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1.0) * 1e9))
    box = Marker(header=header, ns="lens_target", id=0, type=Marker.CUBE, action=Marker.ADD, lifetime=lifetime)
    fill_pose(box.pose, pose)
    box.scale.x, box.scale.y, box.scale.z = (float(max(v, 0.005)) for v in pose.extent)
    box.color.r, box.color.g, box.color.b, box.color.a = 0.0, 0.8, 1.0, 0.5
    text = Marker(
        header=header, ns="lens_target", id=1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, lifetime=lifetime
    )
    text.pose.position.x = float(pose.position[0])
    text.pose.position.y = float(pose.position[1] - max(pose.extent) * 0.5 - 0.03)  # above: -y in optical frame
    text.pose.position.z = float(pose.position[2])
    text.pose.orientation.w = 1.0
    text.scale.z = 0.04
    text.color.r = text.color.g = text.color.b = text.color.a = 1.0
    text.text = label[:MAX_LABEL_CHARS]
    markers.markers.extend([box, text])
    return markers
