"""SAM 2 (``sam2`` package) segmenter: Hiera-T/S/B+/L from the configs shipped in the wheel.

As in LENS the model input is a plain ``image_size`` x ``image_size`` resize with
ImageNet mean/std (SAM 2's own transforms), the lowest-resolution feature map gets
``no_mem_embed`` added, and the context prompt token is appended after any point/box
tokens. The video-memory modules are dropped unless ``keep_memory`` (the released LENS
weights do not contain them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lens_ros.model.segmenter import DecodeOutput, ImageEmbedding, Segmenter
from lens_ros.model.types import ModelFileError
from lens_ros.model.weights import load_into, load_state_dict_file

SAM2_CONFIGS: dict[str, str] = {
    "hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "hiera_l": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
MEMORY_MODULES = ("memory_attention", "memory_encoder", "maskmem_tpos_enc")

# Input resizes: "torch" SAM 2's own transforms (bilinear on float pixels); "pil" PIL's
# bilinear on uint8 (LENS's RefCOCO training and evaluation: torchvision's resize of a PIL
# image); "cv2" OpenCV's INTER_LINEAR on uint8 (LENS's ReasonSeg training and evaluation).
RESIZES = ("torch", "pil", "cv2")
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# A very small SAM 2 for tests and smoke runs: Hiera with one block per stage, width 16,
# 256 px input. The prompt width stays 256 (SAM 2 ties it to the memory width).
TINY_SAM2_OVERRIDES: tuple[str, ...] = (
    "++model.image_size=256",
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.trunk.window_spec=[4,4,4,2]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=256",
    "++model.memory_attention.layer.self_attention.feat_sizes=[16,16]",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[16,16]",
)


@dataclass
class Sam2Config:
    """Which SAM 2: a config file of the ``sam2`` wheel plus hydra overrides."""

    config_file: str = SAM2_CONFIGS["hiera_l"]
    overrides: tuple[str, ...] = ()
    keep_memory: bool = False
    apply_postprocessing: bool = True  # build_sam2's dynamic multimask fallback
    # how the input is resized to image_size x image_size (RESIZES); a trained model's masks
    # depend on it at their borders
    resize: str = "torch"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["overrides"] = list(self.overrides)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Sam2Config:
        data = dict(data)
        data["overrides"] = tuple(data.get("overrides", ()))
        return cls(**data)


def build_sam2_model(config: Sam2Config):
    """Random-init ``SAM2Base`` from the wheel's config (weights are loaded separately)."""
    from sam2.build_sam import build_sam2

    model = build_sam2(
        config.config_file,
        ckpt_path=None,
        device="cpu",
        hydra_overrides_extra=list(config.overrides),
        apply_postprocessing=config.apply_postprocessing,
    )
    if not config.keep_memory:
        for name in MEMORY_MODULES:
            if hasattr(model, name):
                delattr(model, name)
    return model


class Sam2Segmenter(Segmenter):
    """``Segmenter`` around a ``sam2`` ``SAM2Base`` (its weights live in ``self.sam``)."""

    kind = "sam2"

    def __init__(self, config: Sam2Config | None = None) -> None:
        super().__init__()
        from sam2.utils.transforms import SAM2Transforms

        self.config = config or Sam2Config()
        if self.config.resize not in RESIZES:
            raise ValueError(f"SAM 2 input resize must be one of {RESIZES}, got {self.config.resize!r}")
        self.sam = build_sam2_model(self.config)
        self.image_size = int(self.sam.image_size)
        self.prompt_dim = int(self.sam.sam_prompt_encoder.embed_dim)
        self.transforms = SAM2Transforms(resolution=self.image_size, mask_threshold=0.0)
        s = self.image_size
        self._feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]

    @classmethod
    def from_name(cls, name: str, checkpoint: str | Path | None = None, keep_memory: bool = False) -> Sam2Segmenter:
        """``hiera_t`` ... ``sam2.1_hiera_l``; ``checkpoint``: an official ``sam2_hiera_large.pt``."""
        if name not in SAM2_CONFIGS:
            raise ValueError(f"unknown SAM 2 size {name!r}; choose from {sorted(SAM2_CONFIGS)}")
        seg = cls(Sam2Config(SAM2_CONFIGS[name], keep_memory=keep_memory))
        if checkpoint is not None:
            seg.load_checkpoint(checkpoint)
        return seg

    def load_checkpoint(self, path: str | Path) -> None:
        """Official SAM 2 checkpoint (state dict under ``"model"``) or a safetensors file.

        Memory-module weights in the file are ignored when the modules were dropped.
        """
        state = load_state_dict_file(path, nested_key="model")
        if not self.config.keep_memory:
            state = {k: v for k, v in state.items() if not k.startswith(MEMORY_MODULES)}
        load_into(self.sam, state, source=path)

    @property
    def prompt_encoder(self):
        return self.sam.sam_prompt_encoder

    @property
    def has_memory(self) -> bool:
        return hasattr(self.sam, "memory_encoder")

    # -- encoder --------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        s = self.image_size
        if self.config.resize == "torch":
            return self.transforms(image), (s, s)
        if self.config.resize == "pil":
            from PIL import Image

            resized = np.asarray(Image.fromarray(image).resize((s, s), Image.Resampling.BILINEAR))
        else:
            import cv2

            resized = cv2.resize(image, (s, s), interpolation=cv2.INTER_LINEAR)
        pixels = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float()
        mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(3, 1, 1)
        return (pixels - mean) / std, (s, s)

    def encode_batch(
        self, images: torch.Tensor, original_sizes: list[tuple[int, int]], input_sizes: list[tuple[int, int]]
    ) -> list[ImageEmbedding]:
        # SAM2Base.forward_image, with the encoder output brought to the decoder's dtype
        # before the decoder's high-res projections (the encoder may run in bf16/fp16)
        backbone_out = self.sam.image_encoder(images.to(self.encoder_dtype))
        fpn = [f.to(self.decoder_dtype) for f in backbone_out["backbone_fpn"]]
        if self.sam.use_high_res_features_in_sam:
            fpn[0] = self.sam.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.sam.sam_mask_decoder.conv_s1(fpn[1])
        backbone_out = {**backbone_out, "backbone_fpn": fpn}
        _, vision_feats, vision_pos, _ = self.sam._prepare_backbone_features(backbone_out)
        # the memory path (tracking) needs the features before no_mem_embed, and their positions
        memory_inputs = None
        if self.has_memory:
            memory_inputs = ([f.detach() for f in vision_feats], [p.to(self.decoder_dtype) for p in vision_pos])
        if self.sam.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.sam.no_mem_embed
        batch = images.shape[0]
        # (HW, B, C) -> (B, C, H, W), finest level first
        feats = [
            f.permute(1, 2, 0).reshape(batch, -1, *hw) for f, hw in zip(vision_feats, self._feat_sizes, strict=True)
        ]
        out = []
        for i, (orig, inp) in enumerate(zip(original_sizes, input_sizes, strict=True)):
            extras = {}
            if memory_inputs is not None:
                extras["memory_feats"] = [f[:, i : i + 1] for f in memory_inputs[0]]
                extras["memory_pos"] = [p[:, i : i + 1] for p in memory_inputs[1]]
            out.append(
                ImageEmbedding(
                    {
                        "image_embed": feats[-1][i : i + 1],
                        "high_res_0": feats[0][i : i + 1],
                        "high_res_1": feats[1][i : i + 1],
                    },
                    tuple(orig),
                    tuple(inp),
                    extras,
                )
            )
        return out

    # -- decoder --------------------------------------------------------------------------
    def model_boxes(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """(B, 4) input-image pixels -> (B, 2, 2) corners in the model's input frame."""
        return self.transforms.transform_boxes(boxes.float(), normalize=True, orig_hw=original_size)

    def prompt_embeddings(
        self, batch: int, prompt_tokens: torch.Tensor | None, model_boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, n, D) = [box corner tokens (+ SAM 2's padding point), context tokens]."""
        pe = self.sam.sam_prompt_encoder
        parts = []
        if model_boxes is not None:
            labels = torch.tensor([[2, 3]], dtype=torch.int, device=model_boxes.device).repeat(batch, 1)
            box_sparse, _ = pe(points=(model_boxes, labels), boxes=None, masks=None)
            parts.append(box_sparse)
        if prompt_tokens is not None:
            parts.append(prompt_tokens)
        dtype = prompt_tokens.dtype if prompt_tokens is not None else pe.no_mask_embed.weight.dtype
        sparse = torch.cat([p.to(dtype) for p in parts], dim=1)
        h, w = pe.image_embedding_size
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return sparse, dense

    def decode_low_res(
        self, embedding: ImageEmbedding, sparse: torch.Tensor, dense: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask decoder only: -> (low-res logits (B, M, 4h, 4w), iou (B, M))."""
        feats = embedding.features
        dtype = feats["image_embed"].dtype
        low_res, iou, _, _ = self.sam.sam_mask_decoder(
            image_embeddings=feats["image_embed"],
            image_pe=self.sam.sam_prompt_encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=multimask_output,
            repeat_image=sparse.shape[0] > 1,
            high_res_features=[feats["high_res_0"], feats["high_res_1"]],
        )
        return low_res, iou

    def upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        """Low-res logits -> (B, M, H, W) float32 at the input image's resolution."""
        return F.interpolate(low_res.float(), embedding.original_size, mode="bilinear", align_corners=False)


class Sam2MemoryTracker:
    """SAM 2 video memory between reasonings: the reasoned frame's mask conditions the
    memory bank, later frames are segmented from memory alone (no prompt, no MLLM).

    Needs a ``Sam2Segmenter`` built with ``keep_memory=True`` and its memory weights
    (official SAM 2 checkpoints have them; the released LENS weights do not).
    """

    def __init__(self, segmenter: Sam2Segmenter) -> None:
        if not segmenter.has_memory:
            raise ValueError("SAM 2 memory tracking needs a segmenter built with keep_memory=True")
        self.segmenter = segmenter
        self.sam = segmenter.sam
        self.output_dict: dict[str, dict[int, dict]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        self.frame_idx = -1

    def _inputs(self, embedding: ImageEmbedding):
        if "memory_feats" not in embedding.extras:
            raise ValueError("embedding has no memory inputs (encoded by a segmenter without memory?)")
        feats = embedding.extras["memory_feats"]
        return feats, embedding.extras["memory_pos"], [(f.shape[-2], f.shape[-1]) for f in self._levels(embedding)]

    @staticmethod
    def _levels(embedding: ImageEmbedding) -> list[torch.Tensor]:
        f = embedding.features
        return [f["high_res_0"], f["high_res_1"], f["image_embed"]]

    @torch.no_grad()
    def start(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> None:
        """Condition the memory on one frame's mask (low-res logits (1, 1, h, w) of ``decode``)."""
        s = self.segmenter.image_size
        mask = F.interpolate(low_res_logits.float(), (s, s), mode="bilinear", align_corners=False) > 0
        feats, pos, sizes = self._inputs(embedding)
        self.output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        self.frame_idx = 0
        out = self.sam.track_step(
            frame_idx=0,
            is_init_cond_frame=True,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=None,
            mask_inputs=mask.to(feats[-1].dtype),
            output_dict=self.output_dict,
            num_frames=1,
        )
        self.output_dict["cond_frame_outputs"][0] = out

    @torch.no_grad()
    def step(self, embedding: ImageEmbedding) -> DecodeOutput:
        """Segment the next frame from memory; the result also enters the memory bank."""
        if self.frame_idx < 0:
            raise RuntimeError("call start() with a conditioning mask first")
        self.frame_idx += 1
        feats, pos, sizes = self._inputs(embedding)
        out = self.sam.track_step(
            frame_idx=self.frame_idx,
            is_init_cond_frame=False,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=None,
            mask_inputs=None,
            output_dict=self.output_dict,
            num_frames=self.frame_idx + 1,
        )
        non_cond = self.output_dict["non_cond_frame_outputs"]
        non_cond[self.frame_idx] = out
        keep = max(self.sam.num_maskmem, self.sam.max_obj_ptrs_in_encoder)
        for idx in [i for i in non_cond if i <= self.frame_idx - keep]:
            del non_cond[idx]  # bounded memory for an endless camera stream
        low = out["pred_masks"]
        score = torch.sigmoid(out.get("object_score_logits", torch.zeros(1, 1))).float()
        return DecodeOutput(self.segmenter.upscale(low, embedding), score.reshape(1, 1), low)


def check_sam2_available() -> None:
    """Raise ModelFileError when the sam2 package (and its configs) cannot be imported."""
    try:
        import sam2  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the install
        raise ModelFileError(f"the sam2 package is not usable: {exc}") from exc
