"""What the operator console costs the node: first-mask latency and CPU share, with and without it.

sim_camera (640x480, 30 Hz, frozen scene) and lens_node run throughout; lens-console, with
one viewer connected to it (a WebSocket client in a process of its own that reads every
state update and overlay JPEG, as a browser tab does: without a tab the console encodes
nothing), is started and stopped between blocks, without/with/with/without/..., so the
machine's drift (other processes, thermal) falls on both sides alike. In each block, from a
third process: instruction published on /instruction -> first reasoned ``~/segmentation``
received, for the same few instructions in every block, then the lens node's CPU share while it tracks at the
camera's rate (its process's user + system time from /proc over the window's wall time;
100 % = one core). The console's own CPU share is reported beside it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

from bench.ros_bench import SCENE_SEED, scene_instructions

SIZE = (640, 480)
RATE_HZ = 30.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Viewer:
    """A browser tab's share of the console's work, in a process of its own (as a browser is):
    one WebSocket, every state update and overlay JPEG read; counts reported when stopped."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.console_bench", url], stdout=subprocess.PIPE, text=True
        )
        self.frames, self.updates, self.seconds = 0, 0, 0.0

    def wait_connected(self) -> None:
        line = self.process.stdout.readline()
        if line.strip() != "connected":
            raise RuntimeError(f"the viewer did not connect to the console (exit {self.process.wait()})")

    def stop(self) -> Viewer:
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=30)
        frames, updates, seconds = out.split()[-3:]
        self.frames, self.updates, self.seconds = int(frames), int(updates), float(seconds)
        return self

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


async def view(url: str, stop: asyncio.Event) -> tuple[int, int, float]:
    """Read the console's WebSocket until ``stop``: (overlay frames, state updates, seconds connected)."""
    import aiohttp

    frames = updates = 0
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:  # the console may still be starting
            try:
                ws = await session.ws_connect(url)
                break
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        connected = time.monotonic()
        print("connected", flush=True)
        async with ws:
            while not stop.is_set():
                try:
                    message = await ws.receive(timeout=0.2)
                except TimeoutError:
                    continue
                if message.type == aiohttp.WSMsgType.BINARY:
                    frames += 1
                elif message.type == aiohttp.WSMsgType.TEXT:
                    updates += 1
                else:
                    raise RuntimeError(f"the console closed the WebSocket ({message.type.name})")
    return frames, updates, time.monotonic() - connected


def _viewer_main(url: str) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        frames, updates, seconds = await view(url, stop)
        print(frames, updates, round(seconds, 3), flush=True)

    asyncio.run(main())


class Bench:
    """sim_camera + lens_node running, a probe node publishing instructions and timing answers."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String

        from lens_ros.launch_cli import ProcessGroup
        from lens_ros.launch_description import CONSOLE, LENS_NODE, SIM_CAMERA, node_specs
        from lens_ros.messages import INSTRUCTION_TOPIC, latched_qos
        from lens_ros.msg import Segmentation

        self.String, self.port = String, free_port()
        values = {"use_sim_camera": "true", "preset": "lens-tiny", "console": "true"}
        specs = node_specs({**values, "console_port": str(self.port)})
        for spec in specs:
            if spec.name == SIM_CAMERA:
                spec.parameters.update(
                    width=SIZE[0], height=SIZE[1], rate_hz=RATE_HZ, speed=0.0, seed=SCENE_SEED, start_time=0.0
                )
        self.console_spec = next(s for s in specs if s.name == CONSOLE)
        self.group = ProcessGroup()
        self.group.start([s for s in specs if s.name != CONSOLE])
        self.console_group: ProcessGroup | None = None
        self.viewer: Viewer | None = None
        self.node_pid = self.group.processes[LENS_NODE].pid
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("lens_console_bench", context=self.context)
        self.answers: list[tuple[float, Segmentation]] = []
        self.node.create_subscription(
            Segmentation, f"/{LENS_NODE}/segmentation", lambda m: self.answers.append((time.monotonic(), m)), 50
        )
        self.pub = self.node.create_publisher(String, INSTRUCTION_TOPIC, latched_qos())
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
            if predicate():
                return True
        return False

    def first_mask_ms(self, text: str, timeout: float = 60.0) -> float | None:
        """Publish ``text``; ms until its first reasoned answer arrives (None: no answer)."""
        self.spin_until(lambda: False, 0.5)
        self.answers.clear()
        sent = time.monotonic()
        self.pub.publish(self.String(data=text))

        def reasoned():
            return next((t for t, m in self.answers if m.instruction == text and not m.tracked), None)

        return (reasoned() - sent) * 1000 if self.spin_until(reasoned, timeout) else None

    def cpu_window(self, seconds: float) -> dict:
        """CPU shares (100 = one core) of lens_node and the console (if running), and the tracking rate."""
        pids = {"node": self.node_pid}
        if self.console_group is not None:
            pids["console"] = next(iter(self.console_group.processes.values())).pid
        before = {n: cpu_seconds(p) for n, p in pids.items()}
        self.answers.clear()
        started = time.monotonic()
        self.spin_until(lambda: False, seconds)
        wall = time.monotonic() - started
        share = {f"{n}_cpu_pct": 100.0 * (cpu_seconds(p) - before[n]) / wall for n, p in pids.items()}
        tracked = [t for t, m in self.answers if m.tracked]
        share["track_hz"] = (len(tracked) - 1) / (tracked[-1] - tracked[0]) if len(tracked) > 1 else None
        return share

    def start_console(self) -> None:
        from lens_ros.launch_cli import ProcessGroup

        self.console_group = ProcessGroup(stdout=subprocess.DEVNULL)
        self.console_group.start([self.console_spec])
        self.viewer = Viewer(f"ws://127.0.0.1:{self.port}/ws")
        self.viewer.wait_connected()
        self.spin_until(lambda: False, 2.0)  # discovery done, frames flowing to the viewer

    def stop_console(self) -> float:
        """Stop the viewer and the console; overlay frames per second the viewer received."""
        fps = self.viewer.stop().fps
        self.console_group.stop()
        self.viewer = self.console_group = None
        return fps

    def check_running(self) -> None:
        groups = [self.group] + ([self.console_group] if self.console_group else [])
        if exited := {k: v for g in groups for k, v in g.exited().items()}:
            raise RuntimeError(f"processes exited during the benchmark: {exited}")

    def close(self) -> None:
        if self.viewer is not None:
            self.viewer.process.kill()
            self.viewer.process.wait()
        if self.console_group is not None:
            self.console_group.stop()
        self.executor.shutdown()
        self.node.destroy_node()
        import rclpy

        rclpy.shutdown(context=self.context)
        self.group.stop()


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def added_ms_interval(without: list, with_console: list, rounds: int = 4000, seed: int = 0) -> tuple[float, float]:
    """90 % bootstrap interval of median(with) - median(without) (samples resampled per side)."""
    rng = random.Random(seed)
    a, b = [v for v in without if v is not None], [v for v in with_console if v is not None]
    diffs = sorted(
        statistics.median(rng.choices(b, k=len(b))) - statistics.median(rng.choices(a, k=len(a))) for _ in range(rounds)
    )
    return diffs[int(0.05 * rounds)], diffs[int(0.95 * rounds) - 1]


def run(quick: bool) -> dict:
    blocks, window_s = (4, 4.0) if quick else (16, 6.0)
    # The same instructions in every block (two of each kind: rationales of different lengths),
    # each answered once before the blocks, so the drafter knows them on both sides alike.
    texts = scene_instructions(6)[:6]
    samples: dict[bool, list[float]] = {False: [], True: []}
    windows: dict[bool, list[dict]] = {False: [], True: []}
    bench = Bench()
    try:
        for text in texts:
            if bench.first_mask_ms(text, 300) is None:
                raise RuntimeError(f"lens_node gave no answer to {text!r} within 300 s")
        for b in range(blocks):
            console = b % 4 in (1, 2)  # without, with, with, without, ...
            if console:
                bench.start_console()
            for text in texts:
                samples[console].append(bench.first_mask_ms(text))
            window = bench.cpu_window(window_s)
            if console:
                window["viewer_fps"] = bench.stop_console()
            bench.check_running()
            windows[console].append(window)
    finally:
        bench.close()
    rows = []
    for console in (False, True):
        rows.append(
            {
                "console": "with viewer" if console else "without",
                "first_mask_ms": _median(samples[console]),
                "answered": sum(v is not None for v in samples[console]),
                **{
                    key: _median([w.get(key) for w in windows[console]])
                    for key in ("node_cpu_pct", "console_cpu_pct", "track_hz", "viewer_fps")
                },
            }
        )
    without, with_console = rows
    for key in ("first_mask_ms", "node_cpu_pct"):
        if without[key] is not None and with_console[key] is not None:
            with_console[f"added_{key}"] = with_console[key] - without[key]
    if with_console["answered"] and without["answered"]:
        low, high = added_ms_interval(samples[False], samples[True])
        with_console["added_first_mask_ms_90"] = f"{low:.1f} to {high:.1f}"
    if with_console["console_cpu_pct"] is not None and with_console.get("added_node_cpu_pct") is not None:
        with_console["added_cpu_pct"] = with_console["console_cpu_pct"] + with_console["added_node_cpu_pct"]
    return {
        "note": f"lens_node (lens-tiny) + sim_camera {SIZE[0]}x{SIZE[1]} {RATE_HZ:.0f} Hz (frozen scene) running "
        f"throughout; {blocks} blocks alternating without/with/with/without lens-console (one viewer connected: "
        f"a WebSocket client in its own process reading every update and overlay JPEG). first_mask_ms: "
        f"/instruction published -> first reasoned ~/segmentation received in another process, median over "
        f"the same {len(texts)} instructions (one of each kind) in every block; node_cpu_pct: lens_node's user+system CPU time / wall "
        f"time over {window_s:.0f} s of tracking per block (100 = one core), median over blocks; "
        "console_cpu_pct the same for lens-console; added_cpu_pct: the console's share plus what the node adds "
        "(it draws and JPEG-encodes the overlay only while the console subscribes); added_first_mask_ms_90: "
        "90 % bootstrap interval of the added median; viewer_fps: overlay frames the viewer received per second.",
        "columns": [
            "console",
            "first_mask_ms",
            "added_first_mask_ms",
            "added_first_mask_ms_90",
            "answered",
            "node_cpu_pct",
            "added_node_cpu_pct",
            "console_cpu_pct",
            "added_cpu_pct",
            "track_hz",
            "viewer_fps",
        ],
        "rows": rows,
        "samples": {"without": samples[False], "with": samples[True]},
        "windows": {"without": windows[False], "with": windows[True]},
    }


if __name__ == "__main__":  # the viewer process: python -m bench.console_bench ws://host:port/ws
    _viewer_main(sys.argv[1])
