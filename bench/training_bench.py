"""Training throughput of LENS-tiny with the real stage code (no ROS, no checkpoints).

- stage 1 (``lens_training.stage1.train_stage1``: context module only, BCE + Dice), batch 8:
  samples/s and steps/s with the data synthesised in the training loop (num_workers=0,
  the baseline) vs one data-loader process (num_workers=1), and their ratio;
- stage 2 (``lens_training.stage2.train_stage2``: GRPO rollouts, reference log-probs, policy
  forward/backward + BCE/Dice), batch 2 prompts x group 4, 72 new tokens at most:
  prompts/s and rollouts/s.

Configurations as ``lens_training.tiny.build_embedded`` sets them (CoT, fp32, lr/warm-up, stage 2
with seed 1 and beta 0.04), starting from the shipped bundle ``lens_ros/weights/lens-tiny``
on ``synthetic:train:100000:320x240``; out_dir in a temporary directory, TensorBoard,
progress bar and intermediate checkpoints off (the final export runs after the timed loop).

Warm-up: ``TrainResult.seconds`` covers every step, so a global optimizer step-post hook
stamps the end of each step and the rates are over steps 2..n (step 1 pays for lazy
initialisation, the first allocations and the loader process's start-up).

    python -m bench.run --only training [--quick] [--device cuda]
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

DATA = "synthetic:train:100000:320x240"
# as in lens_training.tiny.build_embedded's stage configurations (which the runs use)
STAGE1_BATCH = 8
STAGE2_BATCH, GROUP_SIZE, MAX_NEW_TOKENS = 2, 4, 72


def tiny_bundle() -> str:
    from lens_ros.model.presets import PACKAGE_DIR

    return str(PACKAGE_DIR / "weights" / "lens-tiny")


def _configs(steps1: int, steps2: int, workers: int, device: str, out: str):
    """The embedded build's stage configurations (lens_training.tiny.build_embedded), shortened,
    on the shipped bundle, without TensorBoard or intermediate checkpoints."""
    import dataclasses

    from lens_training.tiny.build_embedded import BuildConfig, stage1_config, stage2_config

    build = BuildConfig(
        stage1_steps=steps1, stage2_steps=steps2, device=device, workers=workers, threads=torch.get_num_threads()
    )
    quiet = {"ckpt_every": 0, "tensorboard": False}
    s1 = dataclasses.replace(stage1_config(build, tiny_bundle(), out), data=DATA, **quiet)
    s2 = dataclasses.replace(stage2_config(build, tiny_bundle(), "", out), data=DATA, **quiet)
    return s1, s2


def timed_run(train_fn, cfg) -> dict:
    """Run ``train_fn(cfg)``; the end time of every optimizer step -> steady-state rates."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    cuda = torch.device(cfg.device).type == "cuda"
    stamps: list[float] = []

    def stamp(*_):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    handle = register_optimizer_step_post_hook(stamp)
    try:
        result = train_fn(cfg)
    finally:
        handle.remove()
    if len(stamps) != result.steps or result.steps < 2:
        raise RuntimeError(f"{len(stamps)} optimizer steps stamped for {result.steps} training steps")
    per_step = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    first_step = result.seconds - (stamps[-1] - stamps[0])  # loader creation to the end of step 1
    return {
        "timed_steps": len(per_step),
        "seconds_per_step": (stamps[-1] - stamps[0]) / len(per_step),
        "median_step_s": statistics.median(per_step),
        "first_step_s": first_step,
        "history": result.history,
    }


def run(quick: bool, device: str = "cpu") -> dict:
    from lens_training.stage1 import train_stage1
    from lens_training.stage2 import train_stage2

    stage1_steps, stage2_steps = (4, 3) if quick else (25, 12)
    stage1_rows = []
    baseline = None
    for workers in (0, 1):
        with tempfile.TemporaryDirectory(prefix="lens-bench-s1-") as out:
            r = timed_run(train_stage1, _configs(stage1_steps, stage2_steps, workers, device, out)[0])
        steps_per_s = 1 / r["seconds_per_step"]
        row = {
            "data": "in the training loop (num_workers=0)" if workers == 0 else "1 loader process (num_workers=1)",
            "timed_steps": r["timed_steps"],
            "s_per_step": r["seconds_per_step"],
            "median_step_s": r["median_step_s"],
            "first_step_s": r["first_step_s"],
            "steps_per_s": steps_per_s,
            "samples_per_s": steps_per_s * STAGE1_BATCH,
        }
        if baseline is None:
            baseline = steps_per_s
        else:
            row["ratio_vs_workers0"] = steps_per_s / baseline
        stage1_rows.append(row)

    with tempfile.TemporaryDirectory(prefix="lens-bench-s2-") as out:
        r = timed_run(train_stage2, _configs(stage1_steps, stage2_steps, 0, device, out)[1])
    steps_per_s = 1 / r["seconds_per_step"]
    lengths = [h["stage2/completion_length"] for h in r["history"][1:] if "stage2/completion_length" in h]
    stage2_rows = [
        {
            "data": "in the training loop (num_workers=0)",
            "timed_steps": r["timed_steps"],
            "s_per_step": r["seconds_per_step"],
            "median_step_s": r["median_step_s"],
            "first_step_s": r["first_step_s"],
            "steps_per_s": steps_per_s,
            "prompts_per_s": steps_per_s * STAGE2_BATCH,
            "rollouts_per_s": steps_per_s * STAGE2_BATCH * GROUP_SIZE,
            "mean_completion_tokens": sum(lengths) / len(lengths) if lengths else None,
        }
    ]
    common = ["data", "timed_steps", "s_per_step", "median_step_s", "first_step_s", "steps_per_s"]
    return {
        "note": (
            f"Model: {tiny_bundle()} (lens-tiny); data {DATA}; CoT; fp32; device {device}; torch threads "
            f"{torch.get_num_threads()}. Rates over steps 2..n (end of step 1 to end of step n, optimizer "
            f"step hook); first_step_s: loader creation to the end of step 1. Stage 2: rollout engine hf, "
            f"batch {STAGE2_BATCH} prompts x group {GROUP_SIZE}, at most {MAX_NEW_TOKENS} new tokens, "
            "KL reference copy (beta 0.04); its cost depends on the sampled completion lengths."
        ),
        "sections": {
            f"stage 1 (batch {STAGE1_BATCH})": {
                "columns": [*common, "samples_per_s", "ratio_vs_workers0"],
                "rows": stage1_rows,
            },
            f"stage 2 (batch {STAGE2_BATCH} x group {GROUP_SIZE}, {MAX_NEW_TOKENS} tokens max)": {
                "columns": [*common, "prompts_per_s", "rollouts_per_s", "mean_completion_tokens"],
                "rows": stage2_rows,
            },
        },
    }
