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
import dataclasses
import gc
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from lens_ros import geometry, messages, visualization
from lens_ros.frame_sync import LatestSlot, StampBuffer, stamp_to_s
from lens_ros.image_conversion import compressed_to_numpy, image_to_numpy, numpy_to_image, to_rgb8
from lens_ros.model.types import BadInputError, LensError, SegmentationResult
from lens_ros.msg import Segmentation
from lens_ros.node_config import NODE_NAME, NodeConfig, check_value, declare_parameters
from lens_ros.node_inputs import (
    DecodedFrame,
    Frame,
    Instruction,
    clean_instruction,
    inference_threads,
    resolve_device,
)
from lens_ros.node_service import SegmentService
from lens_ros.node_stats import NodeStats
from lens_ros.ros_env import configure_dds
from lens_ros.srv import Segment

OUTPUT_QOS = 10
# NodeConfig fields that are lens_ros.model.pipeline.PipelineConfig fields of the same name.
PIPELINE_OPTIONS = frozenset({"mask_threshold", "use_box_prompt", "track_with_previous_box", "draft_tokens"})


class LensBehaviour(SegmentService):
    """What the node does; mixed into a plain Node (``LensNode``) or a LifecycleNode."""

    # -- set-up -------------------------------------------------------------------------
    def _init_state(self) -> None:
        self.config: NodeConfig = declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = NodeStats()
        self.pipeline = None
        self.device, self.dtype = "", ""
        self._pipeline_lock = threading.Lock()
        self._slot = LatestSlot()
        self._depth = StampBuffer(self.config.depth_buffer_size)
        self._info = StampBuffer(self.config.depth_buffer_size)
        self._instruction: Instruction | None = None
        self._instruction_lock = threading.Lock()
        self._latest_frame: Frame | None = None
        self._track_state = None
        self._state_version = -1
        self._last_reason = 0.0
        self._worker: threading.Thread | None = None
        self._running = threading.Event()
        self._io: list = []

    def _create_interfaces(self) -> None:
        cfg = self.config
        sensor_qos = QoSProfile(depth=cfg.image_queue_size, reliability=qos_profile_sensor_data.reliability)
        subscriptions = [(String, messages.INSTRUCTION_TOPIC, self._on_instruction, messages.latched_qos())]
        if cfg.use_compressed:
            subscriptions.append((CompressedImage, "image/compressed", self._on_image, sensor_qos))
        else:
            subscriptions.append((Image, "image", self._on_image, sensor_qos))
        self._depth_topic = self.resolve_topic_name("depth")  # after remapping
        if cfg.use_depth:
            subscriptions.append((Image, "depth", self._on_depth, sensor_qos))
            subscriptions.append((CameraInfo, "camera_info", self._on_camera_info, sensor_qos))
        # One group per subscription: in one shared group a callback that is ready while another
        # runs is skipped until the executor next wakes (the next message), so the depth of the
        # frame an instruction arrived with was taken a camera period late and missed its match.
        for msg_type, topic, callback, qos in subscriptions:
            group = MutuallyExclusiveCallbackGroup()
            self._io.append(self.create_subscription(msg_type, topic, callback, qos, callback_group=group))

        self.pub_segmentation = self.create_publisher(Segmentation, "~/segmentation", OUTPUT_QOS)
        self.pub_mask = self.create_publisher(Image, "~/mask", OUTPUT_QOS)
        self.pub_overlay = self.create_publisher(Image, "~/overlay", OUTPUT_QOS)
        self.pub_rationale = self.create_publisher(String, "~/rationale", messages.latched_qos())
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", OUTPUT_QOS)
        self.pub_pose = self.create_publisher(PoseStamped, "~/target_pose", OUTPUT_QOS)
        self.pub_cloud = self.create_publisher(PointCloud2, "~/target_cloud", OUTPUT_QOS)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._io += [self.pub_segmentation, self.pub_mask, self.pub_overlay, self.pub_rationale]
        self._io += [self.pub_markers, self.pub_pose, self.pub_cloud, self.pub_diagnostics]

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
        from lens_ros.model.pipeline import Pipeline

        cfg = self.config
        self.device, self.dtype = resolve_device(cfg.device, cfg.dtype)
        where = f" from {cfg.model_dir}" if cfg.model_dir else ""
        self.get_logger().info(
            f"loading model {cfg.model!r}{where} on {self.device} ({self.dtype}, segmenter {cfg.segmenter_backend}, "
            f"{inference_threads(cfg.cpu_threads)} CPU threads)"
        )
        if cfg.switch_interval_s > 0:
            sys.setswitchinterval(cfg.switch_interval_s)
        import torch

        torch.set_num_threads(inference_threads(cfg.cpu_threads))
        start = time.monotonic()
        pipeline = Pipeline.from_pretrained(
            cfg.model,
            device=self.device,
            dtype=self.dtype,
            segmenter_backend=cfg.segmenter_backend,
            model_dir=cfg.model_dir or None,
        )
        self._apply_pipeline_options(pipeline)
        with self._pipeline_lock:
            self.pipeline = pipeline
            self._track_state, self._state_version = None, -1
        self.get_logger().info(f"model ready in {time.monotonic() - start:.1f} s")

    def _apply_pipeline_options(self, pipeline) -> None:
        """Copy the node's segmenter options into the pipeline's config (also at runtime)."""
        options = {name: getattr(self.config, name) for name in PIPELINE_OPTIONS}
        config = getattr(pipeline, "config", None)
        if config is not None and dataclasses.is_dataclass(config):
            pipeline.config = dataclasses.replace(config, **options)

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

    # -- callbacks (short: store and return) --------------------------------------------
    def _on_image(self, msg) -> None:
        self.stats.event("image_in")
        frame = Frame(msg, time.monotonic())
        self._latest_frame = frame
        if self.pipeline is None:
            self.stats.drop("inactive")
            return
        if self._instruction is None:
            self.stats.drop("no_instruction")
            return
        if not self.config.track and self._state_version == self._instruction.version and not self._reason_due():
            self.stats.drop("not_tracking")
            return
        if not self._slot.put(frame):
            self.stats.drop("superseded")

    def _on_depth(self, msg: Image) -> None:
        self._depth.add(stamp_to_s(msg.header.stamp), msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._info.add(stamp_to_s(msg.header.stamp), msg)

    def _on_instruction(self, msg: String) -> None:
        text, problem = clean_instruction(msg.data, self.config.max_instruction_length)
        if problem:
            self.stats.event("instruction_rejected")
            self._report_bad_input(self._latest_header(), msg.data[:200], problem)
            return
        with self._instruction_lock:
            version = self._instruction.version + 1 if self._instruction else 0
            self._instruction = Instruction(text, version)
        self.stats.event("instruction")
        self.get_logger().info(f"new instruction: {text[:200]!r}")
        frame = self._latest_frame
        if frame is not None and self.pipeline is not None:
            # Answer on the newest frame without waiting for the next one. That frame may
            # already have been answered: "requeued" keeps the frame accounting exact
            # (image_in + requeued = published + dropped + in flight).
            self.stats.event("requeued")
            if not self._slot.put(frame):
                self.stats.drop("superseded")

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {}
        for param in params:
            problem = check_value(param.name, param.value) if hasattr(NodeConfig, param.name) else ""
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            if hasattr(NodeConfig, param.name):
                changes[param.name] = (
                    float(param.value) if isinstance(getattr(self.config, param.name), float) else param.value
                )
        self.config = self.config.replace(**changes)
        if self.pipeline is not None and PIPELINE_OPTIONS & changes.keys():
            self._apply_pipeline_options(self.pipeline)
        return SetParametersResult(successful=True)

    # -- worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while self._running.is_set():
            frame = self._slot.take(timeout=0.2)
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception as exc:  # the worker must survive anything a frame causes
                if not self.context.ok():  # shutting down: the publishers are gone
                    break
                self.stats.drop("error")
                self._note_error(f"unexpected error: {type(exc).__name__}: {exc}")

    def _reason_due(self) -> bool:
        interval = self.config.reason_interval_s
        return interval > 0 and time.monotonic() - self._last_reason >= interval

    def _process(self, frame: Frame) -> None:
        with self._instruction_lock:
            instruction = self._instruction
        reason = self._track_state is None or self._state_version != instruction.version or self._reason_due()
        if not reason and not self.config.track:
            self.stats.drop("not_tracking")
            return
        header = frame.msg.header
        try:
            decoded = self._decode(frame.msg)
        except BadInputError as exc:
            self.stats.drop("bad_image")
            self._report_bad_input(header, instruction.text, str(exc))
            return
        with self._pipeline_lock:
            if self.pipeline is None:
                self.stats.drop("inactive")
                return
            try:
                if reason:
                    result, state = self.pipeline.segment(decoded.rgb, instruction.text)
                    self._last_reason = time.monotonic()
                else:
                    result, state = self.pipeline.track(decoded.rgb, self._track_state)
            except BadInputError as exc:
                self.stats.drop("bad_input")
                self._report_bad_input(header, instruction.text, str(exc))
                return
            except Exception as exc:  # reported in ~/segmentation, node keeps running
                self._track_state, self._state_version = (None, -1)  # reason afresh next frame
                self._report_error(header, instruction.text, exc)
                return
            self._track_state, self._state_version = state, instruction.version
        self._attach_depth(decoded)
        self.stats.event("reasoned" if reason else "tracked")
        self.stats.latency("reasoning" if reason else "tracking", result.timings.total_ms)
        self._publish_result(decoded, instruction.text, result, frame.received)

    def _decode(self, msg) -> DecodedFrame:
        if isinstance(msg, CompressedImage):
            rgb = compressed_to_numpy(msg)
        else:
            rgb = to_rgb8(image_to_numpy(msg), msg.encoding)
        h, w = rgb.shape[:2]
        if h * w > self.config.max_image_pixels:
            raise BadInputError(f"image of {w}x{h} px exceeds max_image_pixels {self.config.max_image_pixels}")
        return DecodedFrame(msg.header, rgb)

    def _depth_expected(self) -> bool:
        """Depth is flowing, or about to: a publisher is there but nothing has arrived yet (the
        first frames after start-up, which a latched instruction is answered on)."""
        if self._depth.active():
            return True
        return self._depth.latest() is None and self.count_publishers(self._depth_topic) > 0

    def _attach_depth(self, decoded: DecodedFrame) -> None:
        """Find the depth and camera_info of the same time; 3D outputs are skipped (and counted) without.

        Called after the model: by then the frame's depth has arrived, so nothing waits in front
        of the model for it (a depth image can arrive a few ms after its colour image).
        """
        cfg = self.config
        if not (cfg.use_depth and self._depth_expected()):
            return
        stamp = stamp_to_s(decoded.header.stamp)
        depth_msg = self._depth.wait_nearest(stamp, cfg.sync_slop_s, cfg.sync_wait_s)
        # the camera_info of that time (waited for like the depth), else the newest: it rarely changes
        info = self._info.wait_nearest(stamp, cfg.sync_slop_s, cfg.sync_wait_s) or self._info.latest()
        if depth_msg is None or info is None:
            self.stats.event("depth_unmatched")
            return
        try:
            depth = geometry.depth_to_metres(image_to_numpy(depth_msg), depth_msg.encoding, cfg.depth_scale)
            decoded.k = geometry.intrinsics_for(np.asarray(info.k), (info.height, info.width), decoded.rgb.shape[:2])
            decoded.depth_m = geometry.resize_nearest(depth, decoded.rgb.shape[:2])
        except BadInputError as exc:
            self.stats.event("depth_rejected")
            self._note_error(f"depth ignored: {exc}")
            decoded.k = decoded.depth_m = None

    def _target_pose(self, decoded: DecodedFrame, mask: np.ndarray):
        """(pose, points) of the masked depth, or (None, None) when there is no usable depth."""
        if decoded.depth_m is None or not mask.any():
            return None, None
        cfg = self.config
        points, pixels = geometry.masked_points(mask, decoded.depth_m, decoded.k, cfg.min_depth_m, cfg.max_depth_m)
        try:
            pose = geometry.principal_pose(points)
        except BadInputError as exc:
            self.stats.event("no_depth_points")
            self._note_error(f"no pose: {exc}")
            return None, None
        if cfg.pose_position == "centre":
            pose = geometry.behind_visible_surface(pose)
        return pose, (points, pixels)

    # -- outputs --------------------------------------------------------------------------
    def _publish_result(
        self, decoded: DecodedFrame, instruction: str, result: SegmentationResult, received: float
    ) -> None:
        cfg = self.config
        header = decoded.header
        status, status_text = messages.status_of(result, cfg.min_score)
        usable = status in (Segmentation.STATUS_OK, Segmentation.STATUS_PARSE_FALLBACK)
        mask = result.masks[0] if result.masks.shape[0] else np.zeros(decoded.rgb.shape[:2], bool)
        pose, cloud = self._target_pose(decoded, mask) if usable else (None, None)
        mask_msg = messages.mask_image(mask, header)
        total_ms = (time.monotonic() - received) * 1000.0
        answer = dict(status=status, status_text=status_text, total_ms=total_ms, poses=[pose], mask_images=[mask_msg])
        self.pub_segmentation.publish(messages.segmentation_message(header, instruction, result, **answer))
        self.stats.event("published")
        self.stats.latency("total", total_ms)
        if cfg.publish_mask:
            self.pub_mask.publish(mask_msg)
        if cfg.publish_rationale and not result.tracked:
            self.pub_rationale.publish(String(data=messages.bounded(result.rationale or result.answer)))
        label = result.labels[0] if result.labels else instruction
        if cfg.publish_overlay:
            box = result.boxes[0] if usable and result.boxes.shape[0] else None
            score = float(result.scores[0]) if result.scores.size else None
            note = "tracked" if result.tracked else ""
            overlay = visualization.draw_overlay(
                decoded.rgb, mask if usable else None, box, label, score, note, cfg.overlay_alpha
            )
            self.pub_overlay.publish(numpy_to_image(overlay, "rgb8", header))
        if decoded.depth_m is not None:
            self._publish_3d(decoded, pose, cloud, label)

    def _publish_3d(self, decoded: DecodedFrame, pose, cloud, label: str) -> None:
        """Markers (cleared when there is no pose), target pose and the object's coloured points."""
        cfg, header = self.config, decoded.header
        if cfg.publish_markers:
            self.pub_markers.publish(visualization.target_markers(header, pose, label))
        if pose is not None and cfg.publish_pose:
            self.pub_pose.publish(messages.pose_stamped(header, pose))
        if pose is not None and cfg.publish_cloud:
            points, pixels = cloud
            keep = geometry.subsample(np.arange(len(points)), cfg.max_cloud_points)
            colours = decoded.rgb[pixels[keep, 0], pixels[keep, 1]]
            self.pub_cloud.publish(messages.point_cloud(header, points[keep], colours))

    def _report_bad_input(self, header: Header, instruction: str, problem: str) -> None:
        self.get_logger().warning(f"bad input: {problem}", throttle_duration_sec=2.0)
        self.stats.error(f"bad input: {problem}")
        self.pub_segmentation.publish(
            messages.segmentation_message(
                header, instruction, None, status=Segmentation.STATUS_BAD_INPUT, status_text=problem
            )
        )

    def _report_error(self, header: Header, instruction: str, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if "out of memory" in str(exc).lower():
            text = f"out of memory on {self.device}: {exc}"
            self._free_cuda_cache()
        self.stats.drop("error")
        self._note_error(text)
        self.pub_segmentation.publish(
            messages.segmentation_message(header, instruction, None, status=Segmentation.STATUS_ERROR, status_text=text)
        )

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
        values.update(
            model=self.config.model_dir or self.config.model,
            device=self.device,
            dtype=self.dtype,
            model_loaded=self.pipeline is not None,
            dropped_superseded_total=self._slot.dropped,
            instruction=self._instruction.text if self._instruction else "",
        )
        drafts = getattr(getattr(getattr(self.pipeline, "model", None), "decoder", None), "stats", None)
        if drafts is not None:  # speculative decoding: generated tokens per decoder step (1: none accepted)
            values.update(decode_tokens_per_step=round(drafts.tokens_per_step, 2), draft_generations=drafts.generations)
        if self.pipeline is None:
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

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        Node.__init__(self, node_name, **kwargs)
        self._init_state()
        self._create_interfaces()
        self._load_model()
        self._start_worker()

    def destroy_node(self) -> None:
        self._stop_worker()
        super().destroy_node()


class LensLifecycleNode(LensBehaviour, LifecycleNode):
    """Managed variant: configure creates the interfaces, activate loads the model,
    deactivate frees it (GPU memory back), cleanup removes the interfaces."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        LifecycleNode.__init__(self, node_name, **kwargs)
        self._init_state()

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


def main(args: list[str] | None = None) -> int:
    configure_dds()
    rclpy.init(args=args)
    cli = argparse.ArgumentParser(prog="lens_node", description="LENS language-instructed segmentation node")
    cli.add_argument("--lifecycle", action="store_true", help="run as a managed lifecycle node")
    options = cli.parse_args(rclpy.utilities.remove_ros_args(args)[1:])
    node, code = None, 0
    try:
        executor = MultiThreadedExecutor(num_threads=3)
        node = LensLifecycleNode() if options.lifecycle else LensNode()  # may load a model for minutes
        if rclpy.ok():  # Ctrl-C during start-up shuts the context down: then just exit
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (LensError, ValueError, OSError) as exc:
        if rclpy.ok():
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
            code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
