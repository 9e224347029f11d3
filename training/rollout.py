"""Rollout generation for GRPO behind one interface.

A ``RolloutEngine`` turns B prompts into B * G sampled completions (grouped consecutively:
prompt 0's G completions first). ``HFRolloutEngine`` runs the policy's own ``generate``
in-process (CPU, a few GPUs); an engine serving rollouts from vLLM implements the same
``generate`` (taking the raw chat texts and images from ``RolloutRequest``) and
``sync_weights`` (push the policy's new weights after each optimizer step), and registers
itself in ``ENGINES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn


@dataclass
class SamplingSettings:
    """LENS stage-2 sampling: temperature 0.9, top-p 0.9, top-k 50, groups of 8."""

    num_samples: int = 8
    temperature: float = 0.9
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 128


@dataclass
class RolloutRequest:
    """B prompts, both as model inputs (in-process engines) and raw (external servers).

    model_inputs: tensors for ``generate`` (input_ids, attention_mask left-padded,
        pixel_values, image_grid_thw, mm_token_type_ids, ...), batch B.
    texts: the rendered chat prompts; images: the RGB images (H, W, 3) uint8.
    """

    model_inputs: dict[str, torch.Tensor]
    texts: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)


@dataclass
class Rollouts:
    """B * G completions; row b * G + g is sample g of prompt b.

    tokens: (B*G, T) completion token ids (right-padded with pad_token_id);
    mask: (B*G, T) 1 on real completion tokens up to and including the end-of-turn token.
    """

    tokens: torch.Tensor
    mask: torch.Tensor


class RolloutEngine(ABC):
    @abstractmethod
    def generate(self, request: RolloutRequest, settings: SamplingSettings) -> Rollouts: ...

    def sync_weights(self, policy: nn.Module) -> None:
        """Make the engine sample from the policy's current weights (no-op in-process)."""


def completion_mask(tokens: torch.Tensor, eos_token_ids: list[int]) -> torch.Tensor:
    """1 up to and including the first end token of each row, 0 after it."""
    is_end = torch.zeros_like(tokens, dtype=torch.bool)
    for eos in eos_token_ids:
        is_end |= tokens == eos
    # position of the first end token, or T when none
    length = tokens.shape[1]
    positions = torch.arange(length, device=tokens.device).expand_as(tokens)
    first_end = torch.where(is_end, positions, torch.full_like(positions, length)).min(dim=1).values
    return (positions <= first_end.unsqueeze(1)).long()


class HFRolloutEngine(RolloutEngine):
    """Sampling with transformers' ``generate`` on the policy itself.

    generate_fn(model_inputs, **generate_kwargs) -> (B*G, prompt_len + T) sequences: the
    policy's generate (unwrapped from DDP; under FSDP call it inside summon_full_params).
    """

    def __init__(self, generate_fn: Callable[..., torch.Tensor], pad_token_id: int, eos_token_ids: list[int]):
        self.generate_fn = generate_fn
        self.pad_token_id = pad_token_id
        self.eos_token_ids = list(eos_token_ids)

    @torch.no_grad()
    def generate(self, request: RolloutRequest, settings: SamplingSettings) -> Rollouts:
        inputs = request.model_inputs
        prompt_length = inputs["input_ids"].shape[1]
        sequences = self.generate_fn(
            inputs,
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            max_new_tokens=settings.max_new_tokens,
            num_return_sequences=settings.num_samples,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids,
        )
        tokens = sequences[:, prompt_length:]
        if tokens.shape[1] == 0:  # nothing generated: one pad token keeps shapes valid
            tokens = torch.full((sequences.shape[0], 1), self.pad_token_id, dtype=sequences.dtype, device=sequences.device)
        mask = completion_mask(tokens, self.eos_token_ids)
        tokens = torch.where(mask.bool(), tokens, torch.full_like(tokens, self.pad_token_id))
        return Rollouts(tokens=tokens, mask=mask)


ENGINES: dict[str, Callable[..., RolloutEngine]] = {"hf": HFRolloutEngine}


def build_engine(name: str, **kwargs: Any) -> RolloutEngine:
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known: {sorted(ENGINES)}")
    return ENGINES[name](**kwargs)
