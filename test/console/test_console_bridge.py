"""The console's ROS side over real DDS: what it takes of the lens node's ~1.2 MB/frame stream.

A stand-in lens node (publishers in the test process, named as the lens node's topics)
sends tracked frames at 30 Hz with a reasoned answer, a refusal and a parse fallback among
them; the console's ``ConsoleBridge`` runs in the same process on its own executor.
"""

from __future__ import annotations

import threading
import time

import pytest

from lens_ros.console.state import ConsoleState

pytestmark = pytest.mark.ros

RATE_HZ = 30.0
FRAMES = 90
EVENTS = {  # frame index -> (tracked, status, status_text)
    0: (False, 0, ""),
    40: (False, 3, "instruction rejected: too long"),
    41: (True, 1, ""),  # tracked, but the object was lost: shown too
    60: (False, 2, "answer could not be parsed"),
}


def segmentation(index: int, tracked: bool, status: int, text: str):
    from lens_ros.msg import Segmentation, SegmentedObject

    msg = Segmentation(instruction="the cup", tracked=tracked, status=status, status_text=text)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + index // 30, (index % 30) * 33_000_000
    msg.answer = f"frame {index}"
    if status == 0:
        msg.objects = [SegmentedObject(label="cup", score=0.9)]
        msg.objects[0].mask.data = bytes(320 * 240)  # the stream's weight: a mask in every answer
    return msg


@pytest.fixture
def bridge(rclpy_context):
    from rclpy.executors import SingleThreadedExecutor

    from lens_ros.console.ros_bridge import ConsoleBridge

    node = ConsoleBridge(context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    yield node
    executor.shutdown()
    node.destroy_node()
    spinner.join(timeout=5)


def test_every_event_is_shown_and_tracked_frames_at_status_hz(bridge, probe):
    from lens_ros.console.ros_bridge import output_topic
    from lens_ros.msg import Segmentation

    shown: list = []
    on_answer = bridge.state.on_answer
    bridge.state.on_answer = lambda answer: (shown.append(answer), on_answer(answer))
    pub = probe.node.create_publisher(Segmentation, output_topic(bridge.config.lens_node, "segmentation"), 10)
    probe.spin_until(lambda: pub.get_subscription_count() >= 2, 10, "the console's two readers")
    assert bridge.events.is_cft_enabled, "Fast DDS filters the tracked frames before they reach Python"
    started = time.monotonic()
    for index in range(FRAMES):
        tracked, status, text = EVENTS.get(index, (True, 0, ""))
        pub.publish(segmentation(index, tracked, status, text))
        probe.spin_for(max(0.0, started + (index + 1) / RATE_HZ - time.monotonic()))
    probe.spin_for(1.0)
    seconds = FRAMES / RATE_HZ
    frames = [int(a.answer.split()[1]) for a in shown]
    assert set(EVENTS) <= set(frames), f"every answer that is not a good tracked frame is shown: {frames}"
    sampled = [f for f in frames if f not in EVENTS]
    assert 0.5 * bridge.config.status_hz * seconds <= len(sampled) <= bridge.config.status_hz * seconds + 2, frames
    assert frames == sorted(frames), "a tracked frame older than an answer already shown is not shown"
    status = bridge.state.sections()[0]["status"]
    assert status["refusal"]["status_text"] == "instruction rejected: too long", "a refusal stays on the page"


def test_tracking_rate_is_the_lens_nodes_own():
    state = ConsoleState()
    state.on_diagnostics(0, "ok", {"tracked_hz": "29.87", "image_in_hz": "30.0"})
    assert state.sections()[0]["status"]["tracking_hz"] == 29.9
    versions = state.versions()
    state.on_diagnostics(0, "ok", {"tracked_hz": "not a number"})
    assert state.sections()[0]["status"]["tracking_hz"] == 29.9
    assert state.versions()["status"] == versions["status"], "an unchanged rate does not resend the status"


def test_the_python_rule_matches_the_dds_filter():
    from lens_ros.console.ros_bridge import is_event

    for index, (tracked, status, text) in {**EVENTS, 5: (True, 0, "")}.items():
        assert is_event(segmentation(index, tracked, status, text)) == (index in EVENTS)
