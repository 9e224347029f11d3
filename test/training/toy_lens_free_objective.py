"""A tiny mask predictor used to test the loop machinery without the LENS model."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lens_training.data.dataset import ListDataset, Sample, box_from_mask
from lens_training.losses import segmentation_loss


class ToyObjective(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Conv2d(3, 4, 3, padding=1)
        self.frozen.requires_grad_(False)
        self.head = nn.Conv2d(4, 1, 3, padding=1)
        self.dropout = nn.Dropout(0.1)  # uses the RNG: resume must restore it

    def prepare(self, batch):
        images = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in batch.images])
        return images, batch.masks

    def forward(self, inputs):
        images, masks = inputs
        logits = self.head(self.dropout(F.relu(self.frozen(images))))[:, 0]
        loss, parts = segmentation_loss(list(logits), masks)
        return loss, {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}


def toy_dataset(n=16, size=12, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        mask = np.zeros((size, size), bool)
        y, x = rng.integers(0, size - 4, 2)
        mask[y : y + 4, x : x + 4] = True
        image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        image[mask] = 220
        samples.append(Sample(image, "the bright square", mask, box_from_mask(mask)))
    return ListDataset(samples)
