"""Fixtures for ROS integration tests (helpers live in ros_fixtures.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy is installed by `make setup`")
pytest.importorskip("lens_ros.msg", reason="interfaces are built by `make setup`")

from ros_fixtures import Launcher, Probe


@pytest.fixture
def launcher(ros_env, tmp_path):
    launcher = Launcher(ros_env, tmp_path)
    yield launcher
    launcher.stop_all()
    print(launcher.logs())  # shown by pytest when the test failed


@pytest.fixture(scope="module")
def module_launcher(ros_env, tmp_path_factory):
    launcher = Launcher(ros_env, tmp_path_factory.mktemp("nodes"))
    yield launcher
    launcher.stop_all()
    print(launcher.logs())


@pytest.fixture
def probe(rclpy_context):
    probe = Probe(rclpy_context)
    yield probe
    probe.close()
