"""Play a ROS 2 bag (.mcap or .db3) onto live topics, without rosbag2 (via ``rosbags``).

    bag_player BAG [--topics T ...] [--rate 1.0] [--loop] [--ros-args -r /bag/topic:=/live/topic]

Messages go out as their recorded CDR bytes (no re-serialisation), on the recorded
topic names, which ROS remapping rules (``-r``) change like any other node's. Timing
follows the bag's receive timestamps scaled by ``--rate``; header stamps are the
recorded ones, so image/depth pairs stay matched. Topics named ``*instruction`` are
published reliable + transient-local, like the node expects.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from lens_ros.entry import run_node
from lens_ros.messages import latched_qos
from lens_ros.ros_env import configure_dds

MAX_SLEEP_S = 5.0  # a long gap in the bag is shortened to this


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the generated rclpy class (ImportError names what is missing)."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"no Python message type {msgtype!r} installed ({exc})") from exc


def qos_for(topic: str) -> QoSProfile:
    if topic.rstrip("/").endswith("instruction"):
        return latched_qos()
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class BagPlayer(Node):
    def __init__(self, bag: Path, topics: list[str] | None = None, rate: float = 1.0) -> None:
        super().__init__("bag_player")
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if not bag.exists():
            raise FileNotFoundError(f"bag not found: {bag}")
        self.bag, self.rate = bag, rate
        self.reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED))
        self.reader.open()
        wanted = set(topics or [])
        self.connections = [c for c in self.reader.connections if not wanted or c.topic in wanted]
        missing = wanted - {c.topic for c in self.connections}
        if missing:
            raise ValueError(
                f"topics {sorted(missing)} not in {bag}; it has {sorted({c.topic for c in self.reader.connections})}"
            )
        self.publishers_ = {}
        for c in self.connections:
            if c.topic not in self.publishers_:
                self.publishers_[c.topic] = self.create_publisher(message_class(c.msgtype), c.topic, qos_for(c.topic))
        self.published = 0
        self.get_logger().info(
            f"playing {bag.name}: {len(self.publishers_)} topics, {self.reader.message_count} messages, rate {rate:g}"
        )

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Give discovery time: True once every topic has a subscriber, False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and rclpy.ok(context=self.context):
            if all(p.get_subscription_count() > 0 for p in self.publishers_.values()):
                time.sleep(0.2)  # matched is not yet connected on every transport
                return True
            time.sleep(0.05)
        return False

    def play_once(self) -> int:
        """Publish every selected message at its recorded pace; returns how many went out."""
        start_wall, start_bag, count = time.monotonic(), None, 0
        for connection, timestamp, raw in self.reader.messages(connections=self.connections):
            if not rclpy.ok(context=self.context):
                break
            if start_bag is None:
                start_bag = timestamp
            due = start_wall + (timestamp - start_bag) * 1e-9 / self.rate
            delay = due - time.monotonic()
            if delay > MAX_SLEEP_S:
                start_wall -= delay - MAX_SLEEP_S
                delay = MAX_SLEEP_S
            if delay > 0:
                time.sleep(delay)
            self.publishers_[connection.topic].publish(bytes(raw))
            count += 1
        self.published += count
        return count

    def destroy_node(self) -> None:
        self.reader.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    configure_dds()
    rclpy.init(args=args)
    cli = argparse.ArgumentParser(prog="bag_player", description=__doc__.split("\n\n")[0])
    cli.add_argument("bag", type=Path, help=".mcap file or a rosbag2 directory")
    cli.add_argument("--topics", nargs="*", default=None, help="only these topics (default: all)")
    cli.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    cli.add_argument("--loop", action="store_true", help="start over at the end")
    cli.add_argument(
        "--wait-subscribers",
        type=float,
        default=2.0,
        help="wait up to this many seconds for every topic to have a subscriber before playing",
    )
    options = cli.parse_args(rclpy.utilities.remove_ros_args(args)[1:])

    def play(node: BagPlayer) -> None:
        node.wait_for_subscribers(options.wait_subscribers)
        while True:
            node.play_once()
            if not options.loop or not rclpy.ok():
                break
        node.get_logger().info(f"published {node.published} messages")
        time.sleep(0.5)  # let reliable messages in flight be delivered

    make = functools.partial(BagPlayer, options.bag, options.topics, options.rate)
    return run_node("bag_player", make, play, (OSError, ValueError, ImportError), failure="cannot play")


if __name__ == "__main__":
    raise SystemExit(main())
