"""lens-launch: start what perception.launch.py starts, without launch_ros.

    lens-launch [name:=value ...] [--dry-run]

Same launch arguments, nodes, parameter files and remappings (lens_ros.launch_description);
each node runs as ``python -m <module> --ros-args ...`` in its own process group. Ctrl-C
(SIGINT), SIGTERM or SIGHUP is forwarded to every node's group as SIGINT; groups still
running after a grace period are terminated. When lens_node exits on its own, or a node
cannot be started, everything already started is stopped; the exit status is lens_node's
(non-zero when a node could not start).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from lens_ros.launch_description import (
    LAUNCH_ARGUMENTS,
    LENS_NODE,
    NodeSpec,
    ament_executable,
    launch_plan,
    ros_arguments,
)
from lens_ros.ros_env import configure_dds

GRACE_S = 10.0


def command_for(spec: NodeSpec) -> list[str] | None:
    """argv of one spec, or None when its executable is not available here (e.g. rviz2)."""
    if spec.module:
        return [sys.executable, "-m", spec.module, *spec.arguments, *ros_arguments(spec)]
    found = ament_executable(spec.package, spec.executable) if spec.package else shutil.which(spec.executable)
    if found is None:
        return None
    return [found, *spec.arguments, *ros_arguments(spec)]


class ProcessGroup:
    """The launched nodes: start, watch, and stop them with SIGINT then SIGTERM/SIGKILL."""

    def __init__(self, env: dict[str, str] | None = None, stdout=None, stderr=None) -> None:
        self.env = dict(os.environ if env is None else env)
        configure_dds(self.env)
        self.stdout, self.stderr = stdout, stderr
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, specs: list[NodeSpec]) -> None:
        """Start every spec; when one cannot be started, stop those already started and raise OSError."""
        for spec in specs:
            argv = command_for(spec)
            if argv is None:
                print(f"[lens-launch] skipping {spec.name}: {spec.executable} not found", file=sys.stderr)
                continue
            try:
                self.start_command(spec.name, argv)
            except OSError as exc:
                self.stop()
                raise OSError(f"cannot start {spec.name} ({argv[0]}): {exc.strerror or exc}") from exc

    def start_command(self, name: str, argv: list[str]) -> subprocess.Popen:
        # Own process group: a terminal's Ctrl-C reaches only us, and we forward it once.
        process = subprocess.Popen(argv, env=self.env, stdout=self.stdout, stderr=self.stderr, start_new_session=True)
        self.processes[name] = process
        print(f"[lens-launch] started {name} (pid {process.pid})", file=sys.stderr)
        return process

    def exited(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def stop(self, grace_s: float = GRACE_S) -> dict[str, int]:
        """SIGINT to every node's process group, then SIGTERM and SIGKILL to the groups that linger.

        A node has ``grace_s`` to exit on SIGINT; whatever is left in its group after it
        exited (a process it started itself) gets SIGTERM at once, so nothing stays behind.
        """
        stages = (
            (signal.SIGINT, grace_s, _leader_running),
            (signal.SIGTERM, 3.0, _running),
            (signal.SIGKILL, 3.0, _running),
        )
        for sig, wait_s, waits_for in stages:
            running = [p for p in self.processes.values() if _running(p)]
            if not running:
                break
            for p in running:
                _signal_group(p, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(waits_for(p) for p in running):
                time.sleep(0.05)
        return {name: p.returncode for name, p in self.processes.items()}


def _leader_running(process: subprocess.Popen) -> bool:
    return process.poll() is None


def _running(process: subprocess.Popen) -> bool:
    """The node, or any process left in its group (start_new_session: the group id is its pid)."""
    if process.poll() is None:
        return True
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # the group id was taken by a process we do not own: signal only ours
        if process.poll() is None:
            process.send_signal(sig)


def exit_status(returncode: int) -> int:
    """A child's return code as a shell exit status (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise SystemExit(f"lens-launch: expected name:=value, got {item!r}")
        values[name] = value
    return values


def main(argv: list[str] | None = None) -> int:
    help_args = "\n".join(f"  {a.name}:={a.default or repr('')}  {a.description}" for a in LAUNCH_ARGUMENTS)
    cli = argparse.ArgumentParser(
        prog="lens-launch",
        description="Start lens_node (and optionally the sim camera) like perception.launch.py.",
        epilog="launch arguments:\n" + help_args,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("arguments", nargs="*", help="name:=value launch arguments")
    cli.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    options = cli.parse_args(argv)
    try:
        plan = launch_plan(parse_launch_arguments(options.arguments))
    except ValueError as exc:
        print(f"lens-launch: {exc}", file=sys.stderr)
        return 2
    for warning in plan.warnings:
        print(f"[lens-launch] WARNING: {warning}", file=sys.stderr)
    if options.dry_run:
        for spec in plan.specs:
            argv_ = command_for(spec)
            print(shlex.join(argv_) if argv_ else f"# {spec.name}: {spec.executable} not found")
        return 0

    group = ProcessGroup()
    stop_requested = []

    def request_stop(signum, _frame):
        stop_requested.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    code = 0
    try:
        group.start(plan.specs)
        while not stop_requested:
            exited = group.exited()
            if LENS_NODE in exited or (exited and len(exited) == len(group.processes)):
                code = exit_status(exited.get(LENS_NODE, 0))
                print(
                    f"[lens-launch] {', '.join(f'{n} exited ({c})' for n, c in exited.items())}; stopping",
                    file=sys.stderr,
                )
                break
            time.sleep(0.1)
    except OSError as exc:
        print(f"[lens-launch] {exc}; stopped what was started", file=sys.stderr)
        code = 1
    finally:
        codes = group.stop()
    print(f"[lens-launch] stopped: {codes}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
