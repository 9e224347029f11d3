"""Data sets of the training pipeline; every source yields ``lens_training.data.dataset.Sample``."""
