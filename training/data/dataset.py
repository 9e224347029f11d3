"""One data-set interface for every source: RefCOCO*, ReasonSeg, the synthetic world.

A data set is anything with ``__len__`` and ``__getitem__(i) -> Sample`` (a map-style
``torch.utils.data.Dataset``). Images keep their own resolution; resizing for the MLLM and
the segmenter belongs to the model, so ``collate`` returns lists plus the few fields that
stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from lens_ros.regions import mask_box


@dataclass
class Sample:
    """One (image, expression) -> (mask, box) example.

    image: (H, W, 3) uint8 RGB.
    expression: the referring expression or reasoning question.
    mask: (H, W) bool ground-truth mask of the referred object(s).
    box: (4,) float32 xyxy in image pixels (the mask's tight box for mask sources).
    rationale: optional chain of thought for the answer (CoT sources), "" when none.
    ignore: optional (H, W) bool, pixels excluded from evaluation (ReasonSeg "ignore").
    meta: source-specific identifiers (split, ids) for logs and per-split tables.
    """

    image: np.ndarray
    expression: str
    mask: np.ndarray
    box: np.ndarray
    rationale: str = ""
    ignore: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class SegmentationDataset(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


@dataclass
class Batch:
    """A list of samples plus the few fields that stack (boxes)."""

    images: list[np.ndarray]
    expressions: list[str]
    masks: list[np.ndarray]
    boxes: torch.Tensor  # (B, 4) float32 xyxy, image pixels
    rationales: list[str]
    ignores: list[np.ndarray | None]
    meta: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.images)


def collate(samples: Sequence[Sample]) -> Batch:
    """Collate samples of different image sizes into a ``Batch`` (use as DataLoader collate_fn)."""
    return Batch(
        images=[s.image for s in samples],
        expressions=[s.expression for s in samples],
        masks=[s.mask for s in samples],
        boxes=torch.as_tensor(np.stack([np.asarray(s.box, np.float32) for s in samples])).reshape(-1, 4),
        rationales=[s.rationale for s in samples],
        ignores=[s.ignore for s in samples],
        meta=[s.meta for s in samples],
    )


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight box of a data set's target mask; zeros for an empty one (a sample with no visible target)."""
    box = mask_box(mask)
    return np.zeros(4, np.float32) if box is None else box


def check_sample(sample: Sample) -> None:
    """Raise ValueError when a sample breaks the interface (shapes, dtypes)."""
    image, mask = sample.image, sample.mask
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2] or mask.dtype != np.bool_:
        raise ValueError(f"mask must be (H, W) bool matching the image, got {mask.shape} {mask.dtype}")
    if np.asarray(sample.box).shape != (4,):
        raise ValueError(f"box must be (4,) xyxy, got {np.asarray(sample.box).shape}")
    if sample.ignore is not None and sample.ignore.shape != mask.shape:
        raise ValueError(f"ignore mask {sample.ignore.shape} does not match mask {mask.shape}")


class ListDataset:
    """A data set over samples already in memory (tests, small fixed batches)."""

    def __init__(self, samples: Sequence[Sample]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]
