"""Fixtures for ROS integration tests (helpers and fixtures live in ros_fixtures.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy is installed by `make setup`")
pytest.importorskip("lens_ros.msg", reason="interfaces are built by `make setup`")

from ros_fixtures import launcher, module_launcher, probe  # noqa: E402,F401  (pytest fixtures)
