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


@pytest.mark.slow
def test_bundle_segments_fresh_heldout_scenes_better_than_a_random_object():
    """cIoU of the shipped model vs the expected cIoU of picking a random visible object."""
    from lens_ros.model.bundle import load_bundle
    from training.data.synthetic_world import generate_sample
    from training.tiny.evaluate_tiny import evaluate_model
    from training.data.synthetic_dataset import SyntheticWorldDataset

    model = load_bundle(BUNDLE)
    n = 8
    samples = [SyntheticWorldDataset("heldout", n, (320, 240), 70_000_000)[i] for i in range(n)]
    result = evaluate_model(model, samples, 72, with_box_baseline=False)
    ciou = result["context"]["all"]["cIoU"]
    inter = union = 0.0
    for i in range(n):  # chance: each object of the scene equally likely
        s = generate_sample(70_000_000 + i, "heldout", (320, 240))
        for o in s.objects:
            inter += np.logical_and(o.mask, s.target_mask).sum() / len(s.objects)
            union += np.logical_or(o.mask, s.target_mask).sum() / len(s.objects)
    chance = inter / union
    assert ciou > max(0.1, 1.5 * chance), f"cIoU {ciou:.3f} vs random-object chance {chance:.3f}"
