"""LensModel: MLLM + ContextModule + Segmenter, the nn.Module that training and inference use.

Data flow for one sample (B rows in a batch, left-padded):

    prompt (+ completion) ids (B, L) --embed + vision tower--> (B, L, C)
    ++ context queries (B, Q, C) --decoder layers--> hidden (B, L+Q, C)
    hidden[:, L:] (B, Q, C) --ContextModule--> prompt token (B, 1, D)
    segmenter(image embedding, prompt token) --> mask logits (1, H, W) per sample

The queries sit after the completion, so causal attention keeps the completion's token
log-probabilities unchanged by them: one forward pass gives both what GRPO needs (token
log-probs of sampled completions) and what the segmentation loss needs (masks).

The mask pass (``LensConfig.mask_pass``) is part of what a checkpoint was trained with:
    "cache"  models trained by lens_ros (lens-tiny, its bundles): 3D multimodal rotary
             positions; at inference the queries continue the generation's KV cache.
    "rerun"  the released LENS checkpoints: prompt + completion + queries run again as one
             pass with plain 1D positions (the cumulative sum of the attention mask on all
             three rotary axes), as the official code's forward with ``input_ids=None``
             gives under the transformers it pins (4.51.3), in inference and both training
             stages. The generation itself keeps its 3D positions.
The training forward uses the model's mask pass too, so fine-tuning trains what deploys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from lens_ros.model import prompts
from lens_ros.model.context_module import ContextModule, ContextModuleConfig
from lens_ros.model.decoding import Decoder, Generation
from lens_ros.model.mllm import MLLM, ImageConfig, MLLMInputs, PackedImage
from lens_ros.model.segmenter import ImageEmbedding, Segmenter


@dataclass
class LensConfig:
    """Everything needed to rebuild a LensModel's architecture (weights excluded).

    qwen: ``Qwen2_5_VLConfig.to_dict()``; segmenter: ``SamConfig``/``Sam2Config`` as dict.
    """

    qwen: dict
    image: ImageConfig = field(default_factory=ImageConfig)
    context: ContextModuleConfig = field(default_factory=ContextModuleConfig)
    segmenter_kind: str = "sam2"
    segmenter: dict = field(default_factory=dict)
    system_prompt: str = prompts.SYSTEM_PROMPT
    cot: bool = False
    max_new_tokens: int = 256
    # the segmenter is prompted with the MLLM's box as well as the context token (trained
    # so in stages 1/2; LENS itself uses the context token alone)
    box_prompt: bool = False
    # the pass that reads the context queries: "cache" or "rerun" (module docstring)
    mask_pass: str = "cache"
    # a "." after a question that does not end with one (prompts.build_question): lens_ros-
    # trained models were asked so, the released LENS checkpoints were not
    question_final_period: bool = True
    # decoding settings of the checkpoint's generation_config.json (mllm.read_generation_config)
    generation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["image"] = self.image.to_dict()
        data["context"] = self.context.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LensConfig:
        data = dict(data)
        data["image"] = ImageConfig(**data.get("image", {}))
        data["context"] = ContextModuleConfig(**data.get("context", {}))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


MASK_PASSES = ("cache", "rerun")


def build_segmenter(kind: str, config: dict) -> Segmenter:
    """A random-init segmenter from its config dict ("sam" or "sam2")."""
    if kind == "sam":
        from lens_ros.model.sam_backend import SamConfig, SamSegmenter

        return SamSegmenter(SamConfig.from_dict(config))
    if kind == "sam2":
        from lens_ros.model.sam2_backend import Sam2Config, Sam2Segmenter

        return Sam2Segmenter(Sam2Config.from_dict(config))
    raise ValueError(f"unknown segmenter kind {kind!r} (expected 'sam' or 'sam2')")


@dataclass
class LensInputs:
    """A training/inference batch: MLLM sequences + segmenter images.

    seg_images: (B, 3, S, S) segmenter input (None when prepared without, for a caller that
    encodes frames itself); original_sizes / seg_input_sizes: per row (H, W);
    packed: the MLLM's packed images (their ``resized_hw`` is the MLLM box frame).
    """

    mllm: MLLMInputs
    seg_images: torch.Tensor | None
    original_sizes: list[tuple[int, int]]
    seg_input_sizes: list[tuple[int, int]]
    packed: list[PackedImage]


@dataclass
class LensOutput:
    """query_hidden (B, Q, C); prompt_tokens (B, 1, D); low_res_logits (B, 1, h, w);
    mask_logits: per row (1, H_i, W_i) float32 at the original image size;
    iou_scores (B, 1); token_logprobs (B, L) on completion tokens (0 elsewhere) or None;
    completion_mask (B, L) bool."""

    query_hidden: torch.Tensor
    prompt_tokens: torch.Tensor
    low_res_logits: torch.Tensor
    mask_logits: list[torch.Tensor]
    iou_scores: torch.Tensor
    token_logprobs: torch.Tensor | None
    completion_mask: torch.Tensor


class LensModel(nn.Module):
    """The LENS model. Submodules: ``mllm.model`` (Qwen2.5-VL), ``context``, ``segmenter``."""

    def __init__(
        self, config: LensConfig, tokenizer, qwen_model: nn.Module | None = None, segmenter: Segmenter | None = None
    ) -> None:
        super().__init__()
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        self.config = config
        if config.mask_pass not in MASK_PASSES:
            raise ValueError(f"mask_pass must be one of {MASK_PASSES}, got {config.mask_pass!r}")
        if qwen_model is None:
            qwen_model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config.qwen))
        self.mllm = MLLM(
            qwen_model, tokenizer, config.image, config.system_prompt, config.cot, config.question_final_period
        )
        # generation state (drafter, lean step, the checkpoint's decoding settings); not a submodule
        self.decoder = Decoder(self.mllm, generation_config=config.generation)
        if config.context.hidden_size != self.mllm.hidden_size:
            raise ValueError(f"context hidden_size {config.context.hidden_size} != MLLM hidden {self.mllm.hidden_size}")
        self.context = ContextModule(config.context)
        self.segmenter = (
            segmenter if segmenter is not None else build_segmenter(config.segmenter_kind, config.segmenter)
        )
        if self.segmenter.prompt_dim != config.context.out_dim:
            raise ValueError(
                f"context out_dim {config.context.out_dim} != segmenter prompt width {self.segmenter.prompt_dim}"
            )

    @property
    def tokenizer(self):
        return self.mllm.tokenizer

    @property
    def num_queries(self) -> int:
        return self.context.num_queries

    # -- batch preparation ----------------------------------------------------------------
    def completion_ids(self, completion: str | list[int]) -> list[int]:
        """Ids of one completion; text completions get ``<|im_end|>`` appended (teacher forcing)."""
        if isinstance(completion, str):
            text = completion if completion.endswith(prompts.IM_END) else completion + prompts.answer_suffix()
            return self.mllm.encode_text(text)
        return list(completion)

    def prepare(
        self,
        images: list[np.ndarray],
        expressions: list[str],
        completions: list[str] | list[list[int]] | None = None,
        cot: bool | None = None,
        segmenter_inputs: bool = True,
    ) -> LensInputs:
        """Pack images, render prompts and tokenize: -> LensInputs, the MLLM's tensors on its
        device (the segmenter images stay on the CPU; ``encode_images`` moves them).
        ``segmenter_inputs=False`` skips the segmenter's resize (Pipeline encodes, and caches,
        each frame itself)."""
        packed = [self.mllm.pack(im) for im in images]
        prompt_ids = [self.mllm.prompt_ids(e, p, cot) for e, p in zip(expressions, packed, strict=True)]
        comp = None if completions is None else [self.completion_ids(c) for c in completions]
        mllm_inputs = self.mllm.collate(prompt_ids, packed, comp).to(self.mllm.device)
        seg = [self.segmenter.preprocess(im) for im in images] if segmenter_inputs else []
        return LensInputs(
            mllm=mllm_inputs,
            seg_images=torch.stack([s[0] for s in seg]) if seg else None,
            original_sizes=[tuple(im.shape[:2]) for im in images],
            seg_input_sizes=[s[1] for s in seg],
            packed=packed,
        )

    # -- pieces -----------------------------------------------------------------------------
    def _extended(self, ids: torch.Tensor, mm: torch.Tensor, mask: torch.Tensor, extra: int):
        """ids/mm/mask extended by ``extra`` attended text positions (the queries)."""
        b = ids.shape[0]
        ids_x = torch.cat([ids, torch.full((b, extra), self.mllm.pad_id, dtype=ids.dtype, device=ids.device)], 1)
        mm_x = torch.cat([mm, torch.zeros((b, extra), dtype=mm.dtype, device=mm.device)], 1)
        mask_x = torch.cat([mask, torch.ones((b, extra), dtype=mask.dtype, device=mask.device)], 1)
        return ids_x, mm_x, mask_x

    def prompt_tokens(self, query_hidden: torch.Tensor) -> torch.Tensor:
        """(B, Q, C) -> (B, 1, D) in the segmenter decoder's dtype."""
        ctx_dtype = self.context.learnable_query.dtype
        tokens = self.context(query_hidden.to(ctx_dtype))
        return tokens.to(self.segmenter.decoder_dtype)

    def cast(self, dtype: torch.dtype) -> LensModel:
        """Inference precision: MLLM, context module and segmenter image encoder in ``dtype``;
        the segmenter's prompt encoder and mask decoder stay float32 (their coordinate
        encodings are float32 and they are cheap)."""
        self.mllm.to(dtype)
        self.context.to(dtype)
        self.segmenter.cast(dtype)
        return self

    def encode_images(self, inputs: LensInputs) -> list[ImageEmbedding]:
        """Segmenter image embeddings; without gradients when the encoder is frozen."""
        if inputs.seg_images is None:
            raise ValueError("these inputs were prepared with segmenter_inputs=False")
        enc = self.segmenter_encoder_params()
        images = inputs.seg_images.to(device=enc[0].device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in enc)):
            return self.segmenter.encode_batch(images, inputs.original_sizes, inputs.seg_input_sizes)

    def segmenter_encoder_params(self) -> list[nn.Parameter]:
        sam = self.segmenter.sam
        encoder = sam.image_encoder
        return list(encoder.parameters())

    def decode_masks(self, embeddings: list[ImageEmbedding], prompt_tokens: torch.Tensor, boxes=None):
        """Per-row decode: -> (low-res (B, 1, h, w), list of (1, H, W), iou (B, 1)).

        boxes: None, or per row an xyxy box in image pixels (sequence or (B, 4) tensor) or
        None for a row without one (that row gets the context prompt alone).
        """
        low, full, ious = [], [], []
        for i, emb in enumerate(embeddings):
            row = None if boxes is None else boxes[i]
            box = None if row is None else torch.as_tensor(row, dtype=torch.float32).reshape(1, 4)
            out = self.segmenter.decode(emb, prompt_tokens=prompt_tokens[i : i + 1], boxes=box)
            low.append(out.low_res_logits)
            full.append(out.mask_logits[0])
            ious.append(out.iou_scores)
        return torch.cat(low), full, torch.cat(ious)

    # -- training forward -----------------------------------------------------------------
    def forward(
        self,
        inputs: LensInputs,
        compute_logprobs: bool = True,
        embeddings: list[ImageEmbedding] | None = None,
        boxes=None,
    ) -> LensOutput:
        """Teacher-forced (or given sampled completions) pass: queries after each sequence.

        ``embeddings``: precomputed segmenter embeddings (e.g. cached across GRPO group rows).
        ``boxes``: per-row box prompts for a ``box_prompt`` model (see ``decode_masks``).
        """
        m = inputs.mllm.to(self.mllm.device, self.mllm.dtype)
        embeds = self.mllm.embed(m)
        b, length, _ = embeds.shape
        q = self.num_queries
        queries = self.context.queries(b).to(embeds.dtype)
        ids_x, mm_x, mask_x = self._extended(m.input_ids, m.mm_token_type_ids, m.attention_mask, q)
        pos = self._pass_positions(ids_x, mm_x, m.image_grid_thw, mask_x)
        hidden, _ = self.mllm.run_language_model(torch.cat([embeds, queries], 1), pos, mask_x)
        query_hidden = hidden[:, length:]
        logprobs = None
        if compute_logprobs and bool(m.completion_mask.any()):
            logprobs = self.mllm.token_logprobs(hidden[:, :length], m.input_ids, m.completion_mask)
        tokens = self.prompt_tokens(query_hidden)
        if embeddings is None:
            embeddings = self.encode_images(inputs)
        low, full, ious = self.decode_masks(embeddings, tokens, boxes)
        return LensOutput(query_hidden, tokens, low, full, ious, logprobs, m.completion_mask)

    def _pass_positions(self, ids_x, mm_x, image_grid_thw, mask_x) -> torch.Tensor:
        """(3, B, L) rotary positions of a pass over prompt + completion + queries."""
        if self.config.mask_pass == "rerun":
            return self.mllm.text_position_ids(mask_x)
        return self.mllm.position_ids(ids_x, mm_x, image_grid_thw, mask_x)

    # -- inference: the context queries after a generation ---------------------------------
    @torch.no_grad()
    def query_hidden(self, gen: Generation, inputs: MLLMInputs) -> torch.Tensor:
        """(B, Q, C) query hidden states after ``gen`` by the model's mask pass.

        "rerun": prompt + completion + queries as one pass, every token equal to the pad id
        masked as the official evaluation masks it; "cache": on the generation's KV cache.
        """
        if self.config.mask_pass == "rerun":
            seq = gen.sequences
            mask = gen.attention_mask.to(seq.device) * (seq != self.mllm.pad_id).to(gen.attention_mask.dtype)
            return self.query_hidden_full(seq, mask, inputs)
        return self.query_hidden_after_generation(gen, inputs)

    @torch.no_grad()
    def query_hidden_after_generation(self, gen: Generation, inputs: MLLMInputs) -> torch.Tensor:
        """(B, Q, C) query hidden states, re-using ``gen.cache`` (no re-encoding of the prompt);
        the "cache" mask pass.

        The cache covers all but the last column of ``gen.sequences``; that column (a real
        token, or padding after an earlier EOS, masked) is fed together with the queries.
        """
        inputs = inputs.to(self.mllm.device, self.mllm.dtype)
        seq = gen.sequences
        b = seq.shape[0]
        q = self.num_queries
        mm = torch.cat(
            [
                inputs.mm_token_type_ids,
                torch.zeros(
                    (b, seq.shape[1] - inputs.input_ids.shape[1]),
                    dtype=inputs.mm_token_type_ids.dtype,
                    device=seq.device,
                ),
            ],
            1,
        )
        ids_x, mm_x, mask_x = self._extended(seq, mm, gen.attention_mask.to(seq.device), q)
        pos = self.mllm.position_ids(ids_x, mm_x, inputs.image_grid_thw, mask_x)
        emb_layer = self.mllm.model.model.get_input_embeddings()
        last = emb_layer(seq[:, -1:])
        new = torch.cat([last, self.context.queries(b).to(last.dtype)], 1)
        cached = gen.cache.get_seq_length()
        lean = self.decoder.lean()
        if lean is not None:  # the same arithmetic without transformers' per-layer machinery
            key_mask = None if bool(mask_x.all()) else mask_x.bool()
            hidden = lean.step(new, pos[0, :, -(q + 1) :], gen.cache, key_mask)
        else:
            hidden, _ = self.mllm.run_language_model(
                new, pos[:, :, -(q + 1) :], mask_x, cache=gen.cache, use_cache=True
            )
        if hasattr(gen.cache, "crop"):  # leave the generation's cache as it was (re-usable)
            gen.cache.crop(cached - gen.cache.get_seq_length())  # negative: tokens to drop
        return hidden[:, 1:]

    @torch.no_grad()
    def query_hidden_full(
        self, sequences: torch.Tensor, attention_mask: torch.Tensor, inputs: MLLMInputs
    ) -> torch.Tensor:
        """(B, Q, C) query hidden states by re-running the whole sequence (no cache), with the
        positions of the model's mask pass."""
        b, total = sequences.shape
        extra = total - inputs.input_ids.shape[1]
        mm = torch.cat(
            [
                inputs.mm_token_type_ids,
                torch.zeros((b, extra), dtype=inputs.mm_token_type_ids.dtype, device=sequences.device),
            ],
            1,
        )
        full = MLLMInputs(
            sequences,
            attention_mask,
            mm,
            torch.zeros_like(sequences, dtype=torch.bool),
            inputs.pixel_values,
            inputs.image_grid_thw,
        ).to(self.mllm.device, self.mllm.dtype)
        embeds = self.mllm.embed(full)
        q = self.num_queries
        ids_x, mm_x, mask_x = self._extended(full.input_ids, full.mm_token_type_ids, full.attention_mask, q)
        pos = self._pass_positions(ids_x, mm_x, full.image_grid_thw, mask_x)
        queries = self.context.queries(b).to(embeds.dtype)
        hidden, _ = self.mllm.run_language_model(torch.cat([embeds, queries], 1), pos, mask_x)
        return hidden[:, total:]
