"""Helpers for ROS integration tests: processes started like lens-launch, and a probe node.

Processes inherit the session's isolated environment (random ROS_DOMAIN_ID, localhost
discovery, temporary ROS_LOG_DIR, the Fast DDS profile) from ``ros_env``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from lens_ros.launch_cli import ProcessGroup, command_for
from lens_ros.launch_description import NodeSpec, node_specs, ros_arguments

ORACLE = Path(__file__).with_name("oracle_pipeline.py")
SCENE = {"seed": 3, "t": 2.0, "width": 320, "height": 240}


def node_reports(diags: list, node: str = "lens_node") -> list[tuple[float, dict[str, str]]]:
    """(arrival time, key -> value) of every /diagnostics status from ``node`` in ``diags``
    (a probe's received (time, DiagnosticArray) list), oldest first."""
    return [(t, {kv.key: kv.value for kv in s.values}) for t, m in diags for s in m.status if s.name.startswith(node)]


def oracle_env(scene: dict = SCENE) -> dict[str, str]:
    return {"LENS_ORACLE_SCENE": f"{scene['seed']},{scene['t']},{scene['width']},{scene['height']}"}


def frozen_camera_parameters(scene: dict = SCENE, **extra) -> dict:
    """sim_camera parameters for the still scene the oracle knows."""
    return {
        "seed": scene["seed"],
        "speed": 0.0,
        "start_time": scene["t"],
        "width": scene["width"],
        "height": scene["height"],
        "rate_hz": 15.0,
        **extra,
    }


class Launcher:
    """Starts NodeSpecs as processes (lens_node runs with the oracle when asked); logs to files."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.groups: list[tuple[ProcessGroup, object]] = []

    def start(self, specs: list[NodeSpec], *, oracle: bool = False, extra_env: dict | None = None) -> ProcessGroup:
        env = {**self.env, **(extra_env or {})}
        log = open(self.log_dir / f"nodes_{len(self.groups)}.log", "w")  # noqa: SIM115 - closed in stop_all
        group = ProcessGroup(env, stdout=log, stderr=subprocess.STDOUT)
        for spec in specs:
            if oracle and spec.module == "lens_ros.node":
                group.start_command(spec.name, [sys.executable, str(ORACLE), *spec.arguments, *ros_arguments(spec)])
            else:
                group.start_command(spec.name, command_for(spec))
        self.groups.append((group, log))
        return group

    def logs(self) -> str:
        return "\n".join(Path(log.name).read_text()[-4000:] for _, log in self.groups)

    def stop_all(self) -> None:
        for group, log in self.groups:
            group.stop(grace_s=5.0)
            log.close()
        self.groups.clear()


class Probe:
    """A node in the test process that records what arrives on topics."""

    def __init__(self, context, name: str = "lens_probe") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = defaultdict(list)

    def subscribe(self, msg_type, topic: str, qos=10) -> list:
        self.node.create_subscription(
            msg_type, topic, lambda m: self.received[topic].append((time.monotonic(), m)), qos
        )
        return self.received[topic]

    def spin_until(self, predicate, timeout: float, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
            value = predicate()
            if value:
                return value
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what}; received: "
            + ", ".join(f"{k}: {len(v)}" for k, v in self.received.items())
        )

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def instruction_qos():
    from lens_ros.messages import latched_qos

    return latched_qos()


# -- pytest fixtures (imported by the conftest.py of every suite that starts nodes) ---------
import pytest  # noqa: E402


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


__all__ = ["SCENE", "Launcher", "Probe", "frozen_camera_parameters", "instruction_qos", "node_specs", "oracle_env"]
