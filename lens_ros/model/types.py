"""Plain data types at the boundary of the ROS-free Pipeline.

These are the contract between the model core, the node, the CLI, training's
evaluation and the benchmarks: change them with all of those in mind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class LensError(Exception):
    """Base class of the errors lens_ros raises on purpose (bad input, bad files)."""


class BadInputError(LensError, ValueError):
    """An image, depth map or instruction that cannot be processed."""


class ConfigError(LensError, ValueError):
    """A configuration file or override that cannot be used; the message says which key."""


class ModelFileError(LensError, OSError):
    """A missing, corrupt or inconsistent model file; the message names the path."""


@dataclass
class Timings:
    """Milliseconds spent in each part of one Pipeline call."""

    preprocess_ms: float = 0.0
    generate_ms: float = 0.0  # MLLM prefill + decode
    context_ms: float = 0.0  # context queries through the MLLM + connector
    encoder_ms: float = 0.0  # segmenter image encoder (0 when the embedding was cached)
    decoder_ms: float = 0.0  # segmenter prompt encoder + mask decoder
    total_ms: float = 0.0
    num_generated_tokens: int = 0

    @property
    def reasoning_ms(self) -> float:
        return self.generate_ms + self.context_ms

    @property
    def segmentation_ms(self) -> float:
        return self.encoder_ms + self.decoder_ms


@dataclass
class SegmentationResult:
    """What the Pipeline says about one (image, instruction).

    masks: (N, H, W) bool at the input image's resolution (N is 0 or 1 today).
    boxes: (N, 4) float32 xyxy in input-image pixels (from the mask when non-empty,
           else from the MLLM's parsed box).
    scores: (N,) float32 in [0, 1].
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]
    rationale: str = ""
    answer: str = ""  # raw MLLM completion
    parsed_box: np.ndarray | None = None  # the MLLM's box (xyxy, input-image pixels) if parsable
    parse_error: str = ""  # why the answer could not be parsed ("" when it could)
    tracked: bool = False  # True when produced by Pipeline.track (no MLLM)
    timings: Timings = field(default_factory=Timings)

    @property
    def empty(self) -> bool:
        return self.masks.shape[0] == 0 or not bool(self.masks.any())


def short_repr(value) -> str:
    """A bounded repr for error messages: a YAML alias bomb or a huge string must not expand
    into a multi-megabyte log line."""
    import reprlib

    r = reprlib.Repr()  # attributes, not keywords: Python 3.11
    r.maxstring = r.maxother = 80
    r.maxlist = r.maxtuple = r.maxdict = 6
    r.maxlevel = 3
    return r.repr(value)
