"""lens-demo: the whole system on one machine, no robot, no GPU, no download.

    lens-demo --out demo_output/

Starts the synthetic RGB-D camera and lens_node (the same description lens-launch
and perception.launch.py use), publishes a few instructions generated for the scene
the camera sees, waits for each answer, and writes into ``--out``: one overlay PNG per
instruction, ``report.md`` and ``report.json`` (rationale, latencies, tracking rate,
mask IoU and target position against the camera's ground truth) and the nodes' logs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from lens_ros.launch_cli import ProcessGroup
from lens_ros.launch_description import SIM_CAMERA, node_specs
from lens_ros.messages import INSTRUCTION_TOPIC, latched_qos
from lens_ros.regions import mask_iou
from lens_ros.ros_env import configure_dds

KINDS = ("simple", "relational", "reasoning")
MAX_GROUND_TRUTH = 300  # frames of ground truth kept for stamp lookup


@dataclass
class Answer:
    instruction: str
    kind: str
    target: str
    status: str = "no answer"
    rationale: str = ""
    answer: str = ""
    reasoning_ms: float = 0.0
    total_ms: float = 0.0
    tracking_hz: float = 0.0
    tracking_total_ms_median: float = 0.0
    mask_iou: float | None = None
    position: list[float] | None = None
    position_error_m: float | None = None
    overlay_png: str = ""
    notes: list[str] = field(default_factory=list)


class DemoClient:
    """The demo's own node: publishes instructions, records answers and ground truth."""

    def __init__(self, context) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from lens_ros.msg import Segmentation

        self.node = rclpy.create_node("lens_demo", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.instruction_pub = self.node.create_publisher(String, INSTRUCTION_TOPIC, latched_qos())
        self.segmentations: list = []
        self.overlays: OrderedDict = OrderedDict()
        self.poses: OrderedDict = OrderedDict()
        self.truth: OrderedDict = OrderedDict()
        self.model_loaded = False
        self.node.create_subscription(Segmentation, "/lens_node/segmentation", self.segmentations.append, 50)
        self.node.create_subscription(Image, "/lens_node/overlay", lambda m: self._keep(self.overlays, m), 10)
        self.node.create_subscription(PoseStamped, "/lens_node/target_pose", lambda m: self._keep(self.poses, m), 10)
        self.node.create_subscription(String, f"/{SIM_CAMERA}/ground_truth", self._on_truth, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    @staticmethod
    def _keep(store: OrderedDict, msg, key=None) -> None:
        store[key or (msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
        while len(store) > MAX_GROUND_TRUTH:
            store.popitem(last=False)

    def _on_truth(self, msg) -> None:
        data = json.loads(msg.data)
        self._keep(self.truth, data, (data["stamp"]["sec"], data["stamp"]["nanosec"]))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("lens_node"):
                values = {kv.key: kv.value for kv in status.values}
                self.model_loaded = values.get("model_loaded") == "True"

    def spin_until(self, predicate, timeout: float, check=None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if predicate():
                return True
            if check is not None:
                check()
        return False

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def stamp_key(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def run_instruction(client: DemoClient, animator, scene_size, kind: str, index: int, out: Path, settle_s: float, check):
    """Ask one instruction; returns an Answer."""
    from std_msgs.msg import String

    from lens_ros.image_conversion import image_to_numpy
    from lens_ros.msg import Segmentation

    latest = next(reversed(client.truth.values()))
    expression = animator.expression(latest["t"], kind, seed=index)
    if expression is None:
        return None
    target = latest["objects"][expression.target]["name"] if expression.target < len(latest["objects"]) else "?"
    answer = Answer(instruction=expression.text, kind=kind, target=target)
    first = len(client.segmentations)
    client.instruction_pub.publish(String(data=expression.text))

    def reasoned():
        return [m for m in client.segmentations[first:] if m.instruction == expression.text and not m.tracked]

    if not client.spin_until(lambda: reasoned(), 120.0, check):
        answer.notes.append("no answer within 120 s")
        return answer
    seg = reasoned()[0]
    client.spin_until(lambda: False, settle_s, check)  # let tracking run for a while
    tracked = [m for m in client.segmentations[first:] if m.instruction == expression.text and m.tracked]
    names = {v: k for k, v in vars(Segmentation).items() if k.startswith("STATUS_")}
    answer.status = names.get(seg.status, str(seg.status)).removeprefix("STATUS_").lower()
    answer.rationale, answer.answer = seg.rationale, seg.answer
    answer.reasoning_ms, answer.total_ms = round(seg.reasoning_ms, 1), round(seg.total_ms, 1)
    if len(tracked) >= 2:
        times = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in tracked]
        answer.tracking_hz = round((len(times) - 1) / max(times[-1] - times[0], 1e-6), 1)
        answer.tracking_total_ms_median = round(float(np.median([m.total_ms for m in tracked])), 1)
    truth = client.truth.get(stamp_key(seg))
    if truth is not None and seg.objects:
        frame = animator.frame(truth["t"], scene_size)
        predicted = image_to_numpy(seg.objects[0].mask) > 0
        answer.mask_iou = round(mask_iou(predicted, frame.objects[expression.target].mask), 3)
        pose = client.poses.get(stamp_key(seg))
        if pose is not None:
            p = pose.pose.position
            answer.position = [round(p.x, 4), round(p.y, 4), round(p.z, 4)]
            centre = np.asarray(truth["objects"][expression.target]["center"])
            answer.position_error_m = round(float(np.linalg.norm(np.array([p.x, p.y, p.z]) - centre)), 4)
    elif truth is None:
        answer.notes.append("no ground truth with the answer's stamp")
    overlay = client.overlays.get(stamp_key(seg))
    if overlay is not None:
        path = out / f"overlay_{index:02d}_{kind}.png"
        cv2.imwrite(str(path), image_to_numpy(overlay)[:, :, ::-1])
        answer.overlay_png = path.name
    return answer


def write_report(out: Path, answers: list[Answer], meta: dict) -> tuple[Path, Path]:
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps({"meta": meta, "answers": [asdict(a) for a in answers]}, indent=2))
    lines = [
        "# lens_ros demo",
        "",
        f"Model `{meta['model']}` on {meta['device']}; synthetic camera {meta['camera']} (seed {meta['seed']}).",
        "Position error: distance from the published target pose (centroid of the visible masked points)",
        "to the ground-truth object centre, both in the camera frame.",
        "",
        "| # | kind | instruction | target | status | mask IoU | pos. error (cm) | reasoning ms | total ms | tracking Hz |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, a in enumerate(answers):
        err = f"{a.position_error_m * 100:.1f}" if a.position_error_m is not None else "-"
        iou = f"{a.mask_iou:.2f}" if a.mask_iou is not None else "-"
        lines.append(
            f"| {i} | {a.kind} | {a.instruction} | {a.target} | {a.status} | {iou} | {err} | "
            f"{a.reasoning_ms:.0f} | {a.total_ms:.0f} | {a.tracking_hz:.1f} |"
        )
    for i, a in enumerate(answers):
        lines += ["", f"## {i}. {a.instruction}", ""]
        if a.overlay_png:
            lines.append(f"![overlay]({a.overlay_png})")
        lines += ["", f"Rationale: {a.rationale or '(none)'}", "", f"Answer: `{a.answer}`"]
        lines += [f"Note: {n}" for n in a.notes]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="lens-demo", description=__doc__.split("\n\n")[0])
    cli.add_argument("--out", type=Path, default=Path("demo_output"))
    cli.add_argument("--model", default="lens-tiny", help="preset or bundle directory (default: the embedded model)")
    cli.add_argument("--device", default="cpu")
    cli.add_argument("--seed", type=int, default=0, help="synthetic scene")
    cli.add_argument("--width", type=int, default=320)
    cli.add_argument("--height", type=int, default=240)
    cli.add_argument("--instructions", type=int, default=3, help="how many instructions to ask")
    cli.add_argument("--settle", type=float, default=2.0, help="seconds of tracking after each answer")
    options = cli.parse_args(argv)
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", str(out / "logs"))
    configure_dds()

    import rclpy

    from lens_ros.world.scene import SceneAnimator

    specs = node_specs({"use_sim_camera": "true", "preset": options.model, "device": options.device})
    camera = {"seed": options.seed, "width": options.width, "height": options.height}
    specs = [replace(s, parameters={**s.parameters, **camera}) if s.name == SIM_CAMERA else s for s in specs]
    log = open(out / "logs" / "nodes.log", "w")  # noqa: SIM115 - closed below, after the nodes stop
    group = ProcessGroup(stdout=log, stderr=log)
    context = rclpy.Context()
    rclpy.init(context=context)
    client = DemoClient(context)
    answers: list[Answer] = []
    code = 0

    def check():
        if "lens_node" in group.exited():
            raise RuntimeError(f"lens_node exited; see {out / 'logs' / 'nodes.log'}")

    try:
        group.start(specs)
        print(f"[lens-demo] starting sim camera + lens_node (model {options.model}) ...", flush=True)
        if not client.spin_until(lambda: client.model_loaded and client.truth, 300.0, check):
            raise RuntimeError("lens_node did not become ready within 300 s")
        animator = SceneAnimator(options.seed, size=(options.width, options.height))
        for i in range(options.instructions):
            kind = KINDS[i % len(KINDS)]
            answer = run_instruction(
                client, animator, (options.width, options.height), kind, i, out, options.settle, check
            )
            if answer is not None:
                answers.append(answer)
                print(f"[lens-demo] {answer.instruction!r} -> {answer.status}, {answer.total_ms:.0f} ms", flush=True)
    except (RuntimeError, KeyboardInterrupt) as exc:
        print(f"[lens-demo] {exc}", file=sys.stderr)
        code = 1
    finally:
        client.close()
        rclpy.shutdown(context=context)
        group.stop(grace_s=5.0)
        log.close()
    meta = {
        "model": options.model,
        "device": options.device,
        "seed": options.seed,
        "camera": f"{options.width}x{options.height} @ 30 Hz",
    }
    json_path, md_path = write_report(out, answers, meta)
    print(f"[lens-demo] report: {md_path}\n[lens-demo] data:   {json_path}\n[lens-demo] overlays and logs in {out}")
    if code or not answers or any(a.status == "no answer" for a in answers):
        node_log = out / "logs" / "nodes.log"
        tail = node_log.read_text(errors="replace").splitlines()[-15:]
        print(f"[lens-demo] not every instruction was answered; end of {node_log}:", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
        code = code or 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
