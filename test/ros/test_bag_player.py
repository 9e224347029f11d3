"""The bag player replays .mcap and .db3 bags onto live topics, remappable like any node."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ros_fixtures import instruction_qos
from sensor_msgs.msg import Image
from std_msgs.msg import String

from lens_ros.image_conversion import image_to_numpy

pytestmark = pytest.mark.ros


def write_bag(path, storage: str, frames: int = 5):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    RosImage, Header, Time, RosString = (
        ts.types[n]
        for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time", "std_msgs/msg/String")
    )
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        images = writer.add_connection("/camera/color/image_raw", RosImage.__msgtype__, typestore=ts)
        text = writer.add_connection("/instruction", RosString.__msgtype__, typestore=ts)
        writer.write(text, 1_000_000_000, ts.serialize_cdr(RosString(data="the red cube"), RosString.__msgtype__))
        for i in range(frames):
            pixels = np.full((4, 6, 3), i, np.uint8)
            msg = RosImage(
                header=Header(stamp=Time(sec=100 + i, nanosec=0), frame_id="cam"),
                height=4,
                width=6,
                encoding="rgb8",
                is_bigendian=0,
                step=18,
                data=pixels.ravel(),
            )
            writer.write(images, 1_000_000_000 + (i + 1) * 20_000_000, ts.serialize_cdr(msg, RosImage.__msgtype__))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_messages_arrive_in_order_on_remapped_topics(storage, tmp_path, ros_env, probe):
    bag = tmp_path / "bag"
    write_bag(bag, storage)
    images = probe.subscribe(Image, "/camera/image_raw")
    instructions = probe.subscribe(String, "/instruction", instruction_qos())
    player = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lens_ros.bag_player",
            str(bag),
            "--wait-subscribers",
            "15",
            "--ros-args",
            "-r",
            "/camera/color/image_raw:=/camera/image_raw",
        ],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        probe.spin_until(lambda: len(images) >= 5 and instructions, 20, "5 images and the instruction")
        assert player.wait(timeout=10) == 0
    finally:
        if player.poll() is None:
            player.kill()
    assert [m.header.stamp.sec for _, m in images] == [100, 101, 102, 103, 104]
    assert image_to_numpy(images[-1][1])[0, 0].tolist() == [4, 4, 4]
    assert instructions[0][1].data == "the red cube"


def test_missing_topic_is_a_clear_error(tmp_path, ros_env):
    bag = tmp_path / "bag"
    write_bag(bag, "mcap", frames=1)
    result = subprocess.run(
        [sys.executable, "-m", "lens_ros.bag_player", str(bag), "--topics", "/nope"],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "/nope" in result.stderr and "/camera/color/image_raw" in result.stderr
