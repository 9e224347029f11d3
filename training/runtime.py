"""What every training loop needs around its loss: device, precision, processes, data order,
learning-rate schedule, checkpoints that resume bit-identically, logging.

Distributed runs are launched by torchrun (``torchrun --nproc_per_node 8 -m lens_training.cli
stage1 ...``): RANK / WORLD_SIZE / LOCAL_RANK come from the environment; NCCL on GPUs,
gloo on CPU. A single process needs nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

# ----------------------------------------------------------------------------- processes


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Average a Python scalar over processes (for logging)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """None (fp32) or the autocast dtype: "auto" is bf16 on GPU (fp16 without bf16 support), fp32 on CPU."""
    if str(mixed_precision).lower() in ("no", "false", "off", "none", "fp32"):
        return None
    if mixed_precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data order


class ResumableBatches:
    """Deterministic, resumable batches of dataset indices for this process.

    Epoch e visits ``randperm(len, generator seeded with seed + e)`` (dropping the tail that
    does not fill a global batch); process r of W takes every W-th index of each global
    batch, so W processes with batch b see exactly what one process with batch W*b sees.
    The whole state is ``consumed``, the number of global batches handed out.
    """

    def __init__(
        self, length: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ):
        self.length = length
        self.batch_size = batch_size
        self.global_batch = batch_size * world_size
        if length < self.global_batch:
            raise ValueError(f"data set of {length} samples is smaller than one global batch ({self.global_batch})")
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.consumed = 0
        self._cached: tuple[int, torch.Tensor] | None = None  # (epoch, order)

    @property
    def batches_per_epoch(self) -> int:
        return self.length // self.global_batch

    def _order(self, epoch: int) -> torch.Tensor:
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        if not self.shuffle:
            order = torch.arange(self.length)
        else:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + epoch))
        self._cached = (epoch, order)
        return order

    def batch(self, global_index: int) -> list[int]:
        """This process's share of global batch ``global_index`` (a pure function of it)."""
        epoch, position = divmod(global_index, self.batches_per_epoch)
        start = position * self.global_batch
        global_batch = self._order(epoch)[start : start + self.global_batch]
        return global_batch[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            indices = self.batch(self.consumed)
            self.consumed += 1
            yield indices

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["consumed"])


# ----------------------------------------------------------------------------- schedule


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float):
    """Linear warm-up to the base lr, then cosine decay to base * min_ratio at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_steps(max_steps: int, epochs: float, batches_per_epoch: int, grad_accum: int) -> int:
    if max_steps > 0:
        return max_steps
    return max(1, int(epochs * batches_per_epoch / grad_accum))


# ----------------------------------------------------------------------------- checkpoints


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_plain(state: tuple) -> dict[str, Any]:
    # plain types only, so the checkpoint loads with torch.load(weights_only=True)
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": pos,
        "has_gauss": has_gauss,
        "cached": cached,
    }


def _numpy_state_from_plain(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["name"], keys, state["pos"], state["has_gauss"], state["cached"])


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that train (the only ones a checkpoint must hold), contiguous CPU copies."""
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    directory: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: ResumableBatches,
    config: dict[str, Any],
    keep: int = 2,
    extra: dict[str, Any] | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    extra_files: list[Path] | None = None,
) -> Path:
    """Write <directory>/step-<N>/ {model.safetensors, state.pt, config.json} atomically.

    The step folder is written under a temporary name and renamed, then ``latest`` (a text
    file naming it) is replaced atomically, so a process killed at any moment leaves the
    previous checkpoint intact. ``weights`` / ``optimizer_state`` replace the model's trainable
    parameters and ``optimizer.state_dict()`` when given (FSDP gathers them first);
    ``extra_files`` (per-process optimizer shards) are moved into the step folder.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = directory / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = weights if weights is not None else trainable_state_dict(model)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
    state = {
        "step": step,
        "optimizer": optimizer_state if optimizer_state is not None else optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "batches": batches.state_dict(),
        "rng": rng_state(),
        "extra": extra or {},
    }
    torch.save(state, tmp / "state.pt")
    (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
    for file in extra_files or []:
        os.replace(file, tmp / file.name)
    _fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = directory / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, directory / "latest")
    _fsync_dir(directory)
    old = sorted(p for p in directory.glob("step-*") if p != final)
    for path in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    for file in [path, *path.iterdir()] if path.is_dir() else [path]:
        try:
            fd = os.open(file, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        except OSError:
            pass


def latest_checkpoint(directory: Path) -> Path | None:
    pointer = directory / "latest"
    if not pointer.is_file():
        return None
    path = directory / pointer.read_text().strip()
    return path if (path / "state.pt").is_file() else None


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: ResumableBatches,
    apply_state: Any = None,
) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote; returns the state (step, extra).

    apply_state(weights, optimizer_state, path) replaces the default weight/optimizer loading (FSDP).
    """
    weights = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    if apply_state is not None:
        apply_state(weights, state["optimizer"], path)
    else:
        load_trainable_weights(model, weights)
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    batches.load_state_dict(state["batches"])
    set_rng_state(state["rng"])
    return state


def load_trainable_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unknown = [n for n in weights if n not in params]
    if missing or unknown:
        raise KeyError(f"checkpoint does not match the model: missing {missing[:5]}, unknown {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)


# ----------------------------------------------------------------------------- logging


class ScalarLogger:
    """TensorBoard scalars on the main process (no-op elsewhere or when disabled)."""

    def __init__(self, log_dir: Path, enabled: bool):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, scalars: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)
