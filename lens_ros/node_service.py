"""The node's one-shot ``~/segment`` service (lens_ros/Segment): an instruction answered on the
request's image, or the newest camera frame, without changing what the node tracks.

A mixin of ``lens_ros.node.LensBehaviour``: it uses the node's pipeline (under its lock),
frame decoding, depth matching, pose and counters.
"""

from __future__ import annotations

import time

import numpy as np
from std_msgs.msg import Header

from lens_ros import messages
from lens_ros.model.types import BadInputError
from lens_ros.msg import Segmentation
from lens_ros.node_inputs import clean_instruction


class SegmentService:
    def _on_segment_service(self, request, response):
        """One-shot segmentation; does not change the instruction being tracked."""
        received = time.monotonic()
        instruction, problem = clean_instruction(request.instruction, self.config.max_instruction_length)
        if problem:
            return self._service_failure(response, Segmentation.STATUS_BAD_INPUT, problem)
        msg = request.image
        if msg.width == 0 or msg.height == 0:
            if self._latest_frame is None:
                return self._service_failure(
                    response, Segmentation.STATUS_BAD_INPUT, "empty request image and no camera frame received yet"
                )
            msg = self._latest_frame.msg
        try:
            decoded = self._decode(msg)
        except BadInputError as exc:
            return self._service_failure(response, Segmentation.STATUS_BAD_INPUT, str(exc), msg.header)
        with self._pipeline_lock:
            if self.pipeline is None:
                return self._service_failure(
                    response, Segmentation.STATUS_ERROR, "model not loaded (inactive)", msg.header
                )
            try:
                result, _ = self.pipeline.segment(decoded.rgb, instruction)
            except BadInputError as exc:
                return self._service_failure(response, Segmentation.STATUS_BAD_INPUT, str(exc), msg.header)
            except Exception as exc:  # reported in the response
                return self._service_failure(
                    response, Segmentation.STATUS_ERROR, f"{type(exc).__name__}: {exc}", msg.header
                )
        self.stats.event("service")
        self._attach_depth(decoded)
        status, status_text = messages.status_of(result, self.config.min_score)
        mask = result.masks[0] if result.masks.shape[0] else np.zeros(decoded.rgb.shape[:2], bool)
        pose, _ = self._target_pose(decoded, mask)
        response.result = messages.segmentation_message(
            decoded.header,
            instruction,
            result,
            status=status,
            status_text=status_text,
            total_ms=(time.monotonic() - received) * 1000.0,
            poses=[pose],
        )
        response.success = status in (Segmentation.STATUS_OK, Segmentation.STATUS_PARSE_FALLBACK)
        response.message = status_text or "ok"
        return response

    def _service_failure(self, response, status: int, text: str, header: Header | None = None):
        self.stats.event("service_rejected")
        self.get_logger().warning(f"~/segment: {text}", throttle_duration_sec=1.0)
        response.success = False
        response.message = messages.bounded(text, 1024)
        response.result = messages.segmentation_message(header or Header(), "", None, status=status, status_text=text)
        return response
