"""Fixtures for the operator console's tests: the console as a process, plus the ROS fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is installed by `make setup`")
pytest.importorskip("lens_ros.msg", reason="interfaces are built by `make setup`")
pytest.importorskip("aiohttp", reason="aiohttp is installed by `make setup`")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros"))

from console_fixtures import ConsoleProcess  # noqa: E402
from ros_fixtures import launcher, probe  # noqa: E402,F401  (pytest fixtures)


@pytest.fixture
def start_console(ros_env, tmp_path):
    """start_console(*args, env=None) -> a running lens-console process (stopped afterwards)."""
    started: list[ConsoleProcess] = []

    def start(*args: str, env: dict | None = None, wait: bool = True) -> ConsoleProcess:
        console = ConsoleProcess([*args], {**ros_env, **(env or {})}, tmp_path / f"console_{len(started)}.log")
        started.append(console)
        if wait:
            console.wait_ready()
        return console

    yield start
    for console in started:
        console.stop()
        print(console.output())  # shown by pytest when the test failed
