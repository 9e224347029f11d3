"""LENS unified rewards for stage 2 (each in [0, 1], summed with weights, logged separately).

    format  1 if the completion is <think>...</think><answer>...</answer> and its answer
            holds a parsable box, else 0 (CoT runs)
    box     IoU(predicted box, ground-truth box)^2; 0 when no box parses
    box_l1  optional: 1 - mean |pred - gt| / image size, clamped to [0, 1]
    mask    IoU(mask logits > 0, ground-truth mask)^2 at ground-truth resolution

Completions are parsed once by ``lens_ros.model.prompts.parse_answer``; boxes must be in
the same pixel frame as the ground truth (the caller maps MLLM-resized pixels back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lens_ros.model.prompts import ParsedAnswer, parse_answer
from lens_ros.regions import box_iou


def format_reward(parsed: ParsedAnswer) -> float:
    """1 for the think/answer format with a parsable box in the answer, else 0."""
    return 1.0 if parsed.format_ok and parsed.box is not None else 0.0


def box_iou_reward(parsed: ParsedAnswer, gt_box: Sequence[float]) -> float:
    """IoU^2 of the parsed box with the ground truth; 0 when no box parses."""
    if parsed.box is None:
        return 0.0
    return box_iou(parsed.box, gt_box) ** 2


def hit_reward(parsed: ParsedAnswer, gt_box: Sequence[float], threshold: float = 0.5) -> float:
    """1 when the parsed box is on the target (IoU >= ``threshold``), else 0: choosing the right
    object, apart from how tightly its box is drawn."""
    return 1.0 if parsed.box is not None and box_iou(parsed.box, gt_box) >= threshold else 0.0


def box_l1_reward(parsed: ParsedAnswer, gt_box: Sequence[float], image_size: tuple[int, int]) -> float:
    """1 - mean absolute coordinate error normalised by (W, H, W, H), clamped to [0, 1]."""
    if parsed.box is None:
        return 0.0
    height, width = image_size
    scale = np.array([width, height, width, height], np.float64)
    error = np.abs(np.asarray(parsed.box, np.float64) - np.asarray(gt_box, np.float64)) / scale
    return float(np.clip(1.0 - error.mean(), 0.0, 1.0))


def mask_iou_reward(mask_logits: torch.Tensor, gt_mask: np.ndarray | torch.Tensor) -> float:
    """IoU^2 of (mask_logits > 0) with the ground-truth mask, at ground-truth resolution.

    mask_logits: (H', W') logits; resized bilinearly when (H', W') differs from the mask's
    (H, W) — pass logits already mapped to the image frame when the segmenter pads.
    Both masks empty counts as IoU 1.
    """
    gt = torch.as_tensor(np.asarray(gt_mask), device=mask_logits.device).bool()
    logits = mask_logits.detach().float()
    if logits.shape[-2:] != gt.shape:
        logits = F.interpolate(logits[None, None], size=tuple(gt.shape), mode="bilinear", align_corners=False)[0, 0]
    pred = logits > 0
    inter = (pred & gt).sum().item()
    union = (pred | gt).sum().item()
    iou = 1.0 if union == 0 else inter / union
    return float(iou**2)


@dataclass
class RewardWeights:
    format: float = 1.0
    box: float = 1.0
    box_l1: float = 0.0
    mask: float = 1.0
    hit: float = 0.0


def unified_rewards(
    completions: Sequence[str],
    gt_boxes: Sequence[Sequence[float]],
    image_sizes: Sequence[tuple[int, int]],
    mask_logits: Sequence[torch.Tensor] | None,
    gt_masks: Sequence[np.ndarray] | None,
    weights: RewardWeights,
    use_format: bool,
    parsed: Sequence[ParsedAnswer] | None = None,
    box_scales: Sequence[tuple[float, float]] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-completion rewards, each named; "total" is their weighted sum.

    completions, gt_boxes, image_sizes, mask_logits, gt_masks: one entry per completion
    (repeat a prompt's ground truth G times). box_scales: optional (sx, sy) per completion
    mapping parsed-box pixels to ground-truth pixels (MLLM resize -> image).
    Returns float32 tensors of shape (N,): format (when used), box, hit (always: also what
    decides which rollouts train the segmenter), box_l1 (when weighted), mask (when masks are
    given), total.
    """
    if parsed is None:
        parsed = [parse_answer(c) for c in completions]
    if box_scales is not None:
        parsed = [_scale_parsed(p, s) for p, s in zip(parsed, box_scales, strict=True)]
    out: dict[str, list[float]] = {"box": [box_iou_reward(p, b) for p, b in zip(parsed, gt_boxes, strict=True)]}
    total = [weights.box * r for r in out["box"]]
    out["hit"] = [hit_reward(p, b) for p, b in zip(parsed, gt_boxes, strict=True)]
    if weights.hit:
        total = [t + weights.hit * r for t, r in zip(total, out["hit"], strict=True)]
    if use_format:
        out["format"] = [format_reward(p) for p in parsed]
        total = [t + weights.format * r for t, r in zip(total, out["format"], strict=True)]
    if weights.box_l1:
        out["box_l1"] = [box_l1_reward(p, b, s) for p, b, s in zip(parsed, gt_boxes, image_sizes, strict=True)]
        total = [t + weights.box_l1 * r for t, r in zip(total, out["box_l1"], strict=True)]
    if mask_logits is not None and gt_masks is not None:
        out["mask"] = [mask_iou_reward(m, g) for m, g in zip(mask_logits, gt_masks, strict=True)]
        total = [t + weights.mask * r for t, r in zip(total, out["mask"], strict=True)]
    out["total"] = total
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


def _scale_parsed(parsed: ParsedAnswer, scale: tuple[float, float]) -> ParsedAnswer:
    if parsed.box is None:
        return parsed
    sx, sy = scale
    x1, y1, x2, y2 = parsed.box
    box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
    return ParsedAnswer(parsed.think, parsed.answer, box, parsed.format_ok, parsed.error)
