"""Depth + mask + intrinsics -> 3D pose, checked against the synthetic world's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from lens_ros import geometry
from lens_ros.model.types import BadInputError
from lens_ros.sim_camera import ros_intrinsics
from lens_ros.world.scene import SceneAnimator


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_pose_of_ground_truth_masks_is_within_a_few_cm(seed):
    frame = SceneAnimator(seed, size=(320, 240)).frame(1.0)
    k = ros_intrinsics(frame.K)
    for obj in frame.objects:
        if obj.visible_fraction < 0.6:
            continue
        points, _ = geometry.masked_points(obj.mask, frame.depth, k)
        pose = geometry.principal_pose(points)
        error = np.linalg.norm(pose.position - obj.center)
        # The visible surface is nearer than the object's centre by up to its radius.
        assert error < 0.04, f"{obj.name}: {error * 100:.1f} cm from the ground-truth centre"
        assert np.allclose(pose.axes.T @ pose.axes, np.eye(3), atol=1e-6)
        assert np.linalg.det(pose.axes) > 0.999, "axes must be right-handed"
        assert np.isclose(np.linalg.norm(pose.quaternion_xyzw), 1.0)
        assert pose.axes[:, 2] @ -pose.position > 0, "minor axis points back at the camera"


def test_16uc1_millimetres_and_invalid_readings():
    depth = np.array([[0, 1000], [65535, 500]], np.uint16)
    metres = geometry.depth_to_metres(depth, "16UC1", 0.001)
    assert np.isnan(metres[0, 0]) and metres[0, 1] == pytest.approx(1.0) and metres[1, 1] == pytest.approx(0.5)
    floats = geometry.depth_to_metres(np.array([[np.nan, np.inf], [-1.0, 2.0]], np.float32), "32FC1")
    assert np.isnan(floats[:, 0]).all() and np.isnan(floats[0, 1]) and floats[1, 1] == 2.0
    with pytest.raises(BadInputError, match="not supported"):
        geometry.depth_to_metres(depth, "rgb8")


def test_all_nan_depth_under_the_mask_is_a_clear_error():
    mask = np.ones((20, 20), bool)
    points, _ = geometry.masked_points(mask, np.full((20, 20), np.nan, np.float32), np.diag([100.0, 100.0, 1.0]))
    with pytest.raises(BadInputError, match="valid depth points"):
        geometry.principal_pose(points)


def test_intrinsics_follow_a_resized_image_and_reject_zero_focal():
    k = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    half = geometry.intrinsics_for(k, (480, 640), (240, 320))
    assert half[0, 0] == 250.0 and half[0, 2] == pytest.approx(159.75)
    with pytest.raises(BadInputError, match="focal"):
        geometry.intrinsics_for(np.zeros((3, 3)), (480, 640), (480, 640))


def test_a_flat_square_gives_its_plane_normal_and_size():
    k = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    depth = np.full((100, 100), 2.0, np.float32)
    mask = np.zeros((100, 100), bool)
    mask[30:70, 40:60] = True  # 40 x 20 px at f = 100 px, 2 m: 0.8 m tall, 0.4 m wide
    pose = geometry.principal_pose(geometry.masked_points(mask, depth, k)[0])
    assert np.allclose(pose.axes[:, 2], [0, 0, -1], atol=1e-6)
    assert np.allclose(np.abs(pose.axes[:, 0]), [0, 1, 0], atol=1e-6)
    assert pose.extent[0] == pytest.approx(0.78, abs=0.03) and pose.extent[1] == pytest.approx(0.38, abs=0.03)
    assert pose.extent[2] < 1e-6 and pose.position[2] == pytest.approx(2.0)


def test_centre_estimate_is_closer_to_the_object_centre_than_the_surface_centroid():
    surface, centre = [], []
    for seed in range(6):
        frame = SceneAnimator(seed, size=(320, 240)).frame(1.0)
        k = ros_intrinsics(frame.K)
        for obj in frame.objects:
            if obj.visible_fraction < 0.6:
                continue
            pose = geometry.principal_pose(geometry.masked_points(obj.mask, frame.depth, k)[0])
            surface.append(np.linalg.norm(pose.position - obj.center))
            centre.append(np.linalg.norm(geometry.behind_visible_surface(pose).position - obj.center))
    assert np.mean(centre) < 0.7 * np.mean(surface), (np.mean(surface), np.mean(centre))
    assert max(centre) < 0.035
