"""Tiny random LENS models shared by the model tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tiny_bundle: Path):
    """The session's tiny random bundle (SAM segmenter), loaded."""
    from lens_ros.model.bundle import load_bundle

    return load_bundle(tiny_bundle)


@pytest.fixture(scope="session")
def tiny_sam2_bundle(tmp_path_factory) -> Path:
    from lens_ros.model.tiny import build_tiny_random_bundle

    return build_tiny_random_bundle(tmp_path_factory.mktemp("tiny_sam2_bundle"), seed=1, segmenter="sam2")


@pytest.fixture
def scene() -> np.ndarray:
    """A 60x80 RGB test image with a bright square (some structure for the encoders)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 80, (60, 80, 3), dtype=np.uint8)
    image[15:40, 20:50] = (220, 40, 40)
    return image
