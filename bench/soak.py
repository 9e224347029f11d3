"""Soak test: the sim camera at 30 Hz and the node, with a new instruction every few seconds.

    python -m bench.soak --minutes 1            # CI length
    python -m bench.soak --minutes 30           # report length

Starts the same processes as ``lens-launch use_sim_camera:=true`` (lens_node + sim_camera),
changes the instruction every ``--every`` seconds, and records the node's RSS (from /proc),
its output rate, its drop counters (from /diagnostics) and every error status. Writes
bench/results/soak-<machine>-<date>.json + .md. Targets: RSS growth < 5 % after warm-up,
every frame the node received either answered or counted as dropped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lens_ros.ros_env import configure_dds

INSTRUCTIONS = (
    "the red cube",
    "the blue cylinder",
    "something you could pour water into",
    "the object closest to the camera",
    "the green sphere",
    "the second object from the left",
)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_soak(minutes: float, every: float, model: str, env: dict | None = None) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from lens_ros.launch_cli import ProcessGroup
    from lens_ros.launch_description import LENS_NODE, node_specs
    from lens_ros.messages import INSTRUCTION_TOPIC, latched_qos
    from lens_ros.msg import Segmentation

    group = ProcessGroup(env=env)
    group.start(node_specs({"use_sim_camera": "true", "preset": model}))
    node_pid = group.processes[LENS_NODE].pid

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("lens_soak", context=context)
    statuses: dict[int, int] = {}
    outputs: list[float] = []
    errors: list[str] = []
    last_diag: dict[str, str] = {}

    def on_segmentation(msg: Segmentation) -> None:
        outputs.append(time.monotonic())
        statuses[msg.status] = statuses.get(msg.status, 0) + 1
        if msg.status >= Segmentation.STATUS_BAD_INPUT and len(errors) < 100:
            errors.append(msg.status_text[:200])

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(LENS_NODE):
                last_diag.clear()
                last_diag.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(Segmentation, f"/{LENS_NODE}/segmentation", on_segmentation, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    instruction_pub = node.create_publisher(String, INSTRUCTION_TOPIC, latched_qos())
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    end = start + minutes * 60
    next_instruction, next_sample, index = start, start, 0
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_instruction:
                instruction_pub.publish(String(data=INSTRUCTIONS[index % len(INSTRUCTIONS)]))
                index += 1
                next_instruction += every
            if now >= next_sample:
                rss = rss_mib(node_pid)
                if rss is None:
                    errors.append("lens_node exited during the soak")
                    break
                samples.append((now - start, rss))
                next_sample += 1.0
            executor.spin_once(timeout_sec=0.02)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        group.stop()
    first_output = (outputs[0] - start) if outputs else None
    return summarise(samples, outputs, statuses, errors, last_diag, minutes, index, first_output)


def rss_slope(samples, outputs, first_output_s, warm_start: float) -> tuple[float | None, float | None]:
    """Least-squares RSS growth after warm-up: (MiB per minute, KiB per answer published
    meanwhile). A leak grows with the answers, so it shows in the slope however large the
    process is; a final percentage hides a slow one behind a large RSS.

    samples: (s since the soak started, RSS MiB); outputs: monotonic times of the answers.
    """
    warm = [(t, r) for t, r in samples if t >= warm_start]
    if len(warm) < 10 or not outputs:
        return None, None
    t, r = np.array(warm, dtype=float).T
    slope_per_s = float(np.polyfit(t, r, 1)[0])
    soak_start = outputs[0] - first_output_s
    answers = sum(1 for o in outputs if t[0] <= o - soak_start <= t[-1])
    rate = answers / (t[-1] - t[0])
    return slope_per_s * 60.0, (slope_per_s * 1024.0 / rate if rate > 0 else None)


def summarise(samples, outputs, statuses, errors, diag, minutes, instructions, first_output_s) -> dict:
    # Warm-up ends 10 s after the first answer: model loading and the first allocations
    # of every code path are not growth.
    warm_start = (first_output_s or 0.0) + 10.0
    warm = [r for t, r in samples if t >= warm_start]
    baseline = statistics.median(warm[: max(1, len(warm) // 5)]) if warm else None
    final = statistics.median(warm[-max(1, len(warm) // 5) :]) if warm else None
    growth = (final - baseline) / baseline if baseline else None
    duration = (outputs[-1] - outputs[0]) if len(outputs) > 1 else 0.0
    slope, per_answer = rss_slope(samples, outputs, first_output_s, warm_start)

    def number(key: str) -> float | None:
        try:
            return float(diag[key])
        except (KeyError, ValueError):
            return None

    # Frame accounting from the node's own counters: image_in + requeued (the newest frame
    # re-answered for a new instruction) = published + dropped_total (+ one in flight).
    received = number("image_in_count")
    if received is not None:
        received += number("requeued_count") or 0.0
    published = number("published_count") or 0.0
    frame_drops = number("dropped_total") or 0.0
    answered = sum(statuses.values())
    dropped = frame_drops
    accounted = None
    if received is not None:
        accounted = abs(received - (published + frame_drops)) <= 2
    return {
        "minutes": minutes,
        "first_output_s": first_output_s,
        "instructions_sent": instructions,
        "rss_mib_after_warmup": baseline,
        "rss_mib_final": final,
        "rss_growth": growth,
        "rss_slope_mib_per_min": slope,
        "rss_kib_per_answer": per_answer,
        "outputs": answered,
        "output_hz": (len(outputs) - 1) / duration if duration else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "node_frames_received": received,
        "node_published": published,
        "node_frame_drops": frame_drops,
        "node_dropped_total": dropped,
        "drops_accounted": accounted,
        "errors": errors[:20],
        "diagnostics": diag,
        "rss_samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    from bench.results_io import write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between instruction changes")
    parser.add_argument("--model", default="lens-tiny", help="preset or bundle directory")
    parser.add_argument("--json", type=Path, help="also write the raw summary here")
    parser.add_argument("--results-dir", type=Path, default=None, help="where the results files go")
    args = parser.parse_args(argv)
    configure_dds()
    summary = run_soak(args.minutes, args.every, args.model)
    row = {
        k: summary[k]
        for k in (
            "minutes",
            "instructions_sent",
            "outputs",
            "output_hz",
            "rss_mib_after_warmup",
            "rss_mib_final",
            "rss_growth",
            "rss_slope_mib_per_min",
            "rss_kib_per_answer",
            "node_frames_received",
            "node_dropped_total",
            "drops_accounted",
        )
    }
    suite = {
        "note": f"model {args.model}; statuses {summary['statuses']}; errors {summary['errors'][:3]}",
        "columns": list(row),
        "rows": [row],
        "summary": summary,
    }
    kwargs = {"out_dir": args.results_dir} if args.results_dir else {}
    json_path, md_path = write_results({"soak": suite}, f"soak-{args.minutes:g}min", **kwargs)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=float))
    print(md_path.read_text())
    ok = (
        summary["rss_growth"] is not None
        and summary["rss_growth"] < 0.05
        and summary["drops_accounted"]
        and summary["outputs"] > 0
    )
    print("soak", "PASSED" if ok else "FAILED targets", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
