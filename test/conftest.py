"""Fixtures shared by every suite: isolated ROS 2 environments and tiny models.

Each test session gets its own ROS_DOMAIN_ID, localhost-only discovery, a temporary
ROS_LOG_DIR and the shipped Fast DDS profile, so parallel runs and other machines'
traffic never meet. Every rclpy test gets a fresh Context.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lens_ros.ros_env import configure_dds  # noqa: E402

# Configure this process before anything imports rclpy: Fast DDS reads the profile
# variable once per process.
_DOMAIN_ID = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little")).randint(1, 100)
_ISOLATION = {
    "ROS_DOMAIN_ID": str(_DOMAIN_ID),
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
}
os.environ.update(_ISOLATION)
configure_dds()


@pytest.fixture(scope="session")
def ros_log_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ros_log")
    os.environ["ROS_LOG_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def ros_env(ros_log_dir) -> dict[str, str]:
    """Environment for child processes: same isolated domain, profile and log dir."""
    env = dict(os.environ)
    env.update(_ISOLATION)
    env["ROS_LOG_DIR"] = str(ros_log_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    configure_dds(env)
    return env


@pytest.fixture
def rclpy_context(ros_env):
    """A fresh rclpy Context for one test, shut down afterwards."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is installed by `make setup`")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny random LENS model saved as a real bundle (SAM segmenter)."""
    from lens_ros.model.tiny import build_tiny_random_bundle

    return build_tiny_random_bundle(tmp_path_factory.mktemp("tiny_bundle"), seed=0)
