"""The through-ROS benchmark's two sides answer real instructions (bench/ros_bench.py, bench/naive_node.py)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_benchmark_instructions_are_different_and_about_the_scene():
    from bench.ros_bench import scene_instructions

    texts = scene_instructions(10)
    assert len(texts) == 11 and len(set(texts)) == 11
    assert all(t.startswith(("the ", "something")) for t in texts), texts


@pytest.mark.parametrize("baseline", [True, False], ids=["naive node", "lens_node"])
def test_both_nodes_answer_through_ros(baseline):
    from bench.ros_bench import measure_ros

    out = measure_ros("lens-tiny", 2, 1.0, (320, 240), baseline=baseline)
    assert out["answered"] == 2, out
    assert out["first_mask_ms"] > 0 and out["reason_node_ms"] > 0, out
    if not baseline:
        assert out["track_hz"] and out["track_hz"] > 1.0, out
