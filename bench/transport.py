"""Publish-to-callback latency of camera frames between two processes.

Compares the shipped Fast DDS profile (config/fastdds_profile.xml) with Fast DDS's
default transports, for 640x480 and 1280x720 rgb8 at 30 Hz, best-effort (sensor data)
and reliable QoS. Each configuration runs a fresh publisher and subscriber process;
the publisher stamps each frame with its wall-clock send time and the subscriber
records the receive time.

    python -m bench.transport --role sub ...   (internal: one side of one measurement)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}


def _configure(profile: str) -> None:
    from lens_ros.ros_env import PROFILE_ENV, configure_dds

    if profile == "default":
        os.environ.pop(PROFILE_ENV, None)
        os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "DEFAULT"
    else:
        configure_dds()


def _qos(name: str):
    from rclpy.qos import QoSProfile, qos_profile_sensor_data

    return qos_profile_sensor_data if name == "best_effort" else QoSProfile(depth=10)


def run_publisher(width: int, height: int, hz: float, count: int, qos: str) -> None:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    from lens_ros.image_conversion import numpy_to_image

    rclpy.init()
    node = rclpy.create_node("bench_transport_pub")
    publisher = node.create_publisher(Image, "/bench/image", _qos(qos))
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg: Image = numpy_to_image(frame, "rgb8")
    start = time.monotonic()
    for i in range(count):
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        msg.header.frame_id = str(i)
        publisher.publish(msg)
        time.sleep(max(0.0, start + (i + 1) / hz - time.monotonic()))
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()


def run_subscriber(seconds: float, qos: str, out: Path) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    latencies: list[float] = []

    def on_image(msg: Image) -> None:
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - sent) / 1e6)

    rclpy.init()
    node = rclpy.create_node("bench_transport_sub")
    node.create_subscription(Image, "/bench/image", on_image, _qos(qos))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    out.write_text(json.dumps(latencies))
    node.destroy_node()
    rclpy.shutdown()


def measure(profile: str, qos: str, size: str, hz: float, count: int, env: dict) -> dict:
    import numpy as np

    width, height = SIZES[size]
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"lens_bench_transport_{os.getpid()}.json"
    common = [sys.executable, "-m", "bench.transport", "--profile", profile, "--qos", qos]
    sub = subprocess.Popen(
        common + ["--role", "sub", "--seconds", str(count / hz + 8), "--out", str(out)], env=env, cwd=ROOT
    )
    pub = subprocess.Popen(
        common + ["--role", "pub", "--size", size, "--hz", str(hz), "--count", str(count)], env=env, cwd=ROOT
    )
    pub.wait(timeout=count / hz + 60)
    sub.wait(timeout=count / hz + 60)
    latencies = np.array(json.loads(out.read_text()) if out.exists() else [])
    out.unlink(missing_ok=True)
    row = {
        "profile": profile,
        "qos": qos,
        "size": size,
        "sent": count,
        "delivered": int(latencies.size),
        "delivered_ratio": latencies.size / count,
    }
    if latencies.size:
        row.update(median_ms=float(np.median(latencies)), p95_ms=float(np.percentile(latencies, 95)))
    return row


def run(quick: bool) -> dict:
    """All configurations; ratios compare each default-transport row with the shipped profile."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("ROS_DOMAIN_ID", str(90 + os.getpid() % 10))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    count = 60 if quick else 300
    rows = []
    for size in SIZES:
        for qos in ("best_effort", "reliable"):
            shipped = measure("shipped", qos, size, 30.0, count, env)
            default = measure("default", qos, size, 30.0, count, env)
            if shipped.get("median_ms") and default.get("median_ms"):
                default["latency_vs_shipped"] = default["median_ms"] / shipped["median_ms"]
            rows += [shipped, default]
    return {
        "note": "Publish-to-callback latency of rgb8 frames at 30 Hz between two processes; "
        "`shipped` = config/fastdds_profile.xml, `default` = Fast DDS's built-in transports.",
        "columns": [
            "size",
            "qos",
            "profile",
            "sent",
            "delivered",
            "delivered_ratio",
            "median_ms",
            "p95_ms",
            "latency_vs_shipped",
        ],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=["pub", "sub", "all"], default="all")
    parser.add_argument("--profile", choices=["shipped", "default"], default="shipped")
    parser.add_argument("--qos", choices=["best_effort", "reliable"], default="best_effort")
    parser.add_argument("--size", choices=list(SIZES), default="640x480")
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.role == "all":
        print(json.dumps(run(args.quick), indent=2))
        return
    _configure(args.profile)
    if args.role == "pub":
        run_publisher(*SIZES[args.size], args.hz, args.count, args.qos)
    else:
        run_subscriber(args.seconds, args.qos, args.out)


if __name__ == "__main__":
    main()
