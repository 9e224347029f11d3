"""lens_node over real DDS, with an oracle in place of the model (fast, exact masks).

A frozen synthetic camera publishes RGB, depth and camera_info; the oracle returns the
ground-truth mask of the named object, so these tests check what the node adds:
stamps, tracking without re-reasoning, 3D pose from depth, the service, bad input.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data
from ros_fixtures import SCENE, frozen_camera_parameters, instruction_qos, node_reports, node_specs, oracle_env
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String

from lens_ros.image_conversion import image_to_numpy
from lens_ros.messages import cloud_to_numpy
from lens_ros.model.limits import MAX_INSTRUCTION_CHARS
from lens_ros.msg import Segmentation
from lens_ros.srv import Segment

pytestmark = pytest.mark.ros

NODE = "/lens_node"


def ground_truth_frame():
    from lens_ros.world.scene import SceneAnimator

    return SceneAnimator(SCENE["seed"], size=(SCENE["width"], SCENE["height"])).frame(SCENE["t"])


@pytest.fixture(scope="module")
def running(module_launcher):
    specs = node_specs({"use_sim_camera": "true", "device": "cpu"})
    specs = [
        dataclasses.replace(s, parameters={**s.parameters, **frozen_camera_parameters()})
        if s.name == "sim_camera"
        else s
        for s in specs
    ]
    module_launcher.start(specs, oracle=True, extra_env=oracle_env())
    return module_launcher


def stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def send_instruction(probe, text: str):
    pub = probe.node.create_publisher(String, "/instruction", instruction_qos())
    pub.publish(String(data=text))
    return pub


def test_instruction_gives_segmentation_stamped_like_the_image(running, probe):
    frame = ground_truth_frame()
    target = 0
    images = probe.subscribe(Image, "/camera/image_raw", qos_profile_sensor_data)
    segs = probe.subscribe(Segmentation, f"{NODE}/segmentation")
    send_instruction(probe, f"the {frame.objects[target].name}")

    def answers_to_seen_frames():
        # The first answer may be for a frame sent before this probe subscribed; later ones are not.
        stamps = {stamp_of(m) for _, m in images}
        return [m for _, m in segs if m.status == Segmentation.STATUS_OK and stamp_of(m) in stamps]

    seg = probe.spin_until(answers_to_seen_frames, 30, "a Segmentation stamped like a camera frame")[0]
    assert seg.header.frame_id == "camera_color_optical_frame"
    assert len(seg.objects) == 1
    mask = image_to_numpy(seg.objects[0].mask) > 0
    assert mask.shape == (SCENE["height"], SCENE["width"])
    assert np.array_equal(mask, frame.objects[target].mask)
    box = seg.objects[0].box
    x1, y1, x2, y2 = frame.objects[target].box
    assert (box.x_offset, box.y_offset, box.x_offset + box.width, box.y_offset + box.height) == (x1, y1, x2, y2)


def test_tracking_publishes_later_frames_without_reasoning_again(running, probe):
    frame = ground_truth_frame()
    segs = probe.subscribe(Segmentation, f"{NODE}/segmentation")
    rationale = probe.subscribe(String, f"{NODE}/rationale", instruction_qos())
    stream = probe.subscribe(String, f"{NODE}/rationale_stream")
    send_instruction(probe, f"the {frame.objects[1].name}")
    probe.spin_until(
        lambda: len([m for _, m in segs if m.instruction.endswith(frame.objects[1].name)]) >= 6, 30, "6 frames"
    )
    answered = [m for _, m in segs if m.instruction.endswith(frame.objects[1].name)]
    assert not answered[0].tracked and answered[0].answer.startswith("segment #")
    assert all(m.tracked and m.answer.startswith("track #") for m in answered[1:]), [m.answer for m in answered]
    assert len({(m.header.stamp.sec, m.header.stamp.nanosec) for m in answered}) == len(answered), (
        "one answer per frame"
    )
    assert all(m.reasoning_ms == 0.0 for m in answered[1:])
    probe.spin_until(lambda: rationale, 5, "a rationale")
    assert rationale[-1][1].data == "oracle segment"
    # the rationale was published while it was written: each word as it came, then the whole
    partials = [m.data for _, m in stream]
    assert partials[-2:] == ["oracle", "oracle segment"], partials


def test_target_pose_is_within_a_few_cm_of_the_ground_truth(running, probe):
    frame = ground_truth_frame()
    poses = probe.subscribe(PoseStamped, f"{NODE}/target_pose")
    clouds = probe.subscribe(PointCloud2, f"{NODE}/target_cloud")
    segs = probe.subscribe(Segmentation, f"{NODE}/segmentation")
    for index in range(min(3, len(frame.objects))):
        obj = frame.objects[index]
        send_instruction(probe, obj.name)

        def answered_pose(obj=obj):
            # The newest frame is answered again for a new instruction: use stamps no other instruction has.
            others = {stamp_of(m) for _, m in segs if m.instruction != obj.name}
            stamps = {stamp_of(m) for _, m in segs if m.instruction == obj.name} - others
            matching = [m for _, m in poses if stamp_of(m) in stamps]
            return matching and [m for _, m in clouds if stamp_of(m) in stamps] and matching

        pose_msg = probe.spin_until(answered_pose, 30, f"pose of {obj.name}")[-1]
        p = pose_msg.pose.position
        error = np.linalg.norm(np.array([p.x, p.y, p.z]) - obj.center)
        assert error < 0.04, f"{obj.name}: pose {p} is {error * 100:.1f} cm from the ground truth {obj.center}"
        assert pose_msg.header.frame_id == "camera_color_optical_frame"
        q = pose_msg.pose.orientation
        assert abs(q.x**2 + q.y**2 + q.z**2 + q.w**2 - 1.0) < 1e-3
        seg = next(m for _, m in segs if stamp_of(m) == stamp_of(pose_msg) and m.instruction == obj.name)
        assert seg.objects[0].has_pose and seg.objects[0].num_points > 10
        assert (seg.depth_status, seg.depth_text) == (Segmentation.DEPTH_OK, "")
        points = cloud_to_numpy(next(m for _, m in clouds if stamp_of(m) == stamp_of(pose_msg)))
        assert np.linalg.norm(points.mean(axis=0) - obj.center) < 0.05


def test_segment_service_answers_one_shot(running, probe):
    frame = ground_truth_frame()
    client = probe.node.create_client(Segment, f"{NODE}/segment")
    probe.spin_until(lambda: client.service_is_ready(), 20, "the ~/segment service")
    from lens_ros.image_conversion import numpy_to_image

    request = Segment.Request(instruction=frame.objects[0].name)
    request.image = numpy_to_image(frame.image, "rgb8")
    request.image.header.frame_id = "request_frame"
    future = client.call_async(request)
    probe.spin_until(future.done, 20, "the service response")
    response = future.result()
    assert response.success, response.message
    assert response.result.header.frame_id == "request_frame"
    assert np.array_equal(image_to_numpy(response.result.objects[0].mask) > 0, frame.objects[0].mask)
    # An empty image means "the newest camera frame".
    future = client.call_async(Segment.Request(instruction=frame.objects[0].name))
    probe.spin_until(future.done, 20, "the second service response")
    assert future.result().success and future.result().result.header.frame_id == "camera_color_optical_frame"
    # Bad input is an answer, not a crash.
    future = client.call_async(Segment.Request(instruction="   "))
    probe.spin_until(future.done, 20, "the third service response")
    assert not future.result().success and future.result().result.status == Segmentation.STATUS_BAD_INPUT


def test_bad_instruction_is_reported_and_the_node_keeps_running(running, probe):
    segs = probe.subscribe(Segmentation, f"{NODE}/segmentation")
    send_instruction(probe, "x" * (MAX_INSTRUCTION_CHARS + 1))  # the node's default limit
    probe.spin_until(
        lambda: [m for _, m in segs if m.status == Segmentation.STATUS_BAD_INPUT], 20, "a BAD_INPUT status"
    )
    bad = next(m for _, m in segs if m.status == Segmentation.STATUS_BAD_INPUT)
    assert "max_instruction_length" in bad.status_text
    frame = ground_truth_frame()
    send_instruction(probe, frame.objects[0].name)
    probe.spin_until(
        lambda: [m for _, m in segs if m.status == Segmentation.STATUS_OK and m.instruction == frame.objects[0].name],
        20,
        "an answer after the bad one",
    )


def test_diagnostics_report_rates_and_drops(running, probe):
    from diagnostic_msgs.msg import DiagnosticArray

    diags = probe.subscribe(DiagnosticArray, "/diagnostics")

    def after_frames():  # the first report may come before the first camera frame
        return next((found for _, found in node_reports(diags) if "image_in_count" in found), None)

    values = probe.spin_until(after_frames, 10, "diagnostics after camera frames")
    for key in ("image_in_hz", "dropped_total", "device", "model_loaded", "last_error"):
        assert key in values, f"{key} missing from diagnostics: {sorted(values)}"
    assert values["device"] == "cpu" and values["model_loaded"] == "True"
    assert float(values["image_in_hz"]) > 5.0
    # Every frame is answered or dropped for a counted reason (at most one in flight).
    received = int(values["image_in_count"]) + int(values.get("requeued_count", 0))
    answered = int(values.get("published_count", 0)) + int(values["dropped_total"])
    assert 0 <= received - answered <= 2, values


def test_diagnostics_split_a_new_instructions_latency(running, probe):
    """instruction_wait (message taken -> the worker starts on it) and instruction_answer (-> its
    first answer published): what the node adds to an instruction's first mask, in /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray

    diags = probe.subscribe(DiagnosticArray, "/diagnostics")
    segs = probe.subscribe(Segmentation, f"{NODE}/segmentation")
    frame = ground_truth_frame()
    sent = time.monotonic()
    send_instruction(probe, f"the {frame.objects[-1].name}")
    probe.spin_until(lambda: [m for _, m in segs if not m.tracked and m.status == Segmentation.STATUS_OK], 20, "answer")
    answered = next(t for t, m in segs if not m.tracked) - sent

    def values():
        reports = node_reports(diags)
        return next((v for t, v in reports if t > sent + answered and "instruction_answer_ms_p50" in v), None)

    found = probe.spin_until(values, 10, "diagnostics after the answer")
    wait, answer = float(found["instruction_wait_ms_p50"]), float(found["instruction_answer_ms_p50"])
    # The oracle streams its two-word rationale 60 ms a word: every answer comes >= 120 ms after
    # the worker started on its instruction (an answer timed at the start would be ~0 ms later).
    assert 0.0 <= wait and answer - wait >= 60.0, found
    assert float(found["instruction_answer_ms_max"]) < 60_000.0


def test_overlays_are_drawn_for_subscribers_only_and_the_jpeg_twin_is_rate_capped(running, probe):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage

    from lens_ros.image_conversion import compressed_to_numpy
    from lens_ros.node_config import NodeConfig

    frame = ground_truth_frame()
    target = frame.objects[2]
    diags = probe.subscribe(DiagnosticArray, "/diagnostics")
    send_instruction(probe, f"the {target.name}")

    def counters() -> list[tuple[float, int, int]]:
        """(time, frames answered, overlays drawn) from each of the node's /diagnostics."""
        return [
            (t, int(v.get("published_count", 0)), int(v.get("overlay_drawn_count", 0))) for t, v in node_reports(diags)
        ]

    def drawn_per_answer(since: float):
        """Overlays drawn per frame answered between the first and last diagnostics after ``since``."""
        c = [x for x in counters() if x[0] > since]
        if len(c) < 3 or c[-1][1] - c[0][1] < 20:
            return None
        return (c[-1][2] - c[0][2]) / (c[-1][1] - c[0][1])

    # Nobody subscribes to either overlay: frames are answered, no overlay is drawn.
    assert probe.spin_until(lambda: drawn_per_answer(0.0) is not None, 20, "answers") and drawn_per_answer(0.0) == 0.0
    # The JPEG twin only: drawn and sent at most overlay_compressed_max_hz (camera: 15 Hz).
    jpegs = probe.subscribe(CompressedImage, f"{NODE}/overlay/compressed")
    start = probe.spin_until(lambda: jpegs and jpegs[0][0], 10, "~/overlay/compressed")
    ratio = probe.spin_until(lambda: drawn_per_answer(start + 1.0), 20, "diagnostics with the JPEG subscribed")
    cap = NodeConfig.overlay_compressed_max_hz
    arrived = [t for t, _ in jpegs if t > start + 1.0]
    rate = (len(arrived) - 1) / (arrived[-1] - arrived[0])
    assert 0.6 * cap <= rate <= 1.1 * cap, rate
    assert 0.4 < ratio < 0.8, f"{ratio:.2f} overlays per answer: drawn for the JPEG's frames only"
    # ~/overlay too: one per answer; the JPEG is the same drawing (mask tinted), not the camera image.
    raws = probe.subscribe(Image, f"{NODE}/overlay")
    start = probe.spin_until(lambda: raws and raws[0][0], 10, "~/overlay")
    ratio = probe.spin_until(lambda: drawn_per_answer(start + 1.0), 20, "diagnostics with both subscribed")
    assert ratio == pytest.approx(1.0, abs=0.05)
    by_stamp = {stamp_of(m): image_to_numpy(m) for _, m in raws}
    same = next(m for _, m in reversed(jpegs) if stamp_of(m) in by_stamp)
    jpeg = compressed_to_numpy(same).astype(float)
    raw = by_stamp[stamp_of(same)].astype(float)
    assert same.format == "rgb8; jpeg compressed bgr8" and jpeg.shape == raw.shape == frame.image.shape
    assert np.abs(jpeg - raw).mean() < 4.0
    tint = np.abs(jpeg - frame.image.astype(float))[target.mask].mean()
    assert tint > 20.0, f"the target's pixels differ by {tint:.1f} from the camera image: no mask drawn"


def test_ground_truth_topic_describes_the_frame(running, probe):
    truth = probe.subscribe(String, "/sim_camera/ground_truth")
    images = probe.subscribe(Image, "/camera/image_raw", qos_profile_sensor_data)
    probe.spin_until(lambda: len(truth) >= 3 and len(images) >= 3, 10, "ground truth and images")
    data = json.loads(truth[-1][1].data)
    frame = ground_truth_frame()
    assert [o["name"] for o in data["objects"]] == [o.name for o in frame.objects]
    assert np.allclose(data["objects"][0]["center"], frame.objects[0].center, atol=1e-6)
    # a frozen scene is rendered once and re-published: same pixels, a new stamp each frame,
    # and the ground truth carries the stamp of its own frame
    stamps = [stamp_of(m) for _, m in images[-3:]]
    assert len(set(stamps)) == 3, stamps
    assert all(np.array_equal(image_to_numpy(m), frame.image) for _, m in images[-3:])
    truth_stamps = {(d["stamp"]["sec"], d["stamp"]["nanosec"]) for d in (json.loads(m.data) for _, m in truth)}
    assert set(stamps) & truth_stamps, "ground truth stamps should match published frames"


def test_reason_interval_re_reasons_while_tracking(running, probe):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    def set_interval(seconds: float) -> None:
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=seconds)
        client = probe.node.create_client(SetParameters, f"{NODE}/set_parameters")
        probe.spin_until(client.service_is_ready, 10, "set_parameters")
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name="reason_interval_s", value=value)]))
        probe.spin_until(future.done, 10, "set_parameters response")
        assert future.result().results[0].successful

    frame = ground_truth_frame()
    segs = probe.subscribe(Segmentation, f"{NODE}/segmentation")
    send_instruction(probe, frame.objects[2].name)
    set_interval(0.3)
    try:
        probe.spin_until(
            lambda: len([m for _, m in segs if m.instruction == frame.objects[2].name and not m.tracked]) >= 3,
            20,
            "three reasonings of one instruction",
        )
        mine = [m for _, m in segs if m.instruction == frame.objects[2].name]
        assert any(m.tracked for m in mine), "tracking continues between reasonings"
    finally:
        set_interval(0.0)
