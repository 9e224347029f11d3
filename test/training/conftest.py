"""Shared fixtures of the training tests: one CPU thread, tiny everything."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_lens_base():
    """One tiny random LensModel per session (building it takes seconds); copy it per test."""
    from lens_ros.model.tiny import build_tiny_random_model

    torch.set_num_threads(1)
    model, _, _ = build_tiny_random_model(seed=0)
    return model


@pytest.fixture
def tiny_lens(tiny_lens_base):
    import copy

    return copy.deepcopy(tiny_lens_base)


@pytest.fixture(scope="session")
def world_batch_samples():
    """Four small synthetic-world samples (64x48)."""
    from lens_training.data.synthetic_dataset import SyntheticWorldDataset

    ds = SyntheticWorldDataset("train", length=4, size=(64, 48))
    return [ds[i] for i in range(4)]
