"""lens-launch: start what perception.launch.py starts, without launch_ros.

    lens-launch [name:=value ...] [--dry-run]

Same launch arguments, nodes, parameter files and remappings (lens_ros.launch_description);
each node runs as ``python -m <module> --ros-args ...``. Ctrl-C (SIGINT) or SIGTERM is
forwarded to every node as SIGINT; nodes still running after a grace period are
terminated. When lens_node exits on its own the others are stopped too.
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

from lens_ros.launch_description import LAUNCH_ARGUMENTS, LENS_NODE, NodeSpec, node_specs, ros_arguments
from lens_ros.ros_env import configure_dds

GRACE_S = 10.0


def command_for(spec: NodeSpec) -> list[str] | None:
    """argv of one spec, or None when its executable is not available here (e.g. rviz2)."""
    if spec.module:
        return [sys.executable, "-m", spec.module, *spec.arguments, *ros_arguments(spec)]
    found = shutil.which(spec.executable)
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
        for spec in specs:
            argv = command_for(spec)
            if argv is None:
                print(f"[lens-launch] skipping {spec.name}: {spec.executable} not found on PATH", file=sys.stderr)
                continue
            self.start_command(spec.name, argv)

    def start_command(self, name: str, argv: list[str]) -> subprocess.Popen:
        # Own process group: a terminal's Ctrl-C reaches only us, and we forward it once.
        process = subprocess.Popen(argv, env=self.env, stdout=self.stdout, stderr=self.stderr, start_new_session=True)
        self.processes[name] = process
        print(f"[lens-launch] started {name} (pid {process.pid})", file=sys.stderr)
        return process

    def exited(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def stop(self, grace_s: float = GRACE_S) -> dict[str, int]:
        """SIGINT to every running node, then SIGTERM and SIGKILL to those that linger."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            running = [p for p in self.processes.values() if p.poll() is None]
            if not running:
                break
            for p in running:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(p.poll() is None for p in running):
                time.sleep(0.05)
        return {name: p.returncode for name, p in self.processes.items()}


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
        specs = node_specs(parse_launch_arguments(options.arguments))
    except ValueError as exc:
        print(f"lens-launch: {exc}", file=sys.stderr)
        return 2
    if options.dry_run:
        for spec in specs:
            argv_ = command_for(spec)
            print(shlex.join(argv_) if argv_ else f"# {spec.name}: {spec.executable} not found")
        return 0

    group = ProcessGroup()
    stop_requested = []

    def request_stop(signum, _frame):
        stop_requested.append(signum)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    group.start(specs)
    code = 0
    try:
        while not stop_requested:
            exited = group.exited()
            if LENS_NODE in exited or (exited and len(exited) == len(group.processes)):
                code = exited.get(LENS_NODE, 0)
                print(
                    f"[lens-launch] {', '.join(f'{n} exited ({c})' for n, c in exited.items())}; stopping",
                    file=sys.stderr,
                )
                break
            time.sleep(0.1)
    finally:
        codes = group.stop()
    print(f"[lens-launch] stopped: {codes}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
