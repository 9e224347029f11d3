"""Console entry points of training/ (lens-train, lens-eval).

They live here because importing ``lens_ros`` first makes ``training`` resolve to this
project's package rather than the unrelated one the sam2 wheel installs.
"""

from __future__ import annotations


def train() -> int | None:
    from training.cli import main

    return main()


def evaluate() -> int | None:
    from training.evaluate import main

    return main()
