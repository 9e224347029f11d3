"""gIoU / cIoU against hand-computed masks."""

import numpy as np
import pytest

from lens_training.metrics import SegmentationMeter, mask_iou


def _mask(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_giou_is_mean_of_ious_ciou_is_cumulative():
    meter = SegmentationMeter()
    # sample 1: pred 2x2 inside gt 2x4 -> I=4, U=8, IoU 0.5
    meter.update(_mask((4, 4), 0, 2, 0, 2), _mask((4, 4), 0, 2, 0, 4))
    # sample 2: identical 1x1 -> I=1, U=1, IoU 1
    meter.update(_mask((4, 4), 3, 4, 3, 4), _mask((4, 4), 3, 4, 3, 4))
    # sample 3: disjoint 1x2 vs 1x2 -> I=0, U=4, IoU 0
    meter.update(_mask((4, 4), 0, 1, 0, 2), _mask((4, 4), 3, 4, 0, 2))
    assert meter.giou == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert meter.ciou == pytest.approx((4 + 1 + 0) / (8 + 1 + 4))
    assert meter.precision_at(0.5) == pytest.approx(2 / 3)
    assert meter.summary()["count"] == 3


def test_empty_prediction_and_empty_gt_is_iou_one():
    empty = np.zeros((3, 3), bool)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(empty, _mask((3, 3), 0, 1, 0, 1)) == 0.0


def test_ignored_pixels_count_nowhere():
    gt = _mask((4, 4), 0, 2, 0, 2)
    pred = _mask((4, 4), 0, 2, 0, 4)  # 4 extra pixels, 2 of them ignored
    ignore = _mask((4, 4), 0, 1, 2, 4)
    assert mask_iou(pred, gt, ignore) == pytest.approx(4 / 6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.zeros((2, 2), bool), np.zeros((3, 3), bool))
