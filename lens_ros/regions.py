"""Boxes and masks: the one definition of each measure the node, the world and training share.

Boxes are xyxy with end-exclusive pixel edges (a one-pixel mask at (x, y) has the box
(x, y, x + 1, y + 1)); masks are (H, W) bool arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes; 0 when their union is empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """(4,) float32 tight box of a bool mask, or None when the mask is empty (no box to give)."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def intersection_union(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> tuple[int, int]:
    """Pixel counts of (pred & gt, pred | gt) for two (H, W) masks; ``ignore`` pixels count in neither."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if ignore is not None:
        keep = ~np.asarray(ignore, bool)
        pred, gt = pred & keep, gt & keep
    return int((pred & gt).sum()), int((pred | gt).sum())


def mask_iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of two masks; 1.0 when both are empty (they agree)."""
    inter, union = intersection_union(pred, gt, ignore)
    return 1.0 if union == 0 else inter / union
