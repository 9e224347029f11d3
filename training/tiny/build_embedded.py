"""Build the embedded LENS-tiny bundle from scratch on a CPU, one command:

    python -m lens_training.tiny.build_embedded --work runs/tiny --out lens_ros/weights/lens-tiny

Chain (every step resumes or is skipped when its output exists):
 1. pre-training substitutes, run side by side: ``pretrain_sam`` (tiny SAM on the world's
    masks) and ``pretrain_mllm`` (tiny Qwen2.5-VL SFT on rationales + boxes; it also writes
    the word-level tokenizer);
 2. assemble the base LensModel (pretrained MLLM + SAM + a fresh ContextModule) -> <work>/base;
 3. stage 1 (``lens_training.stage1``: context module only, BCE + Dice) -> <work>/stage1/final;
 4. stage 2 (``lens_training.stage2``: GRPO + BCE/Dice, CoT format reward) -> <work>/stage2/final;
 5. evaluation on fresh val (seen compositions) and held-out (unseen compositions and
    phrasings) scenes: the box-prompt baseline, stage 1 and stage 2 ->
    training/results/embedded_model.json + .md;
 6. export of the best model on val as the shipped bundle (fp16 weights, < 25 MB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lens_training.tiny.config import TINY_SAM

SYNTHETIC_FRAME = "320x240"  # 4:3 frames: the MLLM sees 160x128, SAM 320x240


@dataclass
class BuildConfig:
    work: str = "runs/tiny"
    out: str = "lens_ros/weights/lens-tiny"
    results: str = "training/results/embedded_model"
    sam_minutes: float = 55.0
    mllm_minutes: float = 65.0
    stage1_steps: int = 300
    stage1_batch: int = 8
    stage1_lr: float = 1e-3
    stage1_minutes: float = 0.0  # > 0: time limit of stage 1 (on top of its steps)
    stage2_steps: int = 30
    stage2_lr: float = 1e-5
    stage2_minutes: float = 0.0
    stage2_prompts: int = 4  # prompts per micro-batch
    stage2_accum: int = 8  # micro-batches per optimizer step: 32 prompts per step
    stage2_group: int = 8  # completions per prompt
    stage2_hit: float = 1.0  # hit reward weight (0: LENS's rewards only)
    stage2_std_floor: float = 0.3  # advantage std floor (0: LENS)
    stage2_seg_on_misses: int = 0  # 1: BCE + Dice on every rollout (LENS)
    eval_samples: int = 300
    compare: str = ""  # a bundle evaluated on the same scenes as a baseline row (e.g. the shipped one)
    threads: int = 2
    device: str = "cpu"  # "cuda": pre-training, stage 1 and stage 2 on a GPU (same code, same data)
    workers: int = 0  # data-loader processes for the MLLM pre-training and stages 1/2
    skip: str = ""  # comma-separated steps to skip: pretrain,stage1,stage2,baseline,eval,export
    context_norm: int = 1  # 0: the context module without the LayerNorm before proj_to_sam


def run_pretraining(cfg: BuildConfig) -> None:
    """Both substitutes at once (SAM on 1 thread, the MLLM on the rest); each resumes."""
    work = Path(cfg.work)
    env_cmd = [sys.executable, "-m"]
    procs = [
        subprocess.Popen(
            [
                *env_cmd,
                "lens_training.tiny.pretrain_sam",
                "--out",
                str(work / "sam"),
                "--minutes",
                str(cfg.sam_minutes),
                "--threads",
                "1",
            ]
        ),
        subprocess.Popen(
            [
                *env_cmd,
                "lens_training.tiny.pretrain_mllm",
                "--out",
                str(work / "mllm"),
                "--minutes",
                str(cfg.mllm_minutes),
                "--threads",
                str(cfg.threads),
                "--device",
                cfg.device,
                "--workers",
                str(max(cfg.workers, 1)),
            ]
        ),
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"pre-training failed with exit codes {codes}")


def context_config(hidden: int, normalize: bool = True):
    from lens_ros.model.context_module import ContextModuleConfig

    # connector depth 2 (LENS: 4) keeps the bundle under 25 MB; the Conv1d over the 64
    # queries alone is hidden^2 * 64 = 4.2 M parameters.
    return ContextModuleConfig(
        hidden_size=hidden,
        num_queries=64,
        out_dim=TINY_SAM.prompt_embed_dim,
        connector_depth=2,
        connector_heads=4,
        normalize_collapsed=normalize,  # without it the GELU of proj_to_sam died in stage 1
    )


def assemble_base(work: Path, context_norm: bool = True) -> Path:
    """Pretrained MLLM + pretrained SAM + fresh context module -> bundle <work>/base."""
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from lens_ros.model.bundle import save_bundle
    from lens_ros.model.lens import LensConfig, LensModel
    from lens_ros.model.mllm import load_tokenizer
    from lens_ros.model.sam_backend import SamSegmenter
    from lens_training.tiny.pretrain_mllm import MLLMPretrainConfig, tiny_image_config

    tokenizer = load_tokenizer(work / "mllm" / "tokenizer")
    qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(work / "mllm" / "qwen"), dtype=torch.float32)
    seg = SamSegmenter(TINY_SAM)
    seg.sam.load_state_dict(load_file(str(work / "sam" / "sam.safetensors")))
    config = LensConfig(
        qwen=qwen.config.to_dict(),
        image=tiny_image_config(),
        context=context_config(qwen.config.text_config.hidden_size, context_norm),
        segmenter_kind="sam",
        segmenter=TINY_SAM.to_dict(),
        cot=True,
        max_new_tokens=MLLMPretrainConfig().max_new_tokens,
        # the tiny context module alone did not learn to point at the target (held-out cIoU
        # ~0.18 after stage 1, where the box alone gives ~0.7 on val): it refines the box instead
        box_prompt=True,
    )
    torch.manual_seed(0)
    model = LensModel(config, tokenizer, qwen_model=qwen, segmenter=seg)
    # the context token starts at zero: training begins from "the box prompt alone"
    torch.nn.init.zeros_(model.context.proj_to_sam[-1].weight)
    torch.nn.init.zeros_(model.context.proj_to_sam[-1].bias)
    return save_bundle(work / "base", model, extra={"stage": "pretrained substitutes + fresh context module"})


def _shared_stage_fields(cfg: BuildConfig, base: str | Path, out: str | Path) -> dict:
    """What the embedded build's two stages share: model, data, precision, device, logging."""
    return {
        "out_dir": str(out),
        "model": str(base),
        "cot": True,
        "data": f"synthetic:train:1000000:{SYNTHETIC_FRAME}",
        "mixed_precision": "no",
        "num_threads": cfg.threads,
        "progress": False,
        "device": cfg.device,
        "num_workers": cfg.workers,
    }


def stage1_config(cfg: BuildConfig, base: str | Path, out: str | Path):
    """The embedded build's stage-1 configuration (also what bench/training_bench.py times)."""
    from lens_training.config import Stage1Config

    return Stage1Config(
        **_shared_stage_fields(cfg, base, out),
        batch_size=cfg.stage1_batch,
        max_steps=cfg.stage1_steps,
        max_minutes=cfg.stage1_minutes,
        lr=cfg.stage1_lr,
        warmup_steps=30,
        min_lr_ratio=0.1,
        weight_decay=0.0,
        ckpt_every=50,
        log_every=10,
        tensorboard=True,
    )


def stage2_config(cfg: BuildConfig, base: str | Path, init_from: str | Path, out: str | Path):
    """The embedded build's stage-2 configuration: GRPO with 32 prompts x G=8 per optimizer step,
    a hit reward, an advantage std floor, segmentation loss on rollouts that hit only."""
    from lens_training.config import Stage2Config
    from lens_training.tiny.pretrain_mllm import MLLMPretrainConfig

    return Stage2Config(
        **_shared_stage_fields(cfg, base, out),
        init_from=str(init_from),
        batch_size=cfg.stage2_prompts,
        grad_accum=cfg.stage2_accum,
        max_steps=cfg.stage2_steps,
        max_minutes=cfg.stage2_minutes,
        lr=cfg.stage2_lr,
        group_size=cfg.stage2_group,
        max_new_tokens=MLLMPretrainConfig().max_new_tokens,  # grounded rationales: up to 3 boxed candidates
        hit_reward_weight=cfg.stage2_hit,
        advantage_std_floor=cfg.stage2_std_floor,
        seg_loss_on_misses=bool(cfg.stage2_seg_on_misses),
        rollout_engine="loop",
        beta=0.04,
        ckpt_every=10,
        log_every=1,
        seed=1,  # different data than stage 1 saw first
    )


def run_stage1(cfg: BuildConfig, base: Path) -> Path:
    from lens_training.stage1 import train_stage1

    out = Path(cfg.work) / "stage1"
    train_stage1(stage1_config(cfg, base, out))
    return out / "final"


def run_stage1_continuation(cfg: BuildConfig, base: Path, stage1: Path) -> Path:
    """Stage 1 continued from its result for as long as stage 2 trained: the same-compute
    baseline that stage 2's gain is measured against."""
    from dataclasses import replace

    from lens_training.stage1 import train_stage1

    timing = Path(cfg.work) / "stage2" / "minutes.json"
    minutes = json.loads(timing.read_text())["minutes"] if timing.is_file() else 10.0
    out = Path(cfg.work) / "stage1_continued"
    run = replace(stage1_config(cfg, base, out), init_from=str(stage1), max_steps=100_000, max_minutes=minutes)
    train_stage1(run)
    return out / "final"


def run_stage2(cfg: BuildConfig, base: Path, stage1: Path) -> Path:
    from lens_training.stage2 import train_stage2

    out = Path(cfg.work) / "stage2"
    started = time.time()
    result = train_stage2(stage2_config(cfg, base, stage1, out))
    (out / "minutes.json").write_text(json.dumps({"minutes": round((time.time() - started) / 60, 2)}))
    (out / "history.json").write_text(json.dumps(result.history, indent=1))
    plot_rewards(result.history, Path(cfg.results).with_suffix(".stage2_rewards.png"))
    return out / "final"


def plot_rewards(history: list[dict], path: Path) -> None:
    """Stage-2 reward curves (every reward separately, as LENS's tracker advises) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for h in history for k in h if k.split("/")[-1].startswith("reward_")})
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = range(1, len(history) + 1)
    for k in keys:
        ax.plot(steps, [h.get(k, float("nan")) for h in history], label=k)
    ax.set_xlabel("stage-2 step")
    ax.set_ylabel("mean reward of the sampled group")
    ax.set_title("LENS-tiny stage 2 (GRPO) rewards")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cfg = BuildConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in cfg.__dict__.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    cfg = BuildConfig(**vars(parser.parse_args(argv)))
    torch.set_num_threads(cfg.threads)
    skip = set(filter(None, cfg.skip.split(",")))
    work = Path(cfg.work)
    t0 = time.time()
    if "pretrain" not in skip:
        run_pretraining(cfg)
    base = work / "base"
    if not (base / "config.json").is_file():
        assemble_base(work, bool(cfg.context_norm))
    stage1 = work / "stage1" / "final"
    if "stage1" not in skip and not stage1.is_dir():
        run_stage1(cfg, base)
    stage2 = work / "stage2" / "final"
    if "stage2" not in skip and not stage2.is_dir() and stage1.is_dir():
        run_stage2(cfg, base, stage1)
    continued = work / "stage1_continued" / "final"
    if "baseline" not in skip and not continued.is_dir() and stage2.is_dir():
        run_stage1_continuation(cfg, base, stage1)
    from lens_training.tiny.evaluate_tiny import evaluate_all, export_best

    results = None
    if "eval" not in skip:
        results = evaluate_all(cfg, base, stage1, stage2)
    if "export" not in skip:
        export_best(cfg, base, stage1, stage2, results)
    print(json.dumps({"minutes": round((time.time() - t0) / 60, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
