"""Stage 1, alignment: teach the context module to turn the MLLM's understanding into a
segmenter prompt, with the MLLM and the segmenter frozen.

For each sample the MLLM is teacher-forced on the ground-truth answer (Qwen grounding
format, or ``<think>rationale</think><answer>[box]</answer>`` in CoT runs), the 64 context
queries follow it, and the mask the segmenter decodes from their prompt token is trained with

    L = bce_weight * BCE(mask logits, gt) + dice_weight * Dice(mask logits, gt)

Gradients reach the queries through the frozen MLLM; only queries, connector, Conv1d and
projection change (``freeze_stage1``).

Python:  train_stage1(Stage1Config(...), dataset=my_dataset, model=my_lens_model)
CLI:     lens-train stage1 --config config/training/stage1_tiny.yaml
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lens_ros.model import prompts
from lens_ros.model.vision_input import smart_resize
from lens_ros.regions import mask_iou
from lens_ros.world.language import rescale_boxes
from lens_training.config import Stage1Config
from lens_training.data.dataset import Batch, SegmentationDataset
from lens_training.export import export_bundle
from lens_training.loop import TrainResult, setup_process, train
from lens_training.losses import segmentation_loss
from lens_training.model_setup import count_parameters, freeze_stage1, load_init_weights, load_lens_model
from lens_training.runtime import seed_everything


def mllm_scale(model: nn.Module, image_hw: tuple[int, int]) -> tuple[float, float]:
    """(sx, sy) from image pixels to the MLLM's resized-image pixels (the frame its answers use)."""
    c = model.mllm.image_config
    h, w = smart_resize(image_hw[0], image_hw[1], c.patch_size * c.merge_size, c.min_pixels, c.max_pixels)
    return w / image_hw[1], h / image_hw[0]


def mllm_box(model: nn.Module, image_hw: tuple[int, int], box) -> tuple[float, float, float, float]:
    """An image-pixel xyxy box in the MLLM's resized-image pixels."""
    sx, sy = mllm_scale(model, image_hw)
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def teacher_answer(model: nn.Module, image_hw: tuple[int, int], expression: str, box, rationale: str, cot: bool) -> str:
    """The ground-truth completion the MLLM is teacher-forced on."""
    mbox = mllm_box(model, image_hw, box)
    if cot:
        # candidate boxes in the rationale move to the MLLM's frame like the answer box
        think = (
            rescale_boxes(rationale, *mllm_scale(model, image_hw)) if rationale else f"the target is the {expression}"
        )
        return prompts.format_cot_answer(think, mbox)
    return prompts.format_box_answer(expression, mbox)


def jittered_boxes(boxes: torch.Tensor, sizes: list[tuple[int, int]], key: str, scale: float = 0.1) -> list:
    """Ground-truth boxes with Gaussian corner noise (``scale`` x the box's width/height),
    clipped to the image: the box prompt a ``box_prompt`` model gets in stage 1 stands in
    for the MLLM's imperfect box at inference. Deterministic per batch (seeded by ``key``),
    so a resumed run sees the same noise."""
    import hashlib

    import numpy as np

    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
    out = []
    for box, (h, w) in zip(boxes.tolist(), sizes, strict=True):
        x1, y1, x2, y2 = box
        bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        noise = rng.normal(0.0, scale, 4) * np.array([bw, bh, bw, bh])
        j = np.clip(np.array(box) + noise, 0, [w, h, w, h])
        if j[2] - j[0] < 1 or j[3] - j[1] < 1:  # noise collapsed the box: keep the true one
            j = np.array(box)
        out.append(j.astype(np.float32))
    return out


class Stage1Objective(nn.Module):
    """BCE + Dice of the mask decoded from the context prompt; only the context module trains."""

    def __init__(self, model: nn.Module, cot: bool = False, bce_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        self.model = model
        self.cot, self.bce_weight, self.dice_weight = cot, bce_weight, dice_weight
        freeze_stage1(model)

    def train(self, mode: bool = True) -> Stage1Objective:
        # frozen parts stay in eval mode (no dropout, fixed norms)
        super().train(mode)
        self.model.mllm.eval()
        self.model.segmenter.eval()
        return self

    def prepare(self, batch: Batch) -> dict[str, Any]:
        answers = [
            teacher_answer(self.model, im.shape[:2], e, b, r, self.cot)
            for im, e, b, r in zip(batch.images, batch.expressions, batch.boxes.tolist(), batch.rationales, strict=True)
        ]
        inputs = self.model.prepare(batch.images, batch.expressions, answers, cot=self.cot)
        boxes = None
        if self.model.config.box_prompt:
            key = "|".join(batch.expressions) + repr(batch.boxes.tolist())
            boxes = jittered_boxes(batch.boxes, [im.shape[:2] for im in batch.images], key)
        return {"inputs": inputs, "masks": batch.masks, "ignores": batch.ignores, "boxes": boxes}

    def forward(self, prepared: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.model(prepared["inputs"], compute_logprobs=False, boxes=prepared.get("boxes"))
        logits = [m[0] for m in out.mask_logits]  # (H, W) per sample, at gt resolution
        loss, parts = segmentation_loss(
            logits, prepared["masks"], prepared["ignores"], self.bce_weight, self.dice_weight
        )
        with torch.no_grad():
            ious = [mask_iou((m > 0).cpu().numpy(), gt) for m, gt in zip(logits, prepared["masks"], strict=True)]
        return loss, {
            "loss": loss.item(),
            "bce": parts["bce"].item(),
            "dice": parts["dice"].item(),
            "mask_iou": sum(ious) / len(ious),
        }


def train_stage1(
    cfg: Stage1Config,
    dataset: SegmentationDataset | None = None,
    model: nn.Module | None = None,
) -> TrainResult:
    """Run stage 1. ``dataset`` defaults to ``cfg.data``, ``model`` to ``cfg.model`` (+ ``cfg.init_from``).

    The final LensModel is exported as a bundle to <out_dir>/final (loadable by the node).
    """
    device, dist_ctx = setup_process(cfg)
    if model is None:
        model = load_lens_model(cfg.model, cfg.seed, cfg.model_dir)
    if cfg.init_from:
        load_init_weights(model, cfg.init_from)
    if dataset is None:
        from lens_training.data.specs import build_dataset

        dataset = build_dataset(cfg.data)
    objective = Stage1Objective(model, cfg.cot, cfg.bce_weight, cfg.dice_weight)
    seed_everything(cfg.seed)  # after the model: the run's randomness does not depend on how it was built
    if dist_ctx.is_main:
        trainable, total = count_parameters(model)
        print(f"stage1: training {trainable:,} of {total:,} parameters on {len(dataset):,} samples")
    return train(cfg, objective, dataset, device, dist_ctx, "stage1", save_final=export_bundle)
