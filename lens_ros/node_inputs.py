"""What the node holds about its inputs: frames, the instruction, one unit of work, and the
depth that goes with a frame (no node class here; the rclpy parts are message types)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lens_ros import geometry
from lens_ros.frame_sync import StampBuffer, stamp_to_s
from lens_ros.image_conversion import compressed_to_numpy, image_to_numpy, to_rgb8
from lens_ros.model import prompts
from lens_ros.model.types import BadInputError
from lens_ros.msg import Segmentation


@dataclass
class Frame:
    """A camera frame as received (not yet decoded) and when it arrived."""

    msg: Image | CompressedImage
    received: float  # time.monotonic()


@dataclass(frozen=True)
class Instruction:
    text: str
    version: int  # increases with every accepted instruction message (a repeat reasons again)
    received: float = 0.0  # time.monotonic() when its message was taken


@dataclass
class WorkItem:
    """One unit of the worker's work: the frame to answer and the instruction it answers."""

    frame: Frame
    instruction: Instruction


@dataclass
class DecodedFrame:
    header: Header
    rgb: np.ndarray
    depth_m: np.ndarray | None = None
    k: np.ndarray | None = None


def clean_instruction(raw: str, max_length: int) -> tuple[str, str]:
    """(the instruction as the model gets it, "" or why it is rejected): ``prompts.clean_instruction``."""
    try:
        return prompts.clean_instruction(raw, max_length), ""
    except BadInputError as exc:
        return "", f"{exc} (max_instruction_length {max_length})" if "exceeds" in str(exc) else str(exc)


def decode_frame(msg: Image | CompressedImage, max_pixels: int) -> DecodedFrame:
    """RGB8 pixels of a camera message; ``BadInputError`` says what is wrong with it."""
    if isinstance(msg, CompressedImage):
        rgb = compressed_to_numpy(msg)
    else:
        rgb = to_rgb8(image_to_numpy(msg), msg.encoding)
    h, w = rgb.shape[:2]
    if h * w > max_pixels:
        raise BadInputError(f"image of {w}x{h} px exceeds max_image_pixels {max_pixels}")
    return DecodedFrame(msg.header, rgb)


class DepthInput:
    """The depth and camera_info streams and their matching to a colour frame by stamp.

    ``publishers``: how many publishers the depth topic has (so the first frames after
    start-up, before any depth arrived, still wait for theirs).
    """

    def __init__(self, buffer_size: int, publishers: Callable[[], int]) -> None:
        self.depth = StampBuffer(buffer_size)
        self.info = StampBuffer(buffer_size)
        self._publishers = publishers

    def expected(self) -> bool:
        """Depth is flowing, or about to: a publisher is there but nothing has arrived yet."""
        if self.depth.active():
            return True
        return self.depth.latest() is None and self._publishers() > 0

    def attach(self, frame: DecodedFrame, slop_s: float, wait_s: float, depth_scale: float) -> tuple[int, str]:
        """Set ``frame.depth_m``/``frame.k`` from the depth and camera_info of its time.

        Returns (Segmentation.DEPTH_*, reason): DEPTH_OK when attached; DEPTH_NO_DEPTH or
        DEPTH_NO_CAMERA_INFO when none arrived in time; DEPTH_BAD_DEPTH with the reason the
        depth or camera_info was rejected (then the frame has no depth). Called after the
        model: by then the frame's depth has arrived, so nothing waits in front of the model.
        """
        stamp = stamp_to_s(frame.header.stamp)
        depth_msg = self.depth.wait_nearest(stamp, slop_s, wait_s)
        if depth_msg is None:
            return Segmentation.DEPTH_NO_DEPTH, f"no depth image within {slop_s} s of the frame"
        # the camera_info of that time (waited for like the depth), else the newest: it rarely changes
        info = self.info.wait_nearest(stamp, slop_s, wait_s) or self.info.latest()
        if info is None:
            return Segmentation.DEPTH_NO_CAMERA_INFO, "no camera_info received"
        try:
            depth = geometry.depth_to_metres(image_to_numpy(depth_msg), depth_msg.encoding, depth_scale)
            frame.k = geometry.intrinsics_for(np.asarray(info.k), (info.height, info.width), frame.rgb.shape[:2])
            frame.depth_m = geometry.resize_nearest(depth, frame.rgb.shape[:2])
        except BadInputError as exc:
            frame.k = frame.depth_m = None
            return Segmentation.DEPTH_BAD_DEPTH, str(exc)
        return Segmentation.DEPTH_OK, ""


_TORCH_THREADS: list[int] = []  # torch's own default, read before the node first changes it


def inference_threads(requested: int) -> int:
    """Torch intra-op threads of the node: ``requested``, or for 0 torch's default (one per
    core) less one, at least one: the executor's threads receive camera frames meanwhile,
    and a torch thread that waits for a core holds up every parallel operation."""
    import torch

    if not _TORCH_THREADS:
        _TORCH_THREADS.append(torch.get_num_threads())
    return requested if requested > 0 else max(1, _TORCH_THREADS[0] - 1)
