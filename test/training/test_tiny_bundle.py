"""The shipped embedded bundle (lens_ros/weights/lens-tiny): small, loadable, and better than chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

BUNDLE = Path(__file__).resolve().parents[2] / "lens_ros" / "weights" / "lens-tiny"
pytestmark = pytest.mark.skipif(not (BUNDLE / "config.json").is_file(), reason="embedded bundle not built")


def test_bundle_is_small_safetensors_with_its_tokenizer():
    files = {p.name for p in BUNDLE.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(name.endswith((".pt", ".pth", ".bin", ".pkl")) for name in files)
    size = sum(p.stat().st_size for p in BUNDLE.iterdir())
    assert size < 25 * 1024 * 1024, f"bundle is {size / 2**20:.1f} MB"


def _heldout(n: int):
    from training.data.synthetic_dataset import SyntheticWorldDataset

    return [SyntheticWorldDataset("heldout", n, (320, 240), 70_000_000)[i] for i in range(n)]


def _model_ciou(samples) -> float:
    from lens_ros.model.bundle import load_bundle
    from training.tiny.evaluate_tiny import evaluate_model

    return evaluate_model(load_bundle(BUNDLE), samples, 72, with_box_baseline=False)["context"]["all"]["cIoU"]


@pytest.mark.slow
def test_bundle_beats_the_whole_frame_mask_on_fresh_heldout_scenes():
    samples = _heldout(8)
    ciou = _model_ciou(samples)
    trivial = sum(s.mask.sum() for s in samples) / sum(s.mask.size for s in samples)
    assert ciou > 3 * trivial, f"cIoU {ciou:.3f} vs whole-frame mask {trivial:.3f}"


@pytest.mark.slow
@pytest.mark.xfail(
    reason="the shipped model (held-out cIoU ~0.18) does not yet beat picking a random object; "
    "see training/results/embedded_model.md",
    strict=False,
)
def test_bundle_beats_a_random_object_on_fresh_heldout_scenes():
    from training.data.synthetic_world import generate_sample

    n = 8
    ciou = _model_ciou(_heldout(n))
    inter = union = 0.0
    for i in range(n):  # chance: each object of the scene equally likely
        s = generate_sample(70_000_000 + i, "heldout", (320, 240))
        for o in s.objects:
            inter += np.logical_and(o.mask, s.target_mask).sum() / len(s.objects)
            union += np.logical_or(o.mask, s.target_mask).sum() / len(s.objects)
    chance = inter / union
    assert ciou > max(0.1, 1.5 * chance), f"cIoU {ciou:.3f} vs random-object chance {chance:.3f}"
