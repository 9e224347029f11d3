"""End to end through ROS: instruction published -> first mask received, and tracking rate.

Starts lens_node + sim_camera (the processes of ``lens-launch use_sim_camera:=true``) and
measures, from a third process, the time from publishing an instruction on /instruction to
receiving the first ``~/segmentation`` that answers it, then the rate of tracked answers.
The baseline, measured in the same run on the same machine, is the naive sequential
pipeline of bench.model_bench (HF generate -> SamPredictor, fp32, no cache, no overlap),
in process, i.e. without any ROS transport cost: the ratio is conservative for lens_ros.
"""

from __future__ import annotations

import statistics
import time

INSTRUCTIONS = (
    "the red cube",
    "the blue cylinder",
    "the green sphere",
    "the object closest to the camera",
    "something you could pour water into",
    "the yellow cup",
)


def measure_ros(
    model: str,
    repeats: int,
    track_seconds: float,
    size: tuple[int, int],
    camera_speed: float = 0.0,
) -> dict:
    """camera_speed 0 freezes the simulated scene: the camera then only publishes (as a
    driver does); a live scene costs its rendering, ~70 % of one core at 640x480 30 Hz."""
    import rclpy
    from lens_ros.msg import Segmentation
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from lens_ros.launch_cli import ProcessGroup
    from lens_ros.launch_description import LENS_NODE, node_specs
    from lens_ros.messages import INSTRUCTION_TOPIC, latched_qos

    specs = node_specs({"use_sim_camera": "true", "preset": model})
    for spec in specs:
        if spec.name != LENS_NODE:
            spec.parameters.update(width=size[0], height=size[1], speed=float(camera_speed))
    group = ProcessGroup()
    group.start(specs)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("lens_ros_bench", context=context)
    answers: list[tuple[float, Segmentation]] = []
    node.create_subscription(
        Segmentation, f"/{LENS_NODE}/segmentation", lambda m: answers.append((time.monotonic(), m)), 50
    )
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
        pub.publish(String(data="warm up"))
        if not spin_until(lambda: any(m.instruction == "warm up" for _, m in answers), 300):
            raise RuntimeError("lens_node gave no answer within 300 s")
        for i in range(repeats):
            text = f"{INSTRUCTIONS[i % len(INSTRUCTIONS)]} #{i}"
            spin_until(lambda: False, 0.3)
            answers.clear()
            sent = time.monotonic()
            pub.publish(String(data=text))
            if spin_until(lambda text=text: any(m.instruction == text and not m.tracked for _, m in answers), 60):
                arrival, msg = next((t, m) for t, m in answers if m.instruction == text and not m.tracked)
                first_mask_ms.append((arrival - sent) * 1000)
                node_ms.append(msg.reasoning_ms + msg.segmentation_ms)
        answers.clear()
        spin_until(lambda: False, track_seconds)
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
        "answered": len(first_mask_ms),
        "reason_node_ms": statistics.median(node_ms) if node_ms else None,
        "track_hz": track_hz,
        "track_node_ms": track_ms,
    }


def run(quick: bool, model: str = "lens-tiny") -> dict:
    from bench.model_bench import INSTRUCTION, _frames, load_pipeline, naive_segment

    pipe, used, model_arg = load_pipeline(model)
    frames = _frames((640, 480), 3 if quick else 10)
    max_new = pipe.config.max_new_tokens or pipe.model.config.max_new_tokens
    naive = []
    for frame in frames:
        t0 = time.perf_counter()
        naive_segment(pipe, frame, INSTRUCTION, max_new)
        naive.append((time.perf_counter() - t0) * 1000)
    del pipe
    naive_ms = statistics.median(naive)
    rows = []
    for size in ((640, 480),) if quick else ((640, 480), (1280, 720)):
        ros = measure_ros(model_arg, 3 if quick else 10, 5.0 if quick else 20.0, size)
        rows.append(
            {
                "camera": f"{size[0]}x{size[1]}",
                "naive_in_process_ms": naive_ms,
                **ros,
                "speedup_vs_naive": naive_ms / ros["first_mask_ms"] if ros["first_mask_ms"] else None,
            }
        )
    return {
        "note": f"Model: {used}. first_mask_ms = /instruction published -> first reasoned ~/segmentation "
        "received in another process; track_hz = tracked answers per second afterwards.",
        "columns": [
            "camera",
            "naive_in_process_ms",
            "first_mask_ms",
            "speedup_vs_naive",
            "answered",
            "reason_node_ms",
            "track_hz",
            "track_node_ms",
        ],
        "rows": rows,
    }
