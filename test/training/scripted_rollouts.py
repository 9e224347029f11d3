"""Rollout engines whose completions the test chooses, so GRPO sees rewards that differ.

A tiny random MLLM samples text that never parses: every reward is 0, every advantage 0,
and the policy term of the stage-2 loss is invisible. These engines hand stage 2 a right
answer (the ground-truth box in the think/answer format) and a wrong one instead.
"""

from __future__ import annotations

import torch

from lens_training.rollout import RolloutEngine, RolloutRequest, Rollouts, SamplingSettings

WRONG = "<think>no idea</think><answer>none</answer>"


def right_answer(model, sample) -> str:
    from lens_training.stage1 import teacher_answer

    return teacher_answer(model, sample.image.shape[:2], sample.expression, sample.box, "it is there", cot=True)


def completion_ids(mllm, texts: list[str]) -> list[list[int]]:
    return [mllm.encode_text(t) + [mllm.eos_ids[0]] for t in texts]


class ScriptedRollouts(RolloutEngine):
    """Row i completes with ``texts[i % len(texts)]``."""

    def __init__(self, mllm, texts: list[str]):
        self.mllm, self.texts = mllm, texts

    def generate(self, request: RolloutRequest, settings: SamplingSettings) -> Rollouts:
        rows = request.mllm_inputs.input_ids.shape[0]
        texts = [self.texts[i % len(self.texts)] for i in range(rows)]
        return Rollouts(completion_ids=completion_ids(self.mllm, texts), texts=texts)


class CoinRollouts(RolloutEngine):
    """Each row completes with its sample's right answer or the wrong one, by a coin from
    torch's global RNG (so a resumed run must restore that RNG to sample the same)."""

    def __init__(self, model, samples):
        self.mllm = model.mllm
        self.right = {s.expression: right_answer(model, s) for s in samples}

    def generate(self, request: RolloutRequest, settings: SamplingSettings) -> Rollouts:
        coins = torch.rand(len(request.expressions)) < 0.5
        texts = [self.right[e] if c else WRONG for e, c in zip(request.expressions, coins.tolist(), strict=True)]
        return Rollouts(completion_ids=completion_ids(self.mllm, texts), texts=texts)
