"""lens_node with a real (tiny, random) LENS model over DDS: the real Pipeline behind the node.

Random weights say nothing about mask quality; these tests check shapes, stamps, the
reason-once-track-every-frame cycle and the service with the real model code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from ros_fixtures import instruction_qos, node_specs
from sensor_msgs.msg import Image
from std_msgs.msg import String

from lens_ros.image_conversion import image_to_numpy, numpy_to_image
from lens_ros.msg import Segmentation
from lens_ros.srv import Segment

pytestmark = pytest.mark.ros

CAMERA = {"width": 160, "height": 120, "rate_hz": 10.0, "seed": 1}
ANSWERED = (Segmentation.STATUS_OK, Segmentation.STATUS_PARSE_FALLBACK, Segmentation.STATUS_NO_OBJECT)


def stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def running(module_launcher, tiny_bundle):
    specs = node_specs({"use_sim_camera": "true", "preset": str(tiny_bundle), "device": "cpu"})
    specs = [
        dataclasses.replace(s, parameters={**s.parameters, **CAMERA}) if s.name == "sim_camera" else s for s in specs
    ]
    module_launcher.start(specs)
    return module_launcher


def test_instruction_gives_a_mask_of_the_image_size_with_its_stamp(running, probe):
    images = probe.subscribe(Image, "/camera/image_raw", qos_profile_sensor_data)
    segs = probe.subscribe(Segmentation, "/lens_node/segmentation")
    probe.node.create_publisher(String, "/instruction", instruction_qos()).publish(String(data="the red cube"))

    def answers_to_seen_frames():
        stamps = {stamp_of(m) for _, m in images}
        return [m for _, m in segs if m.status in ANSWERED and stamp_of(m) in stamps]

    seg = probe.spin_until(answers_to_seen_frames, 90, "an answer to a camera frame")[0]
    assert seg.instruction == "the red cube" and seg.header.frame_id == "camera_color_optical_frame"
    assert len(seg.objects) == 1, seg.status_text
    mask = image_to_numpy(seg.objects[0].mask)
    assert mask.shape == (CAMERA["height"], CAMERA["width"]) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert seg.objects[0].mask.header.stamp == seg.header.stamp


def test_later_frames_are_tracked_without_new_reasoning(running, probe):
    segs = probe.subscribe(Segmentation, "/lens_node/segmentation")
    probe.node.create_publisher(String, "/instruction", instruction_qos()).publish(String(data="the green ball"))

    def mine():
        return [m for _, m in segs if m.instruction == "the green ball" and m.status in ANSWERED]

    probe.spin_until(lambda: len([m for m in mine() if m.tracked]) >= 2, 120, "two tracked frames")
    answers = mine()
    reasoned = [m for m in answers if not m.tracked]
    assert len(reasoned) == 1, "one reasoning per instruction (reason_interval_s is 0)"
    assert reasoned[0].reasoning_ms > 0 and reasoned[0].answer
    tracked = [m for m in answers if m.tracked]
    assert all(m.reasoning_ms == 0.0 for m in tracked)
    assert stamp_of(tracked[-1]) > stamp_of(reasoned[0]), "tracking follows newer frames"


def test_segment_service_with_the_real_model(running, probe):
    from lens_ros.world.scene import SceneAnimator

    image = SceneAnimator(2, size=(96, 64)).frame(0.0).image
    client = probe.node.create_client(Segment, "/lens_node/segment")
    probe.spin_until(client.service_is_ready, 60, "the ~/segment service")
    request = Segment.Request(instruction="the blue cup", image=numpy_to_image(image, "rgb8"))
    future = client.call_async(request)
    probe.spin_until(future.done, 90, "the service response")
    result = future.result().result
    assert result.status in ANSWERED, result.status_text
    assert image_to_numpy(result.objects[0].mask).shape == (64, 96)


@pytest.mark.slow
def test_onnx_segmenter_backend_parameter_reaches_the_pipeline(launcher, probe, tiny_bundle, tmp_path):
    """segmenter_backend:=onnx: the node exports the bundle's segmenter to ONNX graphs (in
    its temporary directory, here a fresh one) and answers with onnxruntime loaded."""
    import json

    from lens_ros.model.bundle import load_bundle
    from lens_ros.model.onnx_backend import DECODER_FILE, ENCODER_FILE, META_FILE, fingerprint
    from lens_ros.world.scene import SceneAnimator

    spec = next(s for s in node_specs({"preset": str(tiny_bundle), "device": "cpu"}) if s.name == "lens_node")
    # its own name: the module's torch-backend lens_node may still be running beside it
    spec = dataclasses.replace(spec, name="lens_node_onnx", parameters={**spec.parameters, "segmenter_backend": "onnx"})
    group = launcher.start([spec], extra_env={"TMPDIR": str(tmp_path)})
    image = SceneAnimator(4, size=(96, 64)).frame(0.0).image
    client = probe.node.create_client(Segment, "/lens_node_onnx/segment")
    probe.spin_until(client.service_is_ready, 120, "the ~/segment service (after the ONNX export)")
    future = client.call_async(Segment.Request(instruction="the cup", image=numpy_to_image(image, "rgb8")))
    probe.spin_until(future.done, 90, "the service response")
    result = future.result().result
    assert result.status in ANSWERED, result.status_text
    assert image_to_numpy(result.objects[0].mask).shape == (64, 96)

    exported = [d for d in tmp_path.glob("lens_onnx_*") if (d / META_FILE).is_file()]
    assert len(exported) == 1, f"the node exported no ONNX graphs under its TMPDIR: {list(tmp_path.iterdir())}"
    assert (exported[0] / DECODER_FILE).is_file() and (exported[0] / ENCODER_FILE).is_file()
    meta = json.loads((exported[0] / META_FILE).read_text())
    assert meta["fingerprint"] == fingerprint(load_bundle(tiny_bundle).segmenter), "graphs of other weights"
    maps = Path(f"/proc/{group.processes['lens_node_onnx'].pid}/maps").read_text()
    assert "onnxruntime" in maps, "the node process never loaded onnxruntime"
