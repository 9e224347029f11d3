"""The lens_ros ROS 2 node: a thin adapter around ``lens_ros.model.pipeline.Pipeline``.

Camera callbacks only store the newest frame; one worker thread runs the model
("reason once, track every frame": a new instruction triggers full MLLM reasoning,
later frames only run the segmenter with the cached prompts) and publishes
everything stamped with the source image's header. Outputs are in the image's
frame (tf2 is not used). ``LensLifecycleNode`` is the same node as a managed
lifecycle node: the model is loaded on activate and freed on deactivate.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from lens_ros import messages
from lens_ros.entry import run_node
from lens_ros.frame_sync import LatestSlot, stamp_to_s
from lens_ros.model.pipeline import Pipeline
from lens_ros.model.types import BadInputError, LensError, SegmentationResult
from lens_ros.msg import Segmentation
from lens_ros.node_config import NODE_NAME, NodeConfig, check_value, declare_parameters
from lens_ros.node_inputs import (
    DecodedFrame,
    DepthInput,
    Frame,
    Instruction,
    WorkItem,
    clean_instruction,
    decode_frame,
    inference_threads,
)
from lens_ros.node_outputs import OUTPUT_QOS, Answer, Outputs, build_answer, throttled_rationale
from lens_ros.node_stats import NodeStats
from lens_ros.ros_env import configure_dds
from lens_ros.srv import Segment

# NodeConfig fields that are lens_ros.model.pipeline.PipelineConfig fields of the same name.
PIPELINE_OPTIONS = frozenset({"mask_threshold", "use_box_prompt", "track_with_previous_box", "draft_tokens"})
# Builds the node's pipeline: (model, device=, dtype=, segmenter_backend=, model_dir=) -> Pipeline.
PipelineFactory = Callable[..., Pipeline]
# /diagnostics counter of each answer without 3D although depth was expected
DEPTH_COUNTERS = {
    Segmentation.DEPTH_NO_DEPTH: "depth_unmatched",
    Segmentation.DEPTH_NO_CAMERA_INFO: "depth_unmatched",
    Segmentation.DEPTH_BAD_DEPTH: "depth_rejected",
    Segmentation.DEPTH_NO_POINTS: "no_depth_points",
}


class ModelFailure(Exception):
    """The model could not answer a frame; ``status`` and the text go into the answer."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class LensBehaviour:
    """What the node does, shared by a plain Node (``LensNode``) and a LifecycleNode.

    Data flow: callbacks queue one ``WorkItem`` (newest frame + current instruction) in a
    latest-wins slot; the worker thread decides once whether to reason or track
    (``_plan``), runs the model (``_run_model``), matches the frame's depth, builds the
    ``Answer`` (``node_outputs.build_answer``) and publishes it (``Outputs``). The
    ``~/segment`` service runs the same ``_run_model`` and ``build_answer``.
    """

    # -- set-up -------------------------------------------------------------------------
    def _init_state(self, pipeline_factory: PipelineFactory | None) -> None:
        self.config: NodeConfig = declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._pipeline_factory = pipeline_factory or Pipeline.from_pretrained
        self.stats = NodeStats()
        self.pipeline: Pipeline | None = None
        self.device, self.dtype = "", ""
        self._pipeline_lock = threading.Lock()
        self._slot = LatestSlot()
        self._depth: DepthInput | None = None
        self._instruction: Instruction | None = None
        self._instruction_lock = threading.Lock()
        self._latest_frame: Frame | None = None
        self._track_state = None  # the worker's: what the last reasoning left for tracking
        self._state_version = -1  # the instruction version _track_state answers
        self._timed_version = -1  # the newest instruction version whose wait was recorded
        self._last_reason = 0.0
        self._worker: threading.Thread | None = None
        self._running = threading.Event()
        self._io: list = []
        self.outputs: Outputs | None = None

    def _create_interfaces(self) -> None:
        cfg = self.config
        sensor_qos = QoSProfile(depth=cfg.image_queue_size, reliability=qos_profile_sensor_data.reliability)
        subscriptions = [(String, messages.INSTRUCTION_TOPIC, self._on_instruction, messages.latched_qos())]
        if cfg.use_compressed:
            subscriptions.append((CompressedImage, "image/compressed", self._on_image, sensor_qos))
        else:
            subscriptions.append((Image, "image", self._on_image, sensor_qos))
        if cfg.use_depth:
            depth_topic = self.resolve_topic_name("depth")  # after remapping
            self._depth = DepthInput(cfg.depth_buffer_size, lambda: self.count_publishers(depth_topic))
            subscriptions.append((Image, "depth", self._on_depth, sensor_qos))
            subscriptions.append((CameraInfo, "camera_info", self._on_camera_info, sensor_qos))
        # One group per subscription: in one shared group a callback that is ready while another
        # runs is skipped until the executor next wakes (the next message), so the depth of the
        # frame an instruction arrived with was taken a camera period late and missed its match.
        for msg_type, topic, callback, qos in subscriptions:
            group = MutuallyExclusiveCallbackGroup()
            self._io.append(self.create_subscription(msg_type, topic, callback, qos, callback_group=group))
        self.outputs = Outputs(self, self.stats)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._io += [*self.outputs.all, self.pub_diagnostics]
        service_group, timer_group = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self._io.append(
            self.create_service(Segment, "~/segment", self._on_segment_service, callback_group=service_group)
        )
        self._io.append(
            self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics, callback_group=timer_group)
        )

    def _destroy_interfaces(self) -> None:
        for entity in self._io:
            if isinstance(entity, Subscription):
                self.destroy_subscription(entity)
            elif isinstance(entity, Publisher):
                self.destroy_publisher(entity)
            elif isinstance(entity, Service):
                self.destroy_service(entity)
            elif isinstance(entity, Timer):
                self.destroy_timer(entity)
        self._io.clear()

    def _load_model(self) -> None:
        cfg = self.config
        threads = inference_threads(cfg.cpu_threads)
        where = f" from {cfg.model_dir}" if cfg.model_dir else ""
        self.get_logger().info(
            f"loading model {cfg.model!r}{where} (device {cfg.device}, dtype {cfg.dtype}, segmenter "
            f"{cfg.segmenter_backend}, {threads} CPU threads)"
        )
        if cfg.switch_interval_s > 0:
            sys.setswitchinterval(cfg.switch_interval_s)
        import torch

        torch.set_num_threads(threads)
        start = time.monotonic()
        pipeline = self._pipeline_factory(
            cfg.model,
            device=cfg.device,
            dtype=cfg.dtype,
            segmenter_backend=cfg.segmenter_backend,
            model_dir=cfg.model_dir or None,
        )
        self._apply_pipeline_options(pipeline)
        with self._pipeline_lock:
            self.pipeline = pipeline
            self.device, self.dtype = str(pipeline.device), str(pipeline.dtype).removeprefix("torch.")
            self._track_state, self._state_version = None, -1
        self.get_logger().info(f"model ready on {self.device} ({self.dtype}) in {time.monotonic() - start:.1f} s")

    def _apply_pipeline_options(self, pipeline: Pipeline) -> None:
        """Copy the node's segmenter options into the pipeline's config (also at run time)."""
        pipeline.config = pipeline.config.replace(**{name: getattr(self.config, name) for name in PIPELINE_OPTIONS})

    def _unload_model(self) -> None:
        with self._pipeline_lock:
            self.pipeline, self._track_state, self._state_version = None, None, -1
        gc.collect()
        self._free_cuda_cache()

    def _start_worker(self) -> None:
        self._slot.reopen()
        self._running.set()
        self._worker = threading.Thread(target=self._work, name="lens_worker", daemon=True)
        self._worker.start()

    def _stop_worker(self) -> None:
        self._running.clear()
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

    # -- callbacks (short: queue and return) ---------------------------------------------
    def _on_image(self, msg) -> None:
        self.stats.event("image_in")
        frame = Frame(msg, time.monotonic())
        self._latest_frame = frame
        instruction = self._instruction
        if self.pipeline is None:
            self.stats.drop("inactive")
        elif instruction is None:
            self.stats.drop("no_instruction")
        else:
            self._queue(WorkItem(frame, instruction))

    def _on_depth(self, msg: Image) -> None:
        self._depth.depth.add(stamp_to_s(msg.header.stamp), msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._depth.info.add(stamp_to_s(msg.header.stamp), msg)

    def _on_instruction(self, msg: String) -> None:
        text, problem = clean_instruction(msg.data, self.config.max_instruction_length)
        if problem:
            self.stats.event("instruction_rejected")
            self._report(self._latest_header(), msg.data[:200], Segmentation.STATUS_BAD_INPUT, f"bad input: {problem}")
            return
        with self._instruction_lock:
            version = self._instruction.version + 1 if self._instruction else 0
            self._instruction = instruction = Instruction(text, version, time.monotonic())
        self.stats.event("instruction")
        self.get_logger().info(f"new instruction: {text[:200]!r}")
        frame = self._latest_frame
        if frame is not None and self.pipeline is not None:
            # Answer on the newest frame without waiting for the next one. That frame may
            # already have been answered: "requeued" keeps the frame accounting exact
            # (image_in + requeued = published + dropped + in flight).
            self.stats.event("requeued")
            self._queue(WorkItem(frame, instruction))

    def _queue(self, item: WorkItem) -> None:
        if not self._slot.put(item):
            self.stats.drop("superseded")

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {}
        for param in params:
            if not hasattr(NodeConfig, param.name):
                continue
            problem = check_value(param.name, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            current = getattr(self.config, param.name)
            changes[param.name] = float(param.value) if isinstance(current, float) else param.value
        self.config = self.config.replace(**changes)
        pipeline = self.pipeline
        if pipeline is not None and PIPELINE_OPTIONS & changes.keys():
            self._apply_pipeline_options(pipeline)
        return SetParametersResult(successful=True)

    # -- worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while self._running.is_set():
            item = self._slot.take(timeout=0.2)
            if item is None:
                continue
            try:
                self._answer(item)
            except Exception as exc:  # the worker must survive anything a frame causes
                if not self.context.ok():  # shutting down: the publishers are gone
                    break
                self.stats.drop("error")
                self._note_error(f"unexpected error: {type(exc).__name__}: {exc}")

    def _plan(self, item: WorkItem) -> str | None:
        """The one decision per frame: "reason", "track", or None (tracking is off)."""
        interval = self.config.reason_interval_s
        reason_due = interval > 0 and time.monotonic() - self._last_reason >= interval
        if self._track_state is None or self._state_version != item.instruction.version or reason_due:
            return "reason"
        return "track" if self.config.track else None

    def _answer(self, item: WorkItem) -> None:
        plan = self._plan(item)
        if plan is None:
            self.stats.drop("not_tracking")
            return
        header, instruction = item.frame.msg.header, item.instruction
        first = plan == "reason" and instruction.version > self._timed_version
        if first:  # how long a new instruction waited for the worker (a tracking call in progress)
            self._timed_version = instruction.version
            self.stats.latency("instruction_wait", (time.monotonic() - instruction.received) * 1000.0)
        try:
            decoded = decode_frame(item.frame.msg, self.config.max_image_pixels)
            result = self._run_model(decoded, instruction.text, plan == "reason", item.instruction.version)
        except ModelFailure as exc:
            bad = exc.status == Segmentation.STATUS_BAD_INPUT
            self.stats.drop("bad_input" if bad else "error")
            self._report(header, instruction.text, exc.status, f"bad input: {exc}" if bad else str(exc))
            return
        except BadInputError as exc:
            self.stats.drop("bad_image")
            self._report(header, instruction.text, Segmentation.STATUS_BAD_INPUT, f"bad input: {exc}")
            return
        self.stats.event("reasoned" if plan == "reason" else "tracked")
        self.stats.latency("reasoning" if plan == "reason" else "tracking", result.timings.total_ms)
        answer = self._complete(decoded, instruction.text, result, item.frame.received)
        self.outputs.publish(answer, self.config)
        self.stats.event("published")
        self.stats.latency("total", answer.total_ms)
        if first:  # a new instruction's message taken -> its first answer published, in the node
            self.stats.latency("instruction_answer", (time.monotonic() - instruction.received) * 1000.0)

    def _run_model(
        self, decoded: DecodedFrame, instruction: str, reason: bool, version: int | None = None
    ) -> SegmentationResult:
        """The pipeline on one frame: reasoning (``segment``) or tracking with the cached state.

        ``version``: the instruction version whose tracking state this call updates (None: a
        one-shot call, the ``~/segment`` service, which leaves tracking alone).
        Raises ``ModelFailure`` with the answer's status when the model cannot answer.
        """
        with self._pipeline_lock:
            if self.pipeline is None:
                raise ModelFailure(Segmentation.STATUS_ERROR, "model not loaded (inactive)")
            try:
                if reason:
                    stream = self._rationale_stream() if version is not None else None
                    result, state = self.pipeline.segment(decoded.rgb, instruction, on_rationale=stream)
                    self._last_reason = time.monotonic()
                else:
                    result, state = self.pipeline.track(decoded.rgb, self._track_state)
            except BadInputError as exc:
                raise ModelFailure(Segmentation.STATUS_BAD_INPUT, str(exc)) from exc
            except Exception as exc:  # reported in ~/segmentation, the node keeps running
                if version is not None:
                    self._track_state, self._state_version = None, -1  # reason afresh next frame
                raise ModelFailure(Segmentation.STATUS_ERROR, self._error_text(exc)) from exc
            if version is not None:
                self._track_state, self._state_version = state, version
        return result

    def _rationale_stream(self) -> Callable[[str], None] | None:
        """Publishes the rationale while it is written, at most every ``rationale_stream_period_s``."""
        period = self.config.rationale_stream_period_s
        if period <= 0 or not self.config.publish_rationale:
            return None
        return throttled_rationale(period, lambda text: self.outputs.rationale_stream.publish(String(data=text)))

    def _complete(self, decoded: DecodedFrame, instruction: str, result, received: float) -> Answer:
        """Depth of the frame's time and the answer from it; depth that is missing, rejected
        or without readings under the mask is counted and said in the answer's depth_status."""
        cfg = self.config
        depth = (Segmentation.DEPTH_NONE, "")
        if self._depth is not None and self._depth.expected():
            depth = self._depth.attach(decoded, cfg.sync_slop_s, cfg.sync_wait_s, cfg.depth_scale)
        answer = build_answer(cfg, decoded, instruction, result, received, depth)
        counter = DEPTH_COUNTERS.get(answer.depth_status)
        if counter is not None:
            self.stats.event(counter)
        if answer.depth_status in (Segmentation.DEPTH_BAD_DEPTH, Segmentation.DEPTH_NO_POINTS):
            # bad sensor data, not a node failure: a warning, and the last error in /diagnostics
            self.stats.error(f"depth: {answer.depth_text}")
            self.get_logger().warning(f"no 3D for this answer: {answer.depth_text}", throttle_duration_sec=2.0)
        return answer

    # -- the ~/segment service ------------------------------------------------------------
    def _on_segment_service(self, request, response):
        """One-shot segmentation on the request's image (or the newest camera frame); the
        instruction being tracked is left as it is."""
        received = time.monotonic()
        instruction, problem = clean_instruction(request.instruction, self.config.max_instruction_length)
        msg = request.image
        if not problem and (msg.width == 0 or msg.height == 0):
            if self._latest_frame is None:
                problem = "empty request image and no camera frame received yet"
            else:
                msg = self._latest_frame.msg
        try:
            if problem:
                raise ModelFailure(Segmentation.STATUS_BAD_INPUT, problem)
            try:
                decoded = decode_frame(msg, self.config.max_image_pixels)
            except BadInputError as exc:
                raise ModelFailure(Segmentation.STATUS_BAD_INPUT, str(exc)) from exc
            result = self._run_model(decoded, instruction, reason=True)
        except ModelFailure as exc:
            self.stats.event("service_rejected")
            self.get_logger().warning(f"~/segment: {exc}", throttle_duration_sec=1.0)
            response.success, response.message = False, messages.bounded(str(exc), 1024)
            response.result = messages.segmentation_message(
                msg.header, instruction, None, status=exc.status, status_text=str(exc)
            )
            return response
        self.stats.event("service")
        answer = self._complete(decoded, instruction, result, received)
        response.result = answer.message()
        response.success = answer.usable
        response.message = answer.status_text or "ok"
        return response

    # -- reporting --------------------------------------------------------------------------
    def _report(self, header: Header, instruction: str, status: int, text: str) -> None:
        """An answer without a result (bad input, an error), logged and counted as the last error."""
        if status == Segmentation.STATUS_BAD_INPUT:
            self.get_logger().warning(text, throttle_duration_sec=2.0)
            self.stats.error(text)
        else:
            self._note_error(text)
        self.outputs.publish_status(header, instruction, status, text.removeprefix("bad input: "))

    def _error_text(self, exc: Exception) -> str:
        if "out of memory" in str(exc).lower():
            self._free_cuda_cache()
            return f"out of memory on {self.device}: {exc}"
        return f"{type(exc).__name__}: {exc}"

    def _free_cuda_cache(self) -> None:
        if self.device.startswith("cuda") and "torch" in sys.modules:
            sys.modules["torch"].cuda.empty_cache()

    def _note_error(self, text: str) -> None:
        self.stats.error(text)
        self.get_logger().error(text[:1000], throttle_duration_sec=2.0)

    def _latest_header(self) -> Header:
        frame = self._latest_frame
        if frame is not None:
            return frame.msg.header
        return Header(stamp=self.get_clock().now().to_msg())

    def _publish_diagnostics(self) -> None:
        values = self.stats.snapshot()
        pipeline = self.pipeline
        values.update(
            model=self.config.model_dir or self.config.model,
            device=self.device,
            dtype=self.dtype,
            model_loaded=pipeline is not None,
            dropped_superseded_total=self._slot.dropped,
            instruction=self._instruction.text if self._instruction else "",
        )
        drafts = pipeline.draft_stats if pipeline is not None else None
        if drafts is not None:  # speculative decoding: generated tokens per decoder step (1: none accepted)
            values.update(decode_tokens_per_step=round(drafts.tokens_per_step, 2), draft_generations=drafts.generations)
        if pipeline is None:
            level, message = DiagnosticStatus.WARN, "model not loaded"
        elif values["last_error"] and time.monotonic() - self.stats.last_error_time < 10.0:
            level, message = DiagnosticStatus.WARN, values["last_error"]
        else:
            level, message = DiagnosticStatus.OK, "ok"
        self.pub_diagnostics.publish(
            messages.diagnostic_array(
                self.get_clock().now().to_msg(),
                f"{self.get_name()}: lens",
                self.device or "none",
                level[0] if isinstance(level, bytes) else level,
                message,
                values,
            )
        )


class LensNode(LensBehaviour, Node):
    """The node for a plain ``ros2 run``/launch: loads the model at construction."""

    def __init__(self, node_name: str = NODE_NAME, pipeline_factory: PipelineFactory | None = None, **kwargs) -> None:
        Node.__init__(self, node_name, **kwargs)
        self._init_state(pipeline_factory)
        self._create_interfaces()
        self._load_model()
        self._start_worker()

    def destroy_node(self) -> None:
        self._stop_worker()
        super().destroy_node()


class LensLifecycleNode(LensBehaviour, LifecycleNode):
    """Managed variant: configure creates the interfaces, activate loads the model,
    deactivate frees it (GPU memory back), cleanup removes the interfaces."""

    def __init__(self, node_name: str = NODE_NAME, pipeline_factory: PipelineFactory | None = None, **kwargs) -> None:
        LifecycleNode.__init__(self, node_name, **kwargs)
        self._init_state(pipeline_factory)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._create_interfaces()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load_model()
        except (LensError, OSError, ValueError) as exc:
            self.get_logger().error(f"cannot load model: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._start_worker()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._unload_model()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_interfaces()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._unload_model()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._stop_worker()
        super().destroy_node()


def main(args: list[str] | None = None, pipeline_factory: PipelineFactory | None = None) -> int:
    """Run the node until shutdown; 0, or 1 when it cannot start. ``pipeline_factory``
    replaces ``Pipeline.from_pretrained`` (e.g. a scripted pipeline in behaviour tests)."""
    configure_dds()
    rclpy.init(args=args)
    cli = argparse.ArgumentParser(prog="lens_node", description="LENS language-instructed segmentation node")
    cli.add_argument("--lifecycle", action="store_true", help="run as a managed lifecycle node")
    options = cli.parse_args(rclpy.utilities.remove_ros_args(args)[1:])
    node_class = LensLifecycleNode if options.lifecycle else LensNode

    def spin(node: LensBehaviour) -> None:
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()

    return run_node(
        NODE_NAME, lambda: node_class(pipeline_factory=pipeline_factory), spin, (LensError, ValueError, OSError)
    )


if __name__ == "__main__":
    raise SystemExit(main())
