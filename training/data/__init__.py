"""Data sets of the training pipeline; every source yields ``training.data.dataset.Sample``."""
