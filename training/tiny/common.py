"""Pieces shared by the time-budgeted pre-training runs of LENS-tiny.

Both runs are budgeted in wall-clock minutes (the CPU is shared, so steps per minute
vary): the learning rate follows a warm-up + cosine curve over the fraction of the budget
spent, and the spent time is part of the checkpoint, so a resumed run continues the same
curve. Data are world seeds handed out in order, so the data stream resumes exactly too.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class SeedStream:
    """Consecutive world seeds: batch k of size B is seeds [offset + k*B, offset + (k+1)*B)."""

    batch_size: int
    offset: int = 0
    consumed: int = 0

    def next(self) -> list[int]:
        start = self.offset + self.consumed * self.batch_size
        self.consumed += 1
        return list(range(start, start + self.batch_size))

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["consumed"])


class TimeBudgetSchedule:
    """lr = base * (warm-up over ``warmup_steps``, then cosine to ``min_ratio`` over the budget).

    ``elapsed`` counts training seconds across resumes (saved with the checkpoint).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, budget_s: float, warmup_steps: int, min_ratio: float = 0.1):
        self.optimizer = optimizer
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.budget_s, self.warmup_steps, self.min_ratio = budget_s, warmup_steps, min_ratio
        self.elapsed = 0.0
        self.step_count = 0
        self._t0 = time.monotonic()

    def factor(self) -> float:
        if self.step_count < self.warmup_steps:
            return (self.step_count + 1) / self.warmup_steps
        progress = min(1.0, self.elapsed / max(self.budget_s, 1.0))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def tick(self) -> None:
        """Call once per optimizer step (before it): updates elapsed time and the lr."""
        now = time.monotonic()
        self.elapsed += now - self._t0
        self._t0 = now
        f = self.factor()
        for g, base in zip(self.optimizer.param_groups, self.base, strict=False):
            g["lr"] = base * f
        self.step_count += 1

    def pause(self) -> None:
        """Exclude the time of evaluation / checkpointing from the budget clock."""
        self._t0 = time.monotonic()

    def exclude_stopped_time(self) -> None:
        """Do not count time the process spent stopped (``kill -STOP``, then ``kill -CONT``).

        Lets a long run on a shared machine be frozen while something else needs the CPU
        (a benchmark) without the cosine curve jumping ahead: on SIGCONT the clock restarts
        from now, so at most the step in progress before the stop is counted. Main thread only
        (where Python delivers signals); elsewhere a no-op.
        """
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGCONT"):
            signal.signal(signal.SIGCONT, lambda *_: self.pause())

    @property
    def done(self) -> bool:
        return self.elapsed >= self.budget_s

    def state_dict(self) -> dict[str, float]:
        return {"elapsed": self.elapsed, "step_count": self.step_count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.elapsed = float(state["elapsed"])
        self.step_count = int(state["step_count"])
        self._t0 = time.monotonic()


def setup_logging(out: Path, name: str) -> logging.Logger:
    """Log to <out>/<name>.log and stdout."""
    out.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.FileHandler(out / f"{name}.log"), logging.StreamHandler(sys.stdout)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def resume_if_possible(
    ckpt_dir: Path, model, opt, sched: TimeBudgetSchedule, seeds: SeedStream, budget_s: float, log: logging.Logger
) -> int:
    """Load the newest checkpoint in ``ckpt_dir`` (if any) and return its step (0 when none).

    The time budget is taken from the current command line, so a run resumed with a larger
    ``--minutes`` continues the same schedule over the longer budget.
    """
    from lens_training.runtime import latest_checkpoint, load_checkpoint

    last = latest_checkpoint(ckpt_dir)
    if last is None:
        return 0
    state = load_checkpoint(last, model, opt, sched, seeds)
    sched.budget_s = budget_s
    log.info(f"resumed from {last} at step {int(state['step'])}, {sched.elapsed / 60:.1f} min spent")
    return int(state["step"])
