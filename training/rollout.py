"""Rollout generation for GRPO behind one interface.

A ``RolloutEngine`` samples one completion per request row; stage 2 repeats each prompt G
times (rows grouped consecutively: prompt 0's G rows first). ``HFRolloutEngine`` runs the policy's own ``generate``
in-process (CPU, a few GPUs); an engine serving rollouts from vLLM implements the same
``generate`` (taking the raw chat texts and images from ``RolloutRequest``) and
``sync_weights`` (push the policy's new weights after each optimizer step), and registers
itself in ``ENGINES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    """N prompt rows (each prompt already repeated G times), as model inputs and raw.

    mllm_inputs: ``lens_ros.model.mllm.MLLMInputs`` (left-padded ids, packed images) for
        in-process engines; texts / images: the raw expressions and RGB images for engines
        that tokenise themselves (a vLLM server).
    """

    mllm_inputs: Any
    expressions: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)


@dataclass
class Rollouts:
    """One completion per request row: token ids up to and including the end token, and text.

    logprobs: optional per-token log-probs under the sampling weights (an engine whose
    weights may lag the policy reports them; they become pi_old of the GRPO ratio).
    """

    completion_ids: list[list[int]]
    texts: list[str]
    logprobs: list[list[float]] | None = None


class RolloutEngine(ABC):
    @abstractmethod
    def generate(self, request: RolloutRequest, settings: SamplingSettings) -> Rollouts: ...

    def sync_weights(self, policy: nn.Module) -> None:  # noqa: B027 - optional hook, no-op in-process
        """Make the engine sample from the policy's current weights (no-op in-process)."""


class HFRolloutEngine(RolloutEngine):
    """Sampling with transformers' ``generate`` on the policy's own MLLM, in-process.

    mllm: ``lens_ros.model.mllm.MLLM`` of the policy (the same object training updates, so
    it always samples from the current weights).
    """

    def __init__(self, mllm: Any):
        self.mllm = mllm
        # A sampled image/vision token inside a completion would be taken for an image
        # placeholder when the completion is scored: never sample them.
        from lens_ros.model import prompts

        banned = {mllm.token_id(t) for t in (prompts.IMAGE_PAD, prompts.VISION_START, prompts.VISION_END)}
        banned.add(int(mllm.model.config.image_token_id))
        video = getattr(mllm.model.config, "video_token_id", None)
        if video is not None:
            banned.add(int(video))
        generation_config = mllm.model.generation_config
        generation_config.suppress_tokens = sorted(
            {*(generation_config.suppress_tokens or []), *(b for b in banned if b is not None)}
        )

    @torch.no_grad()
    def generate(self, request: RolloutRequest, settings: SamplingSettings) -> Rollouts:
        from lens_ros.model.mllm import GenerationSettings

        generation = self.mllm.generate(
            request.mllm_inputs.to(self.mllm.device, self.mllm.dtype),
            GenerationSettings(
                max_new_tokens=settings.max_new_tokens,
                do_sample=True,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,
            ),
            engine="hf",  # transformers' generate honours generation_config.suppress_tokens
        )
        ids = [c if c else [self.mllm.eos_ids[0]] for c in generation.completion_ids]
        return Rollouts(completion_ids=ids, texts=generation.texts)


ENGINES: dict[str, Callable[..., RolloutEngine]] = {"hf": HFRolloutEngine}


def build_engine(name: str, **kwargs: Any) -> RolloutEngine:
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known: {sorted(ENGINES)}")
    return ENGINES[name](**kwargs)
