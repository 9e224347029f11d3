"""lens-eval: metrics over a data set against hand-computed masks, JSON results, CLI."""

import json

import numpy as np
import pytest

import lens_training.evaluate as evaluate_module
from lens_training.data.dataset import ListDataset, Sample
from lens_training.evaluate import evaluate_dataset, main


def _sample(mask, kind):
    return Sample(
        np.zeros((*mask.shape, 3), np.uint8),
        "x",
        mask,
        np.array([0, 0, 2, 2], np.float32),
        meta={"kind": kind, "unseen_composition": kind == "simple"},
    )


def test_evaluate_dataset_against_hand_computed_masks(monkeypatch):
    gt_a = np.zeros((4, 4), bool)
    gt_a[:2, :2] = True  # 4 px
    gt_b = np.zeros((4, 4), bool)
    gt_b[:, :] = True  # 16 px
    pred_a = np.zeros((4, 4), bool)
    pred_a[:2, :] = True  # 8 px, 4 inside gt_a -> IoU 0.5
    pred_b = np.zeros((4, 4), bool)
    pred_b[:1, :] = True  # 4 px inside gt_b -> IoU 0.25
    preds = {id(gt_a): pred_a, id(gt_b): pred_b}

    def fake_predict(model, samples, cot, max_new_tokens):
        return [{"mask": preds[id(s.mask)], "text": "[0,0,2,2]", "box": (0, 0, 2, 2)} for s in samples]

    monkeypatch.setattr(evaluate_module, "predict_batch", fake_predict)

    class Model:
        def eval(self):
            return self

    result = evaluate_dataset(Model(), ListDataset([_sample(gt_a, "simple"), _sample(gt_b, "spatial")]), batch_size=1)
    assert result["gIoU"] == pytest.approx((0.5 + 0.25) / 2)
    assert result["cIoU"] == pytest.approx((4 + 4) / (8 + 16))
    assert result["parse_rate"] == 1.0 and result["box_iou"] == pytest.approx(1.0)
    assert result["groups"]["kind=spatial"]["gIoU"] == pytest.approx(0.25)
    assert result["groups"]["unseen_composition"]["count"] == 1


def test_lens_eval_cli_writes_json_per_split(tmp_path, tiny_lens):
    from lens_ros.model.bundle import save_bundle

    bundle = save_bundle(tmp_path / "bundle", tiny_lens)
    out = tmp_path / "results.json"
    assert (
        main(
            [
                "--model",
                str(bundle),
                "--data",
                "synthetic:val:2:64x48,synthetic:heldout:2:64x48",
                "--out",
                str(out),
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    assert set(results["splits"]) == {"synthetic:val:2:64x48", "synthetic:heldout:2:64x48"}
    for split in results["splits"].values():
        assert split["count"] == 2 and 0.0 <= split["gIoU"] <= 1.0 and 0.0 <= split["cIoU"] <= 1.0
