"""The optimisation loop both stages share, readable top to bottom (nanoGPT style).

A stage supplies an ``Objective``: an ``nn.Module`` whose trainable parameters are exactly
the ones that should change, with

    prepare(batch) -> inputs      no-grad work outside DDP: tokenising, rollouts, rewards
    forward(inputs) -> (loss, scalars)

The loop owns everything else: processes (torchrun DDP), data order, gradient accumulation,
mixed precision, clipping, the cosine schedule, TensorBoard, tqdm and checkpoints that make a
killed-and-resumed run end bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from lens_training.config import TrainConfig, config_to_dict
from lens_training.data.dataset import SegmentationDataset, collate
from lens_training.fsdp import (
    apply_full_state,
    clip_grad_norm,
    export_copy,
    full_weights,
    gathered,
    optimizer_shard_name,
    wrap_fsdp,
)
from lens_training.runtime import (
    DistributedContext,
    ResumableBatches,
    ScalarLogger,
    autocast,
    autocast_dtype,
    cosine_schedule,
    init_distributed,
    latest_checkpoint,
    load_checkpoint,
    progress,
    resolve_device,
    save_checkpoint,
    total_steps,
    trainable_state_dict,
)


class BatchIndices:
    """Batch sampler continuing ``batches`` from its current position (read once, at start)."""

    def __init__(self, batches: ResumableBatches):
        self.batches, self.start = batches, batches.consumed

    def __iter__(self):
        index = self.start
        while True:
            yield self.batches.batch(index)
            index += 1


class Objective(Protocol):
    def prepare(self, batch: Any) -> Any: ...

    def __call__(self, inputs: Any) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class TrainResult:
    steps: int
    final_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)  # logged scalars per step
    seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


def setup_process(cfg: TrainConfig) -> tuple[torch.device, DistributedContext]:
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device, init_distributed(device)


def train(
    cfg: TrainConfig,
    objective: nn.Module,
    dataset: SegmentationDataset,
    device: torch.device,
    dist_ctx: DistributedContext,
    tag: str,
    find_unused_parameters: bool = False,
    save_final: Any = None,
) -> TrainResult:
    """Run ``cfg.max_steps`` optimizer steps of ``objective`` on ``dataset``.

    save_final(lens_model, directory) writes the final model (the stage's export); the
    trainable parameters are always saved too, as <out_dir>/final/trainable.safetensors,
    with the run's config as train_config.json.
    """
    out_dir = Path(cfg.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    objective.to(device)
    params = [p for p in objective.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{tag}: nothing to train (no parameter requires grad)")
    trainable = {n for n, p in objective.named_parameters() if p.requires_grad}
    amp = autocast_dtype(cfg.mixed_precision, device)
    model = objective
    sharded = dist_ctx.enabled and cfg.distributed == "fsdp"
    if sharded:
        model = wrap_fsdp(objective, device, cfg.fsdp_wrap, amp)
        params = [p for p in model.parameters() if p.requires_grad]
    elif dist_ctx.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = DDP(objective, device_ids=ids, find_unused_parameters=find_unused_parameters)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    batches = ResumableBatches(len(dataset), cfg.batch_size, cfg.seed, dist_ctx.rank, dist_ctx.world_size)
    steps = total_steps(cfg.max_steps, cfg.epochs, batches.batches_per_epoch, cfg.grad_accum)
    scheduler = cosine_schedule(optimizer, cfg.warmup_steps, steps, cfg.min_lr_ratio)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16 and not sharded)

    def checkpoint(step: int) -> None:
        weights, optimizer_state, shards = None, None, None
        if sharded:  # all ranks gather the weights; each writes its own optimizer shard
            weights, optimizer_state = full_weights(model, trainable), {"sharded": True}
            staging = ckpt_dir / f".shards-{step:08d}"
            staging.mkdir(parents=True, exist_ok=True)
            torch.save(optimizer.state_dict(), staging / optimizer_shard_name(dist_ctx.rank))
            dist_ctx.barrier()
            shards = sorted(staging.glob("optimizer-rank*.pt"))
        if dist_ctx.is_main:
            save_checkpoint(
                ckpt_dir,
                step,
                objective,
                optimizer,
                scheduler,
                batches,
                config_to_dict(cfg),
                cfg.keep_checkpoints,
                weights=weights,
                optimizer_state=optimizer_state,
                extra_files=shards,
            )
            if shards:
                staging.rmdir()
        dist_ctx.barrier()

    step = 0
    resume_from = latest_checkpoint(ckpt_dir) if cfg.resume else None
    if resume_from is not None:
        apply = apply_full_state(model, optimizer, dist_ctx.rank) if sharded else None
        step = int(load_checkpoint(resume_from, objective, optimizer, scheduler, batches, apply)["step"])
        if dist_ctx.is_main:
            print(f"{tag}: resumed from {resume_from} at step {step}")

    logger = ScalarLogger(out_dir / "tensorboard", cfg.tensorboard and dist_ctx.is_main)
    bar = progress(steps, step, cfg.progress and dist_ctx.is_main, tag)
    history: list[dict[str, float]] = []
    # samples are loaded (and synthesised) in worker processes; the position is counted here
    loader = DataLoader(
        dataset,
        batch_sampler=BatchIndices(batches),
        collate_fn=collate,
        num_workers=cfg.num_workers,
        prefetch_factor=2 if cfg.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(cfg.seed),
    )  # own RNG: keeps the global one exact
    batch_iter = iter(loader)
    started = time.perf_counter()
    steps_run = 0

    while step < steps:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            batch = next(batch_iter)
            batches.consumed += 1
            with gathered(model):  # rollouts and frozen parts need whole weights under FSDP
                inputs = objective.prepare(batch)
            # DDP averages gradients across processes only on the last micro-step
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if (last or not dist_ctx.enabled) else model.no_sync()
            with sync:
                with autocast(device, amp):
                    loss, scalars = model(inputs)
                scaler.scale(loss / cfg.grad_accum).backward()
            for name, value in scalars.items():
                sums[name] = sums.get(name, 0.0) + float(value) / cfg.grad_accum
        scaler.unscale_(optimizer)
        grad_norm = clip_grad_norm(model, params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        steps_run += 1

        scalars = {f"{tag}/{k}": dist_ctx.mean(v) for k, v in sums.items()}
        scalars[f"{tag}/grad_norm"] = float(grad_norm)
        scalars[f"{tag}/lr"] = scheduler.get_last_lr()[0]
        history.append(scalars)
        if step % max(1, cfg.log_every) == 0 or step == steps:
            # TensorBoard gets the mean over the steps since the last log (lr: the current value)
            window = history[-min(len(history), max(1, cfg.log_every)) :]
            logged = {k: sum(h.get(k, 0.0) for h in window) / len(window) for k in scalars}
            logged[f"{tag}/lr"] = scalars[f"{tag}/lr"]
            logger.log(logged, step)
            bar.set_postfix(
                {k.split("/")[-1]: f"{v:.4g}" for k, v in logged.items() if not k.endswith("lr")}, refresh=False
            )
        bar.update(1)
        if cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0 and step < steps:
            checkpoint(step)
        if cfg.max_minutes > 0:  # every process stops at the same step
            over = time.perf_counter() - started > cfg.max_minutes * 60
            if dist_ctx.mean(float(over)) > 0:
                print(f"{tag}: time limit of {cfg.max_minutes} min reached at step {step} of {steps}", flush=True)
                break

    seconds = time.perf_counter() - started
    bar.close()
    logger.close()
    final_dir = out_dir / "final"
    if sharded:  # gather the shards into a plain model on rank 0
        weights = full_weights(model, trainable)
        final_model = export_copy(model, objective.model, cfg)
    else:
        weights, final_model = trainable_state_dict(objective), getattr(objective, "model", objective)
    if dist_ctx.is_main:
        from safetensors.torch import save_file

        final_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(final_dir / "trainable.safetensors"))
        (final_dir / "train_config.json").write_text(json.dumps(config_to_dict(cfg), indent=2, default=str))
        if save_final is not None:
            save_final(final_model, final_dir)
    dist_ctx.barrier()
    return TrainResult(steps=step, final_dir=final_dir, history=history, seconds=seconds)
