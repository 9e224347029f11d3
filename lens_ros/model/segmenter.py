"""The ``Segmenter`` interface: image encoder + prompt-to-mask decoder of SAM / SAM 2.

A segmenter turns one image into an embedding once (``encode``; cached per frame by the
Pipeline), then decodes any number of prompts against it (``decode``): LENS's sparse
context prompt token(s) from the ContextModule, optionally a box. Masks come back as
logits at the input image's resolution (threshold at 0).

Coordinates at this boundary are always input-image pixels (x1, y1, x2, y2); each
backend maps them into its own model input frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class ImageEmbedding:
    """One image's encoder output plus the geometry needed to map prompts and masks.

    features: backend-specific tensors, batch dimension 1 (e.g. SAM: ``image_embed``
        (1, C, h, w); SAM 2 adds ``high_res_0``/``high_res_1``).
    original_size: (H, W) of the input image.
    input_size: (h, w) of the resized image inside the model's square input.
    """

    features: dict[str, torch.Tensor]
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    extras: dict[str, object] = field(default_factory=dict)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ImageEmbedding:
        feats = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in self.features.items()}
        return ImageEmbedding(feats, self.original_size, self.input_size, dict(self.extras))


@dataclass
class DecodeOutput:
    """Decoder result for B prompts against one image.

    mask_logits: (B, M, H, W) float32 at the input image's resolution (M = 1, or 3 with
        multimask output).
    iou_scores: (B, M) predicted mask quality.
    low_res_logits: (B, M, h, w) the decoder's own resolution (training losses may use it).
    """

    mask_logits: torch.Tensor
    iou_scores: torch.Tensor
    low_res_logits: torch.Tensor


class Segmenter(nn.Module, ABC):
    """Common interface of the SAM and SAM 2 backends (both ``nn.Module``).

    Attributes:
        image_size: side of the model's square input (1024 for the official models).
        prompt_dim: width of a sparse prompt token (256 for the official models).
    """

    image_size: int
    prompt_dim: int
    kind: str

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(H, W, 3) uint8 RGB -> ((3, S, S) float32 normalised input, input_size (h, w))."""

    @abstractmethod
    def encode_batch(
        self, images: torch.Tensor, original_sizes: list[tuple[int, int]], input_sizes: list[tuple[int, int]]
    ) -> list[ImageEmbedding]:
        """(B, 3, S, S) preprocessed images -> one ImageEmbedding per image (views)."""

    @abstractmethod
    def model_boxes(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """(B, 4) xyxy boxes in input-image pixels -> the model's input coordinates."""

    @abstractmethod
    def prompt_embeddings(
        self, batch: int, prompt_tokens: torch.Tensor | None, model_boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (sparse (B, N, prompt_dim) with box tokens first, dense "no mask" embedding)."""

    @abstractmethod
    def decode_low_res(
        self, embedding: ImageEmbedding, sparse: torch.Tensor, dense: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask decoder only: -> (low-res logits (B, M, 4h, 4w), iou (B, M))."""

    @abstractmethod
    def upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        """Low-res logits -> (B, M, H, W) float32 at the input image's resolution."""

    def decode(
        self,
        embedding: ImageEmbedding,
        prompt_tokens: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> DecodeOutput:
        """Decode B prompts against one image.

        Args:
            prompt_tokens: (B, K, prompt_dim) sparse prompt tokens (the context prompt).
            boxes: (B, 4) xyxy in input-image pixels, or None.
        At least one of them must be given; when both are, the box tokens come first
        (as in LENS, where the context token is appended after point/box prompts).
        """
        batch = check_prompts(prompt_tokens, boxes, self.prompt_dim)
        device = embedding.features["image_embed"].device
        model_boxes = None if boxes is None else self.model_boxes(boxes.to(device), embedding.original_size)
        sparse, dense = self.prompt_embeddings(batch, prompt_tokens, model_boxes)
        low_res, iou = self.decode_low_res(embedding, sparse, dense, multimask_output)
        return DecodeOutput(self.upscale(low_res, embedding), iou.float(), low_res)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """(H, W, 3) uint8 RGB -> ImageEmbedding (no gradients)."""
        tensor, input_size = self.preprocess(image)
        tensor = tensor.to(device=self.device, dtype=self.encoder_dtype)[None]
        with torch.no_grad():
            return self.encode_batch(tensor, [image.shape[:2]], [input_size])[0]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def encoder_dtype(self) -> torch.dtype:
        """dtype of the image encoder (may be bf16/fp16 while the rest stays float32)."""
        return next(self.sam.image_encoder.parameters()).dtype

    @property
    def decoder_dtype(self) -> torch.dtype:
        """dtype of the prompt encoder / mask decoder (and of the embeddings they take)."""
        return self.prompt_encoder.no_mask_embed.weight.dtype

    @property
    def prompt_encoder(self) -> nn.Module:
        raise NotImplementedError

    def cast(self, encoder_dtype: torch.dtype) -> Segmenter:
        """Image encoder in ``encoder_dtype`` (the heavy part); prompt encoder and mask
        decoder in float32, whose positional encodings mix float32 coordinates."""
        self.float()
        self.sam.image_encoder.to(encoder_dtype)
        return self


def check_prompts(prompt_tokens: torch.Tensor | None, boxes: torch.Tensor | None, prompt_dim: int) -> int:
    """Validate decode() prompts and return the batch size B."""
    if prompt_tokens is None and boxes is None:
        raise ValueError("decode needs prompt tokens, a box, or both")
    batch = None
    if prompt_tokens is not None:
        if prompt_tokens.ndim != 3 or prompt_tokens.shape[-1] != prompt_dim:
            raise ValueError(f"prompt_tokens must be (B, K, {prompt_dim}), got {tuple(prompt_tokens.shape)}")
        batch = prompt_tokens.shape[0]
    if boxes is not None:
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be (B, 4), got {tuple(boxes.shape)}")
        if batch is not None and boxes.shape[0] != batch:
            raise ValueError(f"{boxes.shape[0]} boxes for {batch} prompt-token sets")
        batch = boxes.shape[0]
    return int(batch)  # type: ignore[arg-type]
