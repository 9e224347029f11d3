"""Depth image + mask + intrinsics -> the object's 3D points and pose (camera frame).

Pure numpy (+ transforms3d for the quaternion); no ROS. Conventions: the optical
camera frame (x right, y down, z forward), metres, quaternions as (x, y, z, w) in the
returned ``TargetPose`` to match geometry_msgs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transforms3d.quaternions import mat2quat

from lens_ros.model.types import BadInputError

# The mask's border pixels often see the background through depth edges; dropping
# points farther than this from the median depth keeps the pose on the object.
DEPTH_OUTLIER_M = 0.15
MIN_POINTS = 10


@dataclass
class TargetPose:
    position: np.ndarray  # (3,) centroid, metres
    quaternion_xyzw: np.ndarray  # (4,) rotation of the principal axes
    axes: np.ndarray  # (3, 3) columns: major, middle, minor axis (right-handed)
    extent: np.ndarray  # (3,) size along each axis, metres
    num_points: int


def depth_to_metres(depth: np.ndarray, encoding: str, depth_scale: float = 0.001) -> np.ndarray:
    """float32 metres with NaN where the sensor gave no reading (0, NaN, inf)."""
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise BadInputError(f"depth image must be single-channel, got shape {depth.shape}")
    if encoding in ("16UC1", "mono16"):
        metres = depth.astype(np.float32) * np.float32(depth_scale)
    elif encoding == "32FC1":
        metres = depth.astype(np.float32, copy=True)
    else:
        raise BadInputError(f"depth encoding {encoding!r} not supported (16UC1 mm or 32FC1 m)")
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def intrinsics_for(k: np.ndarray, info_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Scale a 3x3 K given for ``info_size`` (h, w) to ``image_size`` (h, w)."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3).copy()
    (ih, iw), (h, w) = info_size, image_size
    if ih > 0 and iw > 0 and (ih, iw) != (h, w):
        k[0] *= w / iw
        k[1] *= h / ih
        k[2] = (0.0, 0.0, 1.0)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise BadInputError(f"camera_info has no valid focal length (K={k.ravel().tolist()})")
    return k


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2D array to (h, w) without mixing depth values."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    rows = (np.arange(h) * array.shape[0] / h).astype(np.int64)
    cols = (np.arange(w) * array.shape[1] / w).astype(np.int64)
    return array[rows[:, None], cols[None, :]]


def masked_points(
    mask: np.ndarray,
    depth_m: np.ndarray,
    k: np.ndarray,
    min_depth: float = 0.05,
    max_depth: float = 10.0,
    reject_outliers: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project the masked pixels that have valid depth.

    mask: (H, W) bool; depth_m: float metres, resized to (H, W) if needed; k: 3x3 for (H, W).
    Returns (points (N, 3) float32, pixel indices (N, 2) as (row, col)).
    """
    depth_m = resize_nearest(depth_m, mask.shape)
    with np.errstate(invalid="ignore"):
        valid = mask & np.isfinite(depth_m) & (depth_m >= min_depth) & (depth_m <= max_depth)
    rows, cols = np.nonzero(valid)
    z = depth_m[rows, cols].astype(np.float64)
    if reject_outliers and z.size:
        keep = np.abs(z - np.median(z)) <= DEPTH_OUTLIER_M
        rows, cols, z = rows[keep], cols[keep], z[keep]
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    x = (cols - cx) * z / fx
    y = (rows - cy) * z / fy
    points = np.stack([x, y, z], axis=1).astype(np.float32)
    return points, np.stack([rows, cols], axis=1)


def principal_pose(points: np.ndarray) -> TargetPose:
    """Centroid and principal axes of a point set.

    Axis signs are fixed so the pose is stable from frame to frame: the minor axis
    points back towards the camera and the major axis has a non-negative x.
    """
    if points.shape[0] < MIN_POINTS:
        raise BadInputError(f"only {points.shape[0]} valid depth points under the mask (need {MIN_POINTS})")
    pts = points.astype(np.float64)
    centroid = pts.mean(axis=0)
    centred = pts - centroid
    cov = centred.T @ centred / max(len(pts) - 1, 1)
    _, eigvecs = np.linalg.eigh(cov)  # eigenvalues ascending
    major, middle, minor = eigvecs[:, 2], eigvecs[:, 1], eigvecs[:, 0]
    if np.dot(minor, -centroid) < 0:
        minor = -minor
    if major[0] < 0 or (major[0] == 0 and major[1] < 0):
        major = -major
    middle = np.cross(minor, major)
    axes = np.stack([major, middle, minor], axis=1)
    proj = centred @ axes
    lo, hi = np.percentile(proj, [2, 98], axis=0)
    w, x, y, z = mat2quat(axes)
    return TargetPose(
        position=centroid.astype(np.float64),
        quaternion_xyzw=np.array([x, y, z, w], dtype=np.float64),
        axes=axes,
        extent=(hi - lo).astype(np.float64),
        num_points=len(pts),
    )


def behind_visible_surface(pose: TargetPose) -> TargetPose:
    """The pose moved away from the camera by half the object's depth extent.

    A camera sees only the near side of an object, so the centroid of its points lies in
    front of the object's centre; this estimate of the centre halves that error on the
    synthetic world (mean 1.8 -> 0.9 cm).
    """
    ray = pose.position / max(float(np.linalg.norm(pose.position)), 1e-9)
    moved = pose.position + ray * 0.5 * float(pose.extent[2])
    return TargetPose(moved, pose.quaternion_xyzw, pose.axes, pose.extent, pose.num_points)


def subsample(points: np.ndarray, max_points: int) -> np.ndarray:
    """At most ``max_points`` rows, evenly strided (deterministic)."""
    if len(points) <= max_points:
        return points
    idx = np.linspace(0, len(points) - 1, max_points).astype(np.int64)
    return points[idx]
