"""Faults: out-of-memory, a camera that disappears and returns, the node killed and restarted.

(Training killed with SIGKILL and resumed bit-identically: test/training/test_resume.py.)
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_ros.model.pipeline import Pipeline
from lens_ros.model.types import LensError

HERE = Path(__file__).resolve().parent


def scene_image(seed: int = 3) -> np.ndarray:
    from lens_ros.world.scene import generate_sample

    return generate_sample(seed=seed, split="val", size=(160, 120)).image


def test_out_of_memory_degrades_to_a_lens_error_and_the_next_call_recovers(tiny_bundle, monkeypatch):
    pipe = Pipeline.from_pretrained(str(tiny_bundle))
    image = scene_image()
    pipe.segment(image, "the red cube")
    assert len(pipe._cache) == 1  # the frame's embedding is cached
    real_generate = pipe.model.decoder.generate

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("injected allocator failure")

    monkeypatch.setattr(pipe.model.decoder, "generate", out_of_memory)
    with pytest.raises(LensError, match="out of memory"):
        pipe.segment(image, "the blue cylinder")
    assert len(pipe._cache) == 0, "cached embeddings must be freed after an out-of-memory error"
    monkeypatch.setattr(pipe.model.decoder, "generate", real_generate)
    result, _ = pipe.segment(image, "the blue cylinder")
    assert result.masks.shape[1:] == image.shape[:2] or result.masks.shape[0] == 0


# -- over DDS ---------------------------------------------------------------------------
pytest.importorskip("rclpy", reason="rclpy is installed by `make setup`")
pytest.importorskip("lens_ros.msg", reason="interfaces are built by `make setup`")

from ros_fixtures import SCENE, Probe, frozen_camera_parameters, node_specs, oracle_env  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from lens_ros.launch_description import ros_arguments  # noqa: E402
from lens_ros.msg import Segmentation  # noqa: E402

SERVED = (Segmentation.STATUS_OK, Segmentation.STATUS_NO_OBJECT, Segmentation.STATUS_PARSE_FALLBACK)


def instruction_publisher(probe: Probe):
    from ros_fixtures import instruction_qos

    return probe.node.create_publisher(String, "/instruction", instruction_qos())


def camera_spec():
    spec = next(s for s in node_specs({"use_sim_camera": "true"}) if s.name == "sim_camera")
    return dataclasses.replace(spec, parameters={**spec.parameters, **frozen_camera_parameters()})


def node_spec(**parameters):
    spec = next(s for s in node_specs({"device": "cpu"}) if s.name == "lens_node")
    return dataclasses.replace(spec, parameters={**spec.parameters, "use_depth": False, **parameters})


@pytest.mark.ros
def test_node_reports_out_of_memory_and_recovers(launcher, probe, tiny_bundle):
    spec = node_spec(model=str(tiny_bundle))
    group = launcher.start([camera_spec()], extra_env={"LENS_FAULT_OOM_CALLS": "2"})  # 2nd generate fails
    group.start_command(spec.name, [sys.executable, str(HERE / "faulty_node.py"), *ros_arguments(spec)])
    segs = probe.subscribe(Segmentation, "/lens_node/segmentation")
    pub = instruction_publisher(probe)
    pub.publish(String(data="the red cube"))
    probe.spin_until(lambda: any(m.status in SERVED for _, m in segs), 120, "a first answer")
    pub.publish(String(data="the blue cylinder"))  # the 2nd reasoning fails with OOM
    error = probe.spin_until(
        lambda: next((m for _, m in segs if m.status == Segmentation.STATUS_ERROR), None), 60, "an OOM status"
    )
    assert "out of memory" in error.status_text
    start = len(segs)
    recovered = probe.spin_until(
        lambda: next((m for _, m in segs[start:] if m.status in SERVED and m.instruction == "the blue cylinder"), None),
        60,
        "an answer after the out-of-memory error",
    )
    # reasoned afresh for the new instruction (not tracked with the state of the one before),
    # with the model's own answer and one mask of the camera's size
    assert not recovered.tracked and recovered.reasoning_ms > 0, "the answer after the error was not reasoned"
    assert recovered.answer and len(recovered.objects) == 1, (recovered.answer, len(recovered.objects))
    mask = recovered.objects[0].mask
    assert (mask.width, mask.height) == (SCENE["width"], SCENE["height"]), (mask.width, mask.height)


@pytest.mark.ros
def test_camera_that_disappears_and_returns_is_served_again(launcher, probe):
    node = launcher.start([node_spec()], oracle=True, extra_env=oracle_env())
    segs = probe.subscribe(Segmentation, "/lens_node/segmentation")
    instruction_publisher(probe).publish(String(data="object 0"))
    camera = launcher.start([camera_spec()])
    probe.spin_until(lambda: len(segs) >= 3, 60, "answers while the camera runs")
    camera.stop(grace_s=5.0)
    probe.spin_for(1.5)
    count = len(segs)
    probe.spin_for(2.0)
    assert len(segs) - count <= 1, "answers kept coming with no camera"
    assert node.processes["lens_node"].poll() is None, "the node died when its camera went away"
    launcher.start([camera_spec()])
    probe.spin_until(lambda: len(segs) >= count + 3, 60, "answers after the camera came back")
    assert all(m.status in SERVED for _, m in segs[count:])


@pytest.mark.ros
def test_node_killed_and_restarted_resumes_the_last_instruction(launcher, probe):
    launcher.start([camera_spec()])
    segs = probe.subscribe(Segmentation, "/lens_node/segmentation")
    pub = instruction_publisher(probe)  # kept alive: transient-local keeps the last instruction
    pub.publish(String(data="object 1"))
    first = launcher.start([node_spec()], oracle=True, extra_env=oracle_env())
    probe.spin_until(lambda: segs, 60, "answers from the first node")
    first.processes["lens_node"].send_signal(signal.SIGKILL)
    first.processes["lens_node"].wait(timeout=10)
    probe.spin_for(1.0)
    segs.clear()
    launcher.start([node_spec()], oracle=True, extra_env=oracle_env())
    seg = probe.spin_until(
        lambda: next((m for _, m in segs if m.status in SERVED), None),
        60,
        "an answer from the restarted node without a new instruction",
    )
    assert seg.instruction == "object 1"
    from lens_ros.world.scene import SceneAnimator

    truth = SceneAnimator(SCENE["seed"], size=(SCENE["width"], SCENE["height"])).frame(SCENE["t"]).objects[1]
    assert seg.objects and seg.objects[0].label == truth.name
