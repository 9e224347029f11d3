"""Fully sharded data parallel (torch FSDP) for models that do not fit one GPU per replica.

Selected with ``distributed: fsdp`` (see config/training/fsdp_3b.yaml) under torchrun.
Transformer blocks named in ``fsdp_wrap`` become their own shards; frozen and trainable
parameters may share a unit (``use_orig_params``). Work outside the FSDP forward that
touches weights (rollout generation, the reference model, the frozen image encoder) runs
inside ``gathered``; checkpoints hold full (unsharded) trainable weights and one optimizer
shard per process.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


def wrap_fsdp(
    objective: nn.Module, device: torch.device, wrap_classes: str, param_dtype: torch.dtype | None
) -> nn.Module:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    names = {n.strip() for n in wrap_classes.split(",") if n.strip()}
    classes = {type(m) for m in objective.modules() if type(m).__name__ in names}
    mixed = None
    if param_dtype is not None:
        mixed = MixedPrecision(param_dtype=param_dtype, reduce_dtype=torch.float32, buffer_dtype=param_dtype)
    return FSDP(
        objective,
        auto_wrap_policy=ModuleWrapPolicy(classes) if classes else None,
        sharding_strategy=ShardingStrategy.FULL_SHARD,
        mixed_precision=mixed,
        use_orig_params=True,
        device_id=device,
        sync_module_states=device.type == "cuda",
    )


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return isinstance(model, FSDP)


def gathered(model: nn.Module) -> contextlib.AbstractContextManager:
    """Full parameters available on every rank (read-only) inside the block."""
    if not is_fsdp(model):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return FSDP.summon_full_params(model, writeback=False, recurse=True)


def clip_grad_norm(model: nn.Module, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    if is_fsdp(model):
        return model.clip_grad_norm_(max_norm)
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_weights(model: nn.Module, trainable: set[str]) -> dict[str, torch.Tensor]:
    """Trainable weights, unsharded on CPU; a collective: call on every rank."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    weights = get_model_state_dict(model, options=_options(cpu_offload=True))
    return {k: v for k, v in weights.items() if k in trainable}


def optimizer_shard_name(rank: int) -> str:
    return f"optimizer-rank{rank:05d}.pt"


def apply_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, rank: int):
    """A loader for ``runtime.load_checkpoint``: full weights into the shards, and this rank's
    own optimizer shard (a sharded run resumes with the same number of processes)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    def apply(weights: dict[str, torch.Tensor], _optimizer_state: Any, path: Any) -> None:
        set_model_state_dict(model, dict(weights), options=_options(strict=False))
        shard = path / optimizer_shard_name(rank)
        if not shard.is_file():
            raise FileNotFoundError(f"{shard}: missing (resume a sharded run with the same number of processes)")
        optimizer.load_state_dict(torch.load(shard, map_location="cpu", weights_only=True))

    return apply


def export_copy(model: nn.Module, lens: nn.Module, cfg: Any) -> nn.Module:
    """A plain LensModel holding the FSDP model's full weights (a collective: every rank
    calls it; only rank 0 gets the model, the others None)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from lens_ros.model.lens import LensModel
    from lens_training.model_setup import apply_lora

    weights = get_model_state_dict(model, options=_options(cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    fresh = LensModel(lens.config, lens.tokenizer)
    if getattr(cfg, "lora", False) and getattr(cfg, "train_mllm", True):
        apply_lora(fresh, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    fresh.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    return fresh
