"""Reliability suites start real nodes: share the ROS test helpers of test/ros."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros"))

pytest.importorskip("rclpy", reason="rclpy is installed by `make setup`")
pytest.importorskip("lens_ros.msg", reason="interfaces are built by `make setup`")

from ros_fixtures import launcher, probe  # noqa: E402,F401  (pytest fixtures)
