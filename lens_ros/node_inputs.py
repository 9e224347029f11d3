"""What the node holds about its inputs: frames, the instruction, and their checks (no rclpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


@dataclass
class Frame:
    """A camera frame as received (not yet decoded) and when it arrived."""

    msg: Image | CompressedImage
    received: float  # time.monotonic()


@dataclass
class Instruction:
    text: str
    version: int  # increases with every accepted instruction message


@dataclass
class DecodedFrame:
    header: Header
    rgb: np.ndarray
    depth_m: np.ndarray | None = None
    k: np.ndarray | None = None


def resolve_device(device: str, dtype: str) -> tuple[str, str]:
    """'auto' -> cuda when available (bfloat16 there, float32 on the CPU); a missing GPU is a clear error."""
    if device == "auto" or device.startswith("cuda"):
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here (use device:=cpu or auto)")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def clean_instruction(raw: str, max_length: int) -> tuple[str, str]:
    """(instruction with whitespace and control characters collapsed, "" or why it is rejected)."""
    if len(raw) > 4 * max_length:  # refuse before scanning megabytes
        return "", f"instruction of {len(raw)} characters exceeds max_instruction_length {max_length}"
    text = " ".join("".join(c if c.isprintable() else " " for c in raw).split())
    if not text:
        return "", "empty instruction"
    if len(text) > max_length:
        return "", f"instruction of {len(text)} characters exceeds max_instruction_length {max_length}"
    return text, ""


_TORCH_THREADS: list[int] = []  # torch's own default, read before the node first changes it


def inference_threads(requested: int) -> int:
    """Torch intra-op threads of the node: ``requested``, or for 0 torch's default (one per
    core) less one, at least one: the executor's threads receive camera frames meanwhile,
    and a torch thread that waits for a core holds up every parallel operation (2-core CPU,
    through ROS: first mask 308 -> 215 ms, tracking 23 -> 30 Hz with 1 thread instead of 2)."""
    import torch

    if not _TORCH_THREADS:
        _TORCH_THREADS.append(torch.get_num_threads())
    return requested if requested > 0 else max(1, _TORCH_THREADS[0] - 1)
