"""Shared fixtures of the training tests: one CPU thread, tiny everything."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
