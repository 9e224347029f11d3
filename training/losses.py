"""Segmentation loss of both stages: BCE-with-logits + Dice (1:1 in LENS), per mask, averaged.

For one mask with logits x and target y over its P pixels (sigma = sigmoid):

    BCE  = 1/P sum_p [ -y log sigma(x) - (1 - y) log(1 - sigma(x)) ]
    Dice = 1 - (2 sum_p sigma(x) y + eps) / (sum_p sigma(x) + sum_p y + eps)

Masks in a batch may differ in size (each at its image's resolution), so the loss takes a
list and averages the per-mask values; ``ignore`` pixels drop out of both terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if keep is None:
        return per_pixel.mean()
    return (per_pixel * keep).sum() / keep.sum().clamp(min=1)


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None = None, eps: float = 1.0
) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    if keep is not None:
        prob, target = prob * keep, target * keep
    numerator = 2 * (prob * target).sum()
    denominator = prob.sum() + target.sum()
    return 1 - (numerator + eps) / (denominator + eps)


def segmentation_loss(
    mask_logits: Sequence[torch.Tensor],
    gt_masks: Sequence[np.ndarray | torch.Tensor],
    ignores: Sequence[np.ndarray | None] | None = None,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over masks of bce_weight * BCE + dice_weight * Dice.

    mask_logits[i]: (H_i, W_i) float logits at the ground truth's resolution.
    Returns (loss, {"bce", "dice"} detached means).
    """
    bces, dices = [], []
    for i, (logits, gt) in enumerate(zip(mask_logits, gt_masks, strict=True)):
        logits = logits.float()
        target = torch.as_tensor(np.asarray(gt) if not torch.is_tensor(gt) else gt, device=logits.device).float()
        if target.shape != logits.shape:
            raise ValueError(f"mask {i}: logits {tuple(logits.shape)} vs ground truth {tuple(target.shape)}")
        keep = None
        if ignores is not None and ignores[i] is not None:
            keep = 1.0 - torch.as_tensor(np.asarray(ignores[i]), device=logits.device).float()
        bces.append(bce_loss(logits, target, keep))
        dices.append(dice_loss(logits, target, keep))
    bce = torch.stack(bces).mean()
    dice = torch.stack(dices).mean()
    loss = bce_weight * bce + dice_weight * dice
    return loss, {"bce": bce.detach(), "dice": dice.detach()}
