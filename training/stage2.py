"""Stage 2: GRPO with LENS's unified rewards, plus BCE + Dice on the same batch.

Per batch of B prompts:
    1. rollouts: each prompt repeated G times, one sampled completion per row
       (``RolloutEngine``; temperature 0.9, top-p 0.9, top-k 50)
    2. one policy forward over prompt + completion + context queries gives the completions'
       token log-probs AND the masks decoded from each completion's context prompt
    3. rewards per completion: box IoU^2 + mask IoU^2 (+ format in CoT runs, + an optional
       hit term: the box is on the target), each logged
    4. A = (r - mean_group) / (max(std_group, advantage_std_floor) + 1e-4)
    5. L = GRPO(logp, old logp, ref logp, A; beta, clip) + seg_loss_weight * (BCE + Dice), the
       segmentation loss over every completion or (``seg_loss_on_misses`` off) over those whose
       box is on the target

The reference for the k3 KL is the MLLM as the run started (a frozen copy; with LoRA the
same weights with the adapters switched off). Trainable: MLLM (full or LoRA), context
module, segmenter prompt encoder + mask decoder; the image encoder stays frozen.

Python:  train_stage2(Stage2Config(...), dataset=my_dataset, model=my_lens_model)
CLI:     lens-train stage2 --config config/training/stage2_tiny.yaml
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lens_training.config import Stage2Config
from lens_training.data.dataset import Batch, SegmentationDataset
from lens_training.export import export_bundle
from lens_training.grpo import group_advantages, grpo_loss
from lens_training.loop import TrainResult, setup_process, train
from lens_training.losses import segmentation_loss
from lens_training.model_setup import (
    adapters_disabled,
    apply_lora,
    count_parameters,
    freeze_stage2,
    load_init_weights,
    load_lens_model,
    segmenter_parts,
)
from lens_training.rewards import RewardWeights, unified_rewards
from lens_training.rollout import HFRolloutEngine, RolloutEngine, RolloutRequest, SamplingSettings, build_engine
from lens_training.runtime import autocast_dtype, seed_everything


def repeat_rows(items: list, times: int) -> list:
    """[a, b] -> [a, a, ..., b, b, ...] (each item ``times`` times, groups consecutive)."""
    return [item for item in items for _ in range(times)]


@dataclass
class RolloutBatch:
    """What ``Stage2Objective.prepare`` hands to its loss: B prompts x G sampled completions.

    Row i of every list is completion i; rows are grouped by prompt (G consecutive rows).
    """

    inputs: Any  # LensInputs of prompt + completion, one row per completion
    embeddings: Any  # the frozen image encoder's output, repeated over each group
    prompt_boxes: list | None  # each completion's own parsed box in image pixels (box-prompt models)
    texts: list[str]  # the decoded completions
    completion_lengths: list[int]
    ref_logp: torch.Tensor | None  # (N, L) log-probs under the frozen reference (None: no KL term)
    old_logp: torch.Tensor | None  # (N, L) the sampling engine's log-probs (None: the current policy)
    masks: list  # ground-truth masks, repeated over each group
    ignores: list
    boxes: list  # ground-truth boxes, repeated over each group
    sizes: list[tuple[int, int]]  # (H, W) of each row's image
    box_scales: list[tuple[float, float]]  # MLLM pixels -> image pixels (x, y)


def mllm_logprobs(mllm: nn.Module, inputs: Any) -> torch.Tensor:
    """(N, L) token log-probs of the completion tokens under ``mllm`` (0 elsewhere)."""
    m = inputs.to(mllm.device, mllm.dtype)
    embeds = mllm.embed(m)
    positions = mllm.position_ids(m.input_ids, m.mm_token_type_ids, m.image_grid_thw, m.attention_mask)
    hidden, _ = mllm.run_language_model(embeds, positions, m.attention_mask)
    return mllm.token_logprobs(hidden, m.input_ids, m.completion_mask)


class Stage2Objective(nn.Module):
    """GRPO + segmentation loss on a LensModel; see the module docstring for the steps."""

    def __init__(self, model: nn.Module, cfg: Stage2Config, engine: RolloutEngine | None = None):
        super().__init__()
        self.model = model
        self.cfg = cfg
        if cfg.lora and cfg.train_mllm:
            apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
        freeze_stage2(model, cfg.train_mllm, False, cfg.train_prompt_encoder, cfg.train_mask_decoder, cfg.lora)
        # frozen reference for the KL term: not needed when the MLLM does not train
        self.reference: nn.Module | None = None
        self.use_kl = cfg.beta > 0 and cfg.train_mllm
        if self.use_kl and not cfg.lora:
            from lens_ros.model.mllm import MLLM

            frozen = copy.deepcopy(model.mllm.model).requires_grad_(False).eval()
            # on GPU the reference only scores tokens: keep it in the autocast dtype (half the memory)
            # (not under FSDP: a shard unit needs one dtype)
            half = autocast_dtype(cfg.mixed_precision, next(model.parameters()).device)
            if half is not None and cfg.distributed != "fsdp":
                frozen.to(half)
            source = model.mllm
            self.reference = MLLM(frozen, source.tokenizer, source.image_config, source.system_prompt, source.cot)
        self.engine = engine if engine is not None else HFRolloutEngine(model.mllm)
        self.sampling = SamplingSettings(cfg.group_size, cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens)
        self.weights = RewardWeights(
            cfg.format_reward_weight,
            cfg.box_reward_weight,
            cfg.box_l1_weight,
            cfg.mask_reward_weight,
            cfg.hit_reward_weight,
        )

    def train(self, mode: bool = True) -> Stage2Objective:
        super().train(mode)
        segmenter_parts(self.model)["image_encoder"].eval()
        if self.reference is not None:
            self.reference.eval()
        return self

    # -- no-grad work: rollouts, reference log-probs, image embeddings ------------------------
    @torch.no_grad()
    def reference_logprobs(self, inputs: Any) -> torch.Tensor:
        if self.reference is not None:
            return mllm_logprobs(self.reference, inputs)
        with adapters_disabled(self.model.mllm.model):
            return mllm_logprobs(self.model.mllm, inputs)

    @torch.no_grad()
    def prepare(self, batch: Batch) -> RolloutBatch:
        g, cot, model = self.cfg.group_size, self.cfg.cot, self.model
        images, expressions = repeat_rows(batch.images, g), repeat_rows(batch.expressions, g)
        was_training = self.training
        model.eval()  # sample from the policy without dropout
        prompt_inputs = model.prepare(images, expressions, None, cot=cot)
        rollouts = self.engine.generate(RolloutRequest(prompt_inputs.mllm, expressions, images), self.sampling)
        self.train(was_training)  # back to train mode with the frozen parts in eval
        inputs = model.prepare(images, expressions, rollouts.completion_ids, cot=cot)
        ref_logp = self.reference_logprobs(inputs.mllm) if self.use_kl else None
        old_logp = None
        if rollouts.logprobs is not None:  # an engine that reports its sampling log-probs
            old_logp = torch.zeros(inputs.mllm.input_ids.shape, dtype=torch.float32)
            for row, values in enumerate(rollouts.logprobs):
                old_logp[row, old_logp.shape[1] - len(values) :] = torch.tensor(values)
        # the image encoder is frozen: encode each distinct image once, share it across its group
        encoder = segmenter_parts(model)["image_encoder"]
        param = next(encoder.parameters())
        seg = [model.segmenter.preprocess(im) for im in batch.images]
        embeddings = model.segmenter.encode_batch(
            torch.stack([s[0] for s in seg]).to(device=param.device, dtype=param.dtype),
            [im.shape[:2] for im in batch.images],
            [s[1] for s in seg],
        )
        box_scales = []
        for packed, size in zip(inputs.packed, inputs.original_sizes, strict=True):
            h, w = packed.resized_hw
            box_scales.append((size[1] / w, size[0] / h))
        prompt_boxes = None
        if model.config.box_prompt:  # each rollout's own parsed box prompts its mask (None: no box)
            prompt_boxes = [
                rollout_box(text, inputs.packed[i].resized_hw, inputs.original_sizes[i])
                for i, text in enumerate(rollouts.texts)
            ]
        return RolloutBatch(
            inputs=inputs,
            embeddings=repeat_rows(embeddings, g),
            prompt_boxes=prompt_boxes,
            texts=rollouts.texts,
            completion_lengths=[len(c) for c in rollouts.completion_ids],
            ref_logp=ref_logp,
            old_logp=old_logp,
            masks=repeat_rows(batch.masks, g),
            ignores=repeat_rows(batch.ignores, g),
            boxes=repeat_rows(batch.boxes.tolist(), g),
            sizes=[im.shape[:2] for im in images],
            box_scales=box_scales,
        )

    # -- the loss --------------------------------------------------------------------------
    def forward(self, p: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        out = self.model(p.inputs, compute_logprobs=True, embeddings=p.embeddings, boxes=p.prompt_boxes)
        device = out.prompt_tokens.device
        mask_logits = [m[0] for m in out.mask_logits]  # (H, W) per completion, gt resolution
        completion_mask = out.completion_mask.to(device).clone()
        completion_mask[:, 0] = False  # the first position has no prediction (matches token_logprobs)
        logp = out.token_logprobs
        if logp is None:
            logp = torch.zeros(completion_mask.shape, device=device)

        # rewards r_i (no gradient), each one logged
        rewards = unified_rewards(
            p.texts,
            p.boxes,
            p.sizes,
            mask_logits,
            p.masks,
            self.weights,
            use_format=cfg.cot,
            box_scales=p.box_scales,
        )
        # A_i = (r_i - mean_group) / (std_group + 1e-4)
        advantages = group_advantages(rewards["total"], cfg.group_size, std_floor=cfg.advantage_std_floor).to(device)
        # pi_old: the sampling policy; one update per rollout batch -> the current policy, detached
        old_logp = p.old_logp.to(device) if p.old_logp is not None else logp.detach()
        ref_logp = p.ref_logp.to(device) if p.ref_logp is not None else None
        policy_loss, stats = grpo_loss(
            logp,
            old_logp,
            ref_logp,
            advantages,
            completion_mask,
            beta=cfg.beta if self.use_kl else 0.0,
            clip_eps=cfg.clip_eps,
        )
        # BCE + Dice of the completions' masks against the ground truth: every completion, or
        # (seg_loss_on_misses off) only those whose box is on the target. A box around another
        # object would otherwise teach the segmenter to draw the target from that box.
        rows = range(len(mask_logits))
        if not cfg.seg_loss_on_misses:
            rows = [i for i in rows if rewards["hit"][i] > 0]
        if rows:
            seg_loss, parts = segmentation_loss(
                [mask_logits[i] for i in rows],
                [p.masks[i] for i in rows],
                [p.ignores[i] for i in rows],
                cfg.bce_weight,
                cfg.dice_weight,
            )
        else:
            zero = sum(m.sum() for m in mask_logits) * 0.0  # keeps the graph (DDP) without a loss
            seg_loss, parts = zero, {"bce": zero.detach(), "dice": zero.detach()}
        loss = policy_loss + cfg.seg_loss_weight * seg_loss

        group_std = (
            rewards["total"].view(-1, cfg.group_size).std(dim=1)
            if cfg.group_size > 1
            else torch.zeros(len(mask_logits) // max(cfg.group_size, 1))
        )
        scalars = {
            "loss": loss.item(),
            "policy_loss": policy_loss.item(),
            "seg_loss": seg_loss.item(),
            "bce": parts["bce"].item(),
            "dice": parts["dice"].item(),
            "kl": stats["kl"].item(),
            "ratio": stats["ratio"].item(),
            "clip_fraction": stats["clip_fraction"].item(),
            "reward_std": group_std.mean().item(),
            # groups whose completions all got the same reward teach nothing
            "zero_variance_groups": (group_std < 1e-6).float().mean().item(),
            "seg_loss_rows": len(rows) / max(len(mask_logits), 1),
            "completion_length": sum(p.completion_lengths) / len(p.completion_lengths),
        }
        for name, values in rewards.items():
            scalars[f"reward_{name}"] = values.mean().item()
        return loss, scalars


def rollout_box(text: str, resized_hw: tuple[int, int], image_hw: tuple[int, int]):
    """A completion's parsed box in image pixels (as the Pipeline scales it), or None."""
    from lens_ros.model.prompts import parse_answer
    from lens_ros.model.vision_input import scale_box

    parsed = parse_answer(text)
    return None if parsed.box is None else scale_box(parsed.box, resized_hw, image_hw)


def train_stage2(
    cfg: Stage2Config,
    dataset: SegmentationDataset | None = None,
    model: nn.Module | None = None,
    engine: RolloutEngine | None = None,
) -> TrainResult:
    """Run stage 2. ``model`` defaults to ``cfg.model`` + ``cfg.init_from`` (the stage-1
    result), ``dataset`` to ``cfg.data``, ``engine`` to ``cfg.rollout_engine`` ("hf")."""
    device, dist_ctx = setup_process(cfg)
    if model is None:
        model = load_lens_model(cfg.model, cfg.seed, cfg.model_dir)
    if cfg.init_from:
        load_init_weights(model, cfg.init_from)
    if dataset is None:
        from lens_training.data.specs import build_dataset

        dataset = build_dataset(cfg.data)
    model.to(device)
    if engine is None:
        engine = build_engine(cfg.rollout_engine, mllm=model.mllm)
    objective = Stage2Objective(model, cfg, engine)
    seed_everything(cfg.seed)  # after the model: the run's randomness does not depend on how it was built
    if dist_ctx.is_main:
        trainable, total = count_parameters(model)
        print(f"stage2: training {trainable:,} of {total:,} parameters on {len(dataset):,} prompts, G={cfg.group_size}")
    return train(
        cfg, objective, dataset, device, dist_ctx, "stage2", find_unused_parameters=True, save_final=export_bundle
    )
