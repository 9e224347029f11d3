"""End to end through ROS: instruction published -> first mask received, and tracking rate.

Starts lens_node + sim_camera (the processes of ``lens-launch use_sim_camera:=true``) and
measures, from a third process, the time from publishing an instruction on /instruction to
receiving the first ``~/segmentation`` that answers it, then the rate of tracked answers.
The baseline, measured in the same run on the same machine and camera, is the naive
sequential pipeline of bench.model_bench (HF generate -> SamPredictor, fp32, no cache, no
overlap) in a plain node (bench.naive_node) that answers an instruction on the newest
image in its callback: ``speedup_vs_naive`` compares the two first-mask times through ROS.
The naive pipeline in process (no transport) is reported too.
"""

from __future__ import annotations

import statistics
import time

SCENE_SEED = 0  # the simulated camera's default scene, frozen at t = 0


def scene_instructions(count: int) -> list[str]:
    """``count`` different instructions about the camera's scene, every kind in turn (the
    world's own expressions: simple, relational, reasoning); none repeats, so no answer is
    drafted from an identical earlier one."""
    from lens_ros.world.scene import KINDS, SceneAnimator

    animator = SceneAnimator(SCENE_SEED, size=(640, 480))
    texts: list[str] = []
    for i in range(50 * count):
        expression = animator.expression(0.0, KINDS[i % len(KINDS)], seed=i)
        if expression is not None and expression.text not in texts:
            texts.append(expression.text)
        if len(texts) == count + 1:
            return texts
    raise RuntimeError(f"the scene gives only {len(texts)} different instructions")


def measure_ros(
    model: str,
    repeats: int,
    track_seconds: float,
    size: tuple[int, int],
    camera_speed: float = 0.0,
    baseline: bool = False,
    camera_rate_hz: float = 30.0,
) -> dict:
    """camera_speed 0 freezes the simulated scene: the camera then only publishes (as a
    driver does); a live scene costs its rendering, ~70 % of one core at 640x480 30 Hz.
    baseline: run bench.naive_node instead of lens_node (first masks only, no tracking)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from lens_ros.launch_cli import ProcessGroup
    from lens_ros.launch_description import LENS_NODE, NodeSpec, node_specs, resolve_arguments
    from lens_ros.messages import INSTRUCTION_TOPIC, latched_qos
    from lens_ros.msg import Segmentation

    specs = node_specs({"use_sim_camera": "true", "preset": model})
    for spec in specs:
        if spec.name != LENS_NODE:
            spec.parameters.update(
                width=size[0],
                height=size[1],
                speed=float(camera_speed),
                rate_hz=float(camera_rate_hz),
                seed=SCENE_SEED,
                start_time=0.0,
            )
    answering = LENS_NODE
    if baseline:
        from bench.naive_node import NODE_NAME

        answering = NODE_NAME
        image_topic = resolve_arguments({})["image"]
        naive = NodeSpec(
            NODE_NAME,
            NODE_NAME,
            module="bench.naive_node",
            parameters={"model": model},
            remappings=(("image", image_topic),),
        )
        specs = [naive] + [s for s in specs if s.name != LENS_NODE]
    group = ProcessGroup()
    group.start(specs)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("lens_ros_bench", context=context)
    answers: list[tuple[float, Segmentation]] = []
    node.create_subscription(
        Segmentation, f"/{answering}/segmentation", lambda m: answers.append((time.monotonic(), m)), 50
    )
    diagnostics: dict[str, str] = {}  # the answering node's latest /diagnostics values

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"{answering}: lens":
                diagnostics.update((kv.key, kv.value) for kv in status.values)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    pub = node.create_publisher(String, INSTRUCTION_TOPIC, latched_qos())
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin_until(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
            if predicate():
                return True
        return False

    first_mask_ms: list[float] = []
    node_ms: list[float] = []  # in the node: reasoning + segmentation of that answer
    track_hz = track_ms = None
    try:
        # Warm-up: model load + first reasoning are not part of the measurement.
        warm_up, *texts = scene_instructions(repeats)
        pub.publish(String(data=warm_up))
        if not spin_until(lambda: any(m.instruction == warm_up for _, m in answers), 300):
            raise RuntimeError(f"{answering} gave no answer within 300 s")
        for text in texts:
            spin_until(lambda: False, 0.3)
            answers.clear()
            sent = time.monotonic()
            pub.publish(String(data=text))
            if spin_until(lambda text=text: any(m.instruction == text and not m.tracked for _, m in answers), 60):
                arrival, msg = next((t, m) for t, m in answers if m.instruction == text and not m.tracked)
                first_mask_ms.append((arrival - sent) * 1000)
                node_ms.append(msg.reasoning_ms + msg.segmentation_ms)
        answers.clear()
        spin_until(lambda: False, 0.0 if baseline else track_seconds)
        tracked = [(t, m) for t, m in answers if m.tracked]
        if len(tracked) > 1:
            track_hz = (len(tracked) - 1) / (tracked[-1][0] - tracked[0][0])
            track_ms = statistics.median(m.total_ms for _, m in tracked)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        group.stop()
    return {
        "first_mask_ms": statistics.median(first_mask_ms) if first_mask_ms else None,
        "first_mask_samples": first_mask_ms,
        "node_samples": node_ms,
        "answered": len(first_mask_ms),
        "reason_node_ms": statistics.median(node_ms) if node_ms else None,
        "track_hz": track_hz,
        "track_node_ms": track_ms,
        # in the node (median over this run's instructions): message taken -> worker starts on it
        # (a tracking call in progress) and -> its first answer published
        "node_wait_ms": _float(diagnostics.get("instruction_wait_ms_p50")),
        "node_answer_ms": _float(diagnostics.get("instruction_answer_ms_p50")),
    }


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# measure_ros values that may be missing in a run (None): the median over the runs that have them
PER_RUN = ("track_hz", "track_node_ms", "node_wait_ms", "node_answer_ms")


def run(quick: bool, model: str = "lens-tiny") -> dict:
    """Per camera size, lens_node and the naive node in turn, twice (full mode): the machine's
    speed drifts between runs of a few seconds, and alternating keeps that out of the ratio."""
    from bench.model_bench import _scenes, load_pipeline, naive_segment

    pipe, used, model_arg = load_pipeline(model)
    max_new = pipe.config.max_new_tokens or pipe.model.config.max_new_tokens
    naive = []
    for image, text in _scenes("val", 3 if quick else 10, 20_000):
        t0 = time.perf_counter()
        naive_segment(pipe, image, text, max_new)
        naive.append((time.perf_counter() - t0) * 1000)
    del pipe
    rows = []
    repeats, rounds = (3, 1) if quick else (10, 2)
    for size in ((640, 480),) if quick else ((640, 480), (1280, 720)):
        lens = {"first_mask_samples": [], "node_samples": [], "answered": 0}
        lens.update({key: [] for key in PER_RUN})
        base: list[float] = []
        for _ in range(rounds):
            ros = measure_ros(model_arg, repeats, 5.0 if quick else 15.0, size)
            for key in ("first_mask_samples", "node_samples"):
                lens[key] += ros[key]
            lens["answered"] += ros["answered"]
            for key in PER_RUN:
                if ros[key] is not None:
                    lens[key].append(ros[key])
            base += measure_ros(model_arg, repeats, 0.0, size, baseline=True)["first_mask_samples"]
        first, naive_node = _median(lens["first_mask_samples"]), _median(base)
        rows.append(
            {
                "camera": f"{size[0]}x{size[1]}",
                "naive_in_process_ms": statistics.median(naive),
                "naive_node_first_mask_ms": naive_node,
                "first_mask_ms": first,
                "speedup_vs_naive": naive_node / first if first and naive_node else None,
                "answered": lens["answered"],
                "reason_node_ms": _median(lens["node_samples"]),
                **{key: _median(lens[key]) for key in PER_RUN},
            }
        )
    return {
        "note": f"Model: {used}. first_mask_ms = /instruction published -> first reasoned ~/segmentation "
        f"received in another process; median over {repeats} different instructions about the camera's scene "
        f"(every kind), in each of {rounds} round(s), each answered on the camera's current frame. "
        "naive_node_first_mask_ms: the "
        "same for bench.naive_node (HF generate -> SamPredictor in its callback); speedup_vs_naive = its first "
        "mask / lens_node's. track_hz = tracked answers per second afterwards. From lens_node's /diagnostics: "
        "node_wait_ms = instruction message taken -> the worker starts on it (a tracking call in progress), "
        "node_answer_ms = -> its first answer published (medians over the run, warm-up included); first_mask_ms - node_answer_ms is the two transports "
        "and the executor's delay before the instruction callback.",
        "columns": [
            "camera",
            "naive_in_process_ms",
            "naive_node_first_mask_ms",
            "first_mask_ms",
            "speedup_vs_naive",
            "answered",
            "reason_node_ms",
            "track_hz",
            "track_node_ms",
            "node_wait_ms",
            "node_answer_ms",
        ],
        "rows": rows,
    }
