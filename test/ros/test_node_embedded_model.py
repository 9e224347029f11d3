"""lens_node with the embedded lens-tiny model on the synthetic camera: masks match the ground truth.

Skipped until the embedded weights (lens_ros/weights/lens-tiny) are in the package.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from ros_fixtures import frozen_camera_parameters, instruction_qos, node_reports, node_specs
from std_msgs.msg import String

from lens_ros.image_conversion import image_to_numpy
from lens_ros.msg import Segmentation

pytestmark = [pytest.mark.ros, pytest.mark.slow]

EMBEDDED = Path(__file__).resolve().parents[2] / "lens_ros" / "weights" / "lens-tiny"
SCENE = {"seed": 11, "t": 1.0, "width": 320, "height": 240}
N_INSTRUCTIONS = 4  # distinct targets


def stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


@pytest.mark.skipif(not (EMBEDDED / "config.json").is_file(), reason="embedded lens-tiny weights not built yet")
def test_embedded_model_masks_and_poses_match_the_ground_truth(launcher, probe):
    from lens_ros.world.scene import SceneAnimator

    specs = node_specs({"use_sim_camera": "true", "device": "cpu"})  # the params file's model: lens-tiny
    camera = frozen_camera_parameters(SCENE)
    specs = [
        dataclasses.replace(s, parameters={**s.parameters, **camera}) if s.name == "sim_camera" else s for s in specs
    ]
    launcher.start(specs)
    animator = SceneAnimator(SCENE["seed"], size=(SCENE["width"], SCENE["height"]))
    frame = animator.frame(SCENE["t"])
    segs = probe.subscribe(Segmentation, "/lens_node/segmentation")
    diags = probe.subscribe(DiagnosticArray, "/diagnostics")
    poses = probe.subscribe(PoseStamped, "/lens_node/target_pose")
    publisher = probe.node.create_publisher(String, "/instruction", instruction_qos())
    ious, errors, targets, on_target = [], [], [], []
    texts: list[str] = []
    for i in range(16):  # simple instructions, each naming another object
        expression = animator.expression(SCENE["t"], "simple", seed=i)
        target = frame.objects[expression.target]
        if any(t is target for t in targets):
            continue
        texts.append(expression.text)
        targets.append(target)
        publisher.publish(String(data=expression.text))

        def answered(text=expression.text):
            # the newest frame is answered again for a new instruction: stamps no other instruction
            # has (on a still scene, tracking after the answer gives the answer's mask)
            others = {stamp_of(m) for _, m in segs if m.instruction != text}
            return [m for _, m in segs if m.instruction == text and m.objects and stamp_of(m) not in others]

        seg = probe.spin_until(answered, 120, f"an answer to {expression.text!r}")[0]
        mask = image_to_numpy(seg.objects[0].mask) > 0
        overlaps = [
            np.logical_and(mask, o.mask).sum() / max(np.logical_or(mask, o.mask).sum(), 1) for o in frame.objects
        ]
        ious.append(overlaps[expression.target])
        on_target.append(bool(int(np.argmax(overlaps)) == expression.target and overlaps[expression.target] > 0.5))
        pose = probe.spin_until(lambda s=seg: [m for _, m in poses if stamp_of(m) == stamp_of(s)], 10, "its pose")[0]
        p = pose.pose.position
        errors.append(float(np.linalg.norm(np.array([p.x, p.y, p.z]) - target.center)))
        if len(texts) == N_INSTRUCTIONS:
            break
    assert len(texts) == N_INSTRUCTIONS, f"the scene has expressions for {len(texts)} objects"
    # The shipped model is small and under-trained (training/results/embedded_model.md): it must
    # beat picking one of the scene's objects at random, not match the ground truth.
    chance = np.mean(
        [
            np.mean(
                [
                    np.logical_and(o.mask, t.mask).sum() / max(np.logical_or(o.mask, t.mask).sum(), 1)
                    for o in frame.objects
                ]
            )
            for t in targets
        ]
    )
    assert np.mean(ious) > chance, f"mask IoU per instruction {np.round(ious, 2)} vs random-object {chance:.2f}"
    # Each instruction names another object: a model that ignores the instruction puts at most
    # one of the masks on its own target.
    assert sum(on_target) >= N_INSTRUCTIONS - 1, (
        f"masks on their own target (IoU > 0.5, more than with any other object): {on_target} for {texts}, "
        f"IoU {np.round(ious, 2)}"
    )
    good = [e for e, iou in zip(errors, ious, strict=True) if iou > 0.5]
    assert all(e < 0.05 for e in good), (
        f"position errors (m) where the mask was right: {good} (IoU {np.round(ious, 2)})"
    )

    # Speculative decoding ran (the default draft_tokens): the answers took fewer decoder steps
    # than tokens, and the node says how many tokens a step gave.
    def drafts():
        return [v for _, v in node_reports(diags) if int(v.get("draft_generations", 0)) >= len(texts)]

    values = probe.spin_until(drafts, 10, "diagnostics after the answers")[-1]
    assert float(values["decode_tokens_per_step"]) > 1.0, values
