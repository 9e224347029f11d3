"""Referring-segmentation metrics, as defined in the literature (LISA, LENS).

gIoU = mean over samples of per-sample IoU (a sample whose prediction and ground truth are
       both empty counts as IoU 1).
cIoU = cumulative intersection / cumulative union over all samples of a split.
Pixels marked ``ignore`` (ReasonSeg) count in neither intersection nor union.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lens_ros.regions import intersection_union, mask_iou

__all__ = ["SegmentationMeter", "intersection_union", "mask_iou"]


@dataclass
class SegmentationMeter:
    """Accumulates gIoU / cIoU for one split."""

    intersection: int = 0
    union: int = 0
    ious: list[float] = field(default_factory=list)

    def update(self, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
        inter, union = intersection_union(pred, gt, ignore)
        self.intersection += inter
        self.union += union
        iou = 1.0 if union == 0 else inter / union
        self.ious.append(iou)
        return iou

    @property
    def count(self) -> int:
        return len(self.ious)

    @property
    def giou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else 0.0

    @property
    def ciou(self) -> float:
        return self.intersection / self.union if self.union else 0.0

    def precision_at(self, threshold: float) -> float:
        """Fraction of samples with IoU >= threshold (Pr@0.5 etc.)."""
        return float(np.mean([iou >= threshold for iou in self.ious])) if self.ious else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "gIoU": self.giou,
            "cIoU": self.ciou,
            "Pr@0.5": self.precision_at(0.5),
            "Pr@0.7": self.precision_at(0.7),
            "Pr@0.9": self.precision_at(0.9),
            "count": self.count,
        }
