"""SAM (segment-anything) segmenter: registry ViT-B/L/H and small custom sizes.

Preprocessing and mask post-processing are SAM's own (longest side resized to
``image_size``, bottom-right zero padding, pixel mean/std in 0..255), so for the same
weights and box prompt ``SamSegmenter`` gives ``SamPredictor``'s masks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from lens_ros.model.segmenter import ImageEmbedding, Segmenter
from lens_ros.model.weights import load_into, load_state_dict_file


@dataclass
class SamConfig:
    """Numbers that define a SAM model (defaults: ViT-B)."""

    image_size: int = 1024
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    prompt_embed_dim: int = 256
    patch_size: int = 16
    window_size: int = 14
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SamConfig:
        data = dict(data)
        for key in ("global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


# The official registry sizes (segment_anything.build_sam).
SAM_REGISTRY: dict[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, global_attn_indexes=(5, 11, 17, 23)
    ),
    "vit_h": SamConfig(
        encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, global_attn_indexes=(7, 15, 23, 31)
    ),
}


def build_sam_custom(
    image_size: int = 1024,
    encoder_embed_dim: int = 768,
    encoder_depth: int = 12,
    encoder_num_heads: int = 12,
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    prompt_embed_dim: int = 256,
    patch_size: int = 16,
    window_size: int = 14,
    decoder_depth: int = 2,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    iou_head_hidden_dim: int = 256,
    mask_in_chans: int = 16,
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
) -> Sam:
    """A segment_anything ``Sam`` of any size, assembled from its modules (random init).

    With the defaults and the registry numbers it is exactly ViT-B/L/H; small values give
    the embedded model's SAM (e.g. image 256, width 96, depth 2). The image embedding is
    (prompt_embed_dim, image_size/patch, image_size/patch); low-res masks are 4x that.
    """
    embed_hw = image_size // patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=encoder_depth,
            embed_dim=encoder_embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=encoder_num_heads,
            patch_size=patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(global_attn_indexes),
            window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(embed_hw, embed_hw),
            input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=decoder_depth,
                embedding_dim=prompt_embed_dim,
                mlp_dim=decoder_mlp_dim,
                num_heads=decoder_num_heads,
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=list(pixel_mean),
        pixel_std=list(pixel_std),
    ).eval()


class SamSegmenter(Segmenter):
    """``Segmenter`` around a segment_anything ``Sam`` (its weights live in ``self.sam``)."""

    kind = "sam"

    def __init__(self, config: SamConfig | None = None, sam: Sam | None = None) -> None:
        super().__init__()
        self.config = config or SamConfig()
        self.sam = sam if sam is not None else build_sam_custom(**asdict(self.config))
        self.image_size = self.config.image_size
        self.prompt_dim = self.config.prompt_embed_dim
        self.transform = ResizeLongestSide(self.image_size)

    @classmethod
    def from_registry(cls, name: str, checkpoint: str | Path | None = None) -> SamSegmenter:
        """ViT-B/L/H (``vit_b``/``vit_l``/``vit_h``), optionally with the official weights
        file (``sam_vit_h_4b8939.pth`` etc., or a safetensors conversion)."""
        if name not in SAM_REGISTRY:
            raise ValueError(f"unknown SAM size {name!r}; choose from {sorted(SAM_REGISTRY)}")
        seg = cls(SAM_REGISTRY[name])
        if checkpoint is not None:
            seg.load_checkpoint(checkpoint)
        return seg

    def load_checkpoint(self, path: str | Path) -> None:
        """Load an official-format SAM state dict (keys ``image_encoder.*`` ...)."""
        load_into(self.sam, load_state_dict_file(path), source=path)

    @property
    def prompt_encoder(self):
        return self.sam.prompt_encoder

    # -- encoder --------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        resized = self.transform.apply_image(image)
        h, w = resized.shape[:2]
        x = torch.as_tensor(resized).permute(2, 0, 1).float()
        x = (x - self.sam.pixel_mean.cpu()[:, :, :]) / self.sam.pixel_std.cpu()
        x = F.pad(x, (0, self.image_size - w, 0, self.image_size - h))
        return x, (h, w)

    def encode_batch(
        self, images: torch.Tensor, original_sizes: list[tuple[int, int]], input_sizes: list[tuple[int, int]]
    ) -> list[ImageEmbedding]:
        # (B, prompt_dim, S/patch, S/patch), in the decoder's dtype
        feats = self.sam.image_encoder(images.to(self.encoder_dtype)).to(self.decoder_dtype)
        return [
            ImageEmbedding({"image_embed": feats[i : i + 1]}, tuple(o), tuple(s))
            for i, (o, s) in enumerate(zip(original_sizes, input_sizes, strict=True))
        ]

    # -- decoder --------------------------------------------------------------------------
    def model_boxes(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """(B, 4) input-image pixels -> the model's input frame."""
        return self.transform.apply_boxes_torch(boxes.float(), original_size)

    def prompt_embeddings(
        self, batch: int, prompt_tokens: torch.Tensor | None, model_boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, n, D) = [box corner tokens, context tokens]; dense = "no mask"."""
        pe = self.sam.prompt_encoder
        parts = []
        if model_boxes is not None:
            parts.append(pe._embed_boxes(model_boxes))
        if prompt_tokens is not None:
            parts.append(prompt_tokens)
        dtype = parts[-1].dtype if prompt_tokens is not None else pe.no_mask_embed.weight.dtype
        sparse = torch.cat([p.to(dtype) for p in parts], dim=1)
        h, w = pe.image_embedding_size
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return sparse, dense

    def decode_low_res(
        self, embedding: ImageEmbedding, sparse: torch.Tensor, dense: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask decoder only: -> (low-res logits (B, M, 4h, 4w), iou (B, M))."""
        image_embed = embedding.features["image_embed"]
        return self.sam.mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam.prompt_encoder.get_dense_pe().to(image_embed.dtype),
            sparse_prompt_embeddings=sparse.to(image_embed.dtype),
            dense_prompt_embeddings=dense.to(image_embed.dtype),
            multimask_output=multimask_output,
        )

    def upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        """Low-res logits -> (B, M, H, W) float32 at the input image's resolution."""
        return self.sam.postprocess_masks(low_res.float(), embedding.input_size, embedding.original_size)
