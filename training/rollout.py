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

from lens_ros.model.decoding import Decoder, GenerationSettings


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
    """Sampling on the policy's own MLLM, in-process.

    mllm: ``lens_ros.model.mllm.MLLM`` of the policy (the same object training updates, so
    it always samples from the current weights).
    decoder: "hf" (transformers' ``generate``, which never samples image/vision tokens) or
    "loop" (the MLLM's own decoding loop, about twice as fast on a CPU; a batch in which an
    image/vision token was sampled is sampled again with "hf").
    """

    def __init__(self, mllm: Any, decoder: str = "hf"):
        if decoder not in ("hf", "loop"):
            raise ValueError(f"decoder must be 'hf' or 'loop', got {decoder!r}")
        self.mllm = mllm
        self.decoder = decoder
        self.generator = Decoder(mllm)
        # A sampled image/vision token inside a completion would be taken for an image
        # placeholder when the completion is scored: never sample them.
        from lens_ros.model import prompts

        banned = {mllm.token_id(t) for t in (prompts.IMAGE_PAD, prompts.VISION_START, prompts.VISION_END)}
        banned.add(int(mllm.model.config.image_token_id))
        video = getattr(mllm.model.config, "video_token_id", None)
        if video is not None:
            banned.add(int(video))
        self.banned = {b for b in banned if b is not None}
        generation_config = mllm.model.generation_config
        generation_config.suppress_tokens = sorted({*(generation_config.suppress_tokens or []), *self.banned})

    @torch.no_grad()
    def generate(self, request: RolloutRequest, settings: SamplingSettings) -> Rollouts:
        inputs = request.mllm_inputs.to(self.mllm.device, self.mllm.dtype)
        sampling = GenerationSettings(
            max_new_tokens=settings.max_new_tokens,
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
        )
        generation = self.generator.generate(inputs, sampling, engine=self.decoder)
        if self.decoder == "loop" and any(t in self.banned for c in generation.completion_ids for t in c):
            generation = self.generator.generate(inputs, sampling, engine="hf")
        ids = [c if c else [self.mllm.eos_ids[0]] for c in generation.completion_ids]
        return Rollouts(completion_ids=ids, texts=generation.texts)


def _loop_engine(mllm: Any) -> HFRolloutEngine:
    return HFRolloutEngine(mllm, decoder="loop")


ENGINES: dict[str, Callable[..., RolloutEngine]] = {"hf": HFRolloutEngine, "loop": _loop_engine}


def build_engine(name: str, **kwargs: Any) -> RolloutEngine:
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known: {sorted(ENGINES)}")
    return ENGINES[name](**kwargs)
