"""MLLM wrapper: Qwen2_5_VLForConditionalGeneration + tokenizer + our image packing.

What a forward pass needs: tokens, image packing, left-padded batches, input embeddings,
3D rotary positions, the decoder layers and completion log-probs. Turning prompts into
completions (greedy, sampled, speculative) is ``lens_ros.model.decoding.Decoder``.

One code path serves the real Qwen2.5-VL-3B (a ``from_pretrained`` directory with its
tokenizer and ``preprocessor_config.json``) and the embedded tiny model (its own
word-level tokenizer, 5-channel vision input): images are always packed by
``vision_input.pack_image``, prompts rendered by ``prompts.render_chat``.

Sequences are left-padded so that anything appended (the context queries) directly
follows each row's last real token. 3D rotary positions are computed explicitly with the
model's ``get_rope_index`` from ``mm_token_type_ids`` (1 on image tokens), never left to
the model's cached ``rope_deltas`` state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lens_ros.model import prompts, vision_input
from lens_ros.model.types import ModelFileError


@dataclass
class ImageConfig:
    """How images are packed for the vision tower (defaults: Qwen2.5-VL as used by LENS)."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    coord_channels: bool = False
    min_pixels: int = vision_input.QWEN_MIN_PIXELS
    max_pixels: int = vision_input.LENS_MAX_PIXELS
    # > 0: the image is first resized so that its longest side has this length, then
    # smart_resize applies (the released ReasonSeg checkpoints: 640, as in their training
    # and evaluation); 0: smart_resize of the image as it comes
    longest_side: int = 0

    @classmethod
    def from_preprocessor_config(cls, path: str | Path, max_pixels: int | None = None) -> ImageConfig:
        """Read patch/merge/temporal sizes from a Qwen ``preprocessor_config.json``."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: cannot read the image processor config ({exc})") from exc
        size = data.get("size") if isinstance(data.get("size"), dict) else {}
        min_pixels = data.get("min_pixels", size.get("shortest_edge", vision_input.QWEN_MIN_PIXELS))
        return cls(
            patch_size=int(data.get("patch_size", 14)),
            merge_size=int(data.get("merge_size", 2)),
            temporal_patch_size=int(data.get("temporal_patch_size", 2)),
            min_pixels=int(min_pixels),
            # LENS caps the MLLM's image at 1M pixels whatever the processor allows
            max_pixels=int(max_pixels or vision_input.LENS_MAX_PIXELS),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PackedImage:
    """pixel_values (N, C*T*P*P), image_grid_thw (1, 3), resized_hw (h, w) the MLLM sees."""

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    resized_hw: tuple[int, int]
    num_tokens: int


@dataclass
class MLLMInputs:
    """A left-padded batch of prompt (+ completion) sequences with their images.

    input_ids, attention_mask, mm_token_type_ids: (B, L).
    completion_mask: (B, L) bool, True on completion tokens (what teacher forcing / RL scores).
    pixel_values: (sum N_i, C*T*P*P); image_grid_thw: (B, 3).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    completion_mask: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> MLLMInputs:
        return MLLMInputs(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.mm_token_type_ids.to(device),
            self.completion_mask.to(device),
            self.pixel_values.to(device=device, dtype=dtype or torch.float32),
            self.image_grid_thw.to(device),
        )

    def hf_kwargs(self, pixel_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The tensors as keywords of transformers' Qwen2.5-VL ``forward`` / ``generate``."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "pixel_values": self.pixel_values if pixel_dtype is None else self.pixel_values.to(pixel_dtype),
            "image_grid_thw": self.image_grid_thw,
            "mm_token_type_ids": self.mm_token_type_ids,
        }


class MLLM(nn.Module):
    """Qwen2.5-VL + tokenizer with LENS's prompts; the weights live in ``self.model``."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        image_config: ImageConfig,
        system_prompt: str = prompts.SYSTEM_PROMPT,
        cot: bool = False,
        question_final_period: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_config = image_config
        self.system_prompt = system_prompt
        self.cot = cot
        self.question_final_period = question_final_period
        cfg = model.config
        self.image_token_id = int(cfg.image_token_id)
        self._check_tokenizer()
        self.eos_ids = [i for i in (self.token_id(prompts.IM_END), self.token_id("<|endoftext|>")) if i is not None]
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[-1])
        vis = cfg.vision_config
        if vis.in_channels != (5 if image_config.coord_channels else 3):
            raise ModelFileError(
                f"vision in_channels={vis.in_channels} but coord_channels={image_config.coord_channels}"
            )

    # -- tokens ---------------------------------------------------------------------------
    def token_id(self, token: str) -> int | None:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        return None if tid is None or tid == self.tokenizer.unk_token_id else int(tid)

    def _check_tokenizer(self) -> None:
        for token in (prompts.IM_START, prompts.IM_END, prompts.IMAGE_PAD, prompts.VISION_START, prompts.VISION_END):
            if self.token_id(token) is None:
                raise ModelFileError(f"tokenizer has no {token} token")
        if self.token_id(prompts.IMAGE_PAD) != self.image_token_id:
            raise ModelFileError(
                f"tokenizer's {prompts.IMAGE_PAD} id {self.token_id(prompts.IMAGE_PAD)} != "
                f"model image_token_id {self.image_token_id}"
            )

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode_completion(self, ids: list[int]) -> str:
        """Completion text with chat end tokens removed (box tokens are kept)."""
        ids = [i for i in ids if i not in self.eos_ids and i != self.pad_id]
        return self.tokenizer.decode(ids, skip_special_tokens=False).strip()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    # -- inputs ---------------------------------------------------------------------------
    def pack(self, image: np.ndarray) -> PackedImage:
        """(H, W, 3) uint8 RGB -> PackedImage (see ``vision_input.pack_image``).

        ``resized_hw`` is the image the MLLM sees, after the longest-side rule if any; a box in
        it maps to the original image by ``vision_input.scale_box`` as without the rule.
        """
        c = self.image_config
        if c.longest_side > 0:
            image = resize_longest_side(image, c.longest_side)
        pv, thw, hw = vision_input.pack_image(
            image,
            patch_size=c.patch_size,
            merge_size=c.merge_size,
            temporal_patch_size=c.temporal_patch_size,
            coord_channels=c.coord_channels,
            min_pixels=c.min_pixels,
            max_pixels=c.max_pixels,
        )
        return PackedImage(pv, thw, hw, vision_input.num_image_tokens(thw, c.merge_size))

    def prompt_ids(self, expression: str, image: PackedImage, cot: bool | None = None) -> list[int]:
        """Token ids of the chat prompt for one expression (ends with the assistant header)."""
        question = prompts.build_question(
            expression, cot=self.cot if cot is None else cot, final_period=self.question_final_period
        )
        text = prompts.render_chat(question, num_image_tokens=image.num_tokens, system=self.system_prompt)
        return self.encode_text(text)

    def collate(
        self, prompt_ids: list[list[int]], images: list[PackedImage], completion_ids: list[list[int]] | None = None
    ) -> MLLMInputs:
        """Left-pad prompt (+ completion) rows into one batch."""
        completion_ids = completion_ids or [[] for _ in prompt_ids]
        rows = [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)]
        length = max(len(r) for r in rows)
        b = len(rows)
        ids = torch.full((b, length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.long)
        comp = torch.zeros((b, length), dtype=torch.bool)
        for i, (row, c) in enumerate(zip(rows, completion_ids, strict=True)):
            ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, length - len(row) :] = 1
            if c:
                comp[i, length - len(c) :] = True
        mm = (ids == self.image_token_id).to(torch.int32) * mask.to(torch.int32)
        return MLLMInputs(
            ids,
            mask,
            mm,
            comp,
            torch.cat([im.pixel_values for im in images], dim=0),
            torch.cat([im.image_grid_thw for im in images], dim=0),
        )

    # -- forward pieces -------------------------------------------------------------------
    def embed(self, inputs: MLLMInputs) -> torch.Tensor:
        """(B, L, C) input embeddings with the vision tower's features at image tokens."""
        core = self.model.model
        embeds = core.get_input_embeddings()(inputs.input_ids)
        feats = core.get_image_features(
            inputs.pixel_values.to(self.model.visual.dtype if hasattr(self.model, "visual") else embeds.dtype),
            inputs.image_grid_thw,
            return_dict=True,
        ).pooler_output
        feats = torch.cat(list(feats), dim=0).to(embeds.dtype)
        image_mask = (inputs.input_ids == self.image_token_id) & inputs.attention_mask.bool()
        if int(image_mask.sum()) != feats.shape[0]:
            raise ValueError(f"{int(image_mask.sum())} image tokens for {feats.shape[0]} image features")
        return embeds.masked_scatter(image_mask.unsqueeze(-1), feats)

    def position_ids(
        self,
        input_ids: torch.Tensor,
        mm_token_type_ids: torch.Tensor,
        image_grid_thw: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(3, B, L) multimodal rotary positions; padded positions get arbitrary values."""
        pos, _ = self.model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids,
            image_grid_thw=image_grid_thw,
            attention_mask=attention_mask,
        )
        return pos

    @staticmethod
    def text_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
        """(3, B, L) plain 1D rotary positions, the same on all three axes: the cumulative sum
        of the attention mask (padded positions get 1, as transformers writes them).

        This is what transformers 4.51's Qwen2.5-VL computes for a forward given
        ``inputs_embeds`` without ``input_ids``, the pass in which the released LENS
        checkpoints read their context queries (``LensConfig.mask_pass`` "rerun").
        """
        pos = attention_mask.long().cumsum(-1) - 1
        pos = pos.masked_fill(attention_mask == 0, 1)
        return pos.unsqueeze(0).expand(3, -1, -1)

    def run_language_model(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache=None,
        use_cache: bool = False,
    ):
        """Decoder layers only -> (last hidden (B, L, C), cache).

        attention_mask: (B, L) 1 on real tokens, or a prepared mapping {layer type: 4D mask
        or None} that the text model uses as is (see ``decoding.Decoder.step_mask``).
        """
        out = self.model.model.language_model(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
        )
        return out.last_hidden_state, getattr(out, "cache", None) or getattr(out, "past_key_values", None)

    def token_logprobs(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, L) log p(input_ids[t] | <t) on completion tokens, 0 elsewhere.

        The LM head runs only on the positions predicting completion tokens (memory: the
        vocabulary of the 3B model is 151k).
        """
        target = completion_mask.clone()
        target[:, 0] = False
        b_idx, t_idx = target.nonzero(as_tuple=True)
        out = torch.zeros(input_ids.shape, dtype=torch.float32, device=hidden.device)
        if b_idx.numel() == 0:
            return out
        logits = self.model.lm_head(hidden[b_idx, t_idx - 1]).float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[b_idx, t_idx, None]).squeeze(-1)
        return out.index_put((b_idx, t_idx), logp)


def resize_longest_side(image: np.ndarray, longest: int) -> np.ndarray:
    """Resize so that the longer side is ``longest`` (up or down), as LENS's ``resize_longest``:
    each side scaled by longest / max(H, W) and truncated, bicubic (PIL's default)."""
    h, w = image.shape[:2]
    scale = longest / w if w > h else longest / h
    return vision_input.resize_rgb(image, max(1, int(h * scale)), max(1, int(w * scale)))


# generation_config.json fields that change greedy decoding in transformers' generate besides
# repetition_penalty (which lens_ros.model.decoding implements): they must be unset.
GENERATION_UNSUPPORTED = (
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
    "sequence_bias",
    "exponential_decay_length_penalty",
)


def read_generation_config(path: str | Path) -> dict:
    """The decoding settings of a checkpoint's ``generation_config.json`` that lens_ros honours,
    as transformers' ``generate`` applies them ({} when the file is absent).

    Sampling fields (do_sample, temperature, top_p, top_k) are not read: deployment decodes
    greedily and stage 2 samples with LENS's values. A field that would change greedy
    decoding and is not implemented raises ``ModelFileError``.
    """
    path = Path(path) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read the generation config ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: not a JSON object")
    unsupported = [k for k in GENERATION_UNSUPPORTED if data.get(k) not in (None, 0, [], {})]
    if unsupported:
        raise ModelFileError(f"{path}: {', '.join(unsupported)} set, which lens_ros's decoding does not implement")
    out = {}
    penalty = data.get("repetition_penalty")
    if penalty is not None:
        if not isinstance(penalty, (int, float)) or not 0 < float(penalty) <= 10:
            raise ModelFileError(f"{path}: repetition_penalty must be a number in (0, 10], got {penalty!r}")
        out["repetition_penalty"] = float(penalty)
    return out


def load_tokenizer(path: str | Path):
    """Tokenizer from a local directory: a Qwen processor/model dir or our bundle's files."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        raise ModelFileError(f"{path}: no tokenizer files (tokenizer.json or vocab.json + merges.txt)")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot load the tokenizer ({type(exc).__name__}: {exc})") from exc


def load_qwen(
    path: str | Path, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None, quiet: bool = False
):
    """Qwen2_5_VLForConditionalGeneration from a local ``from_pretrained`` directory.

    ``quiet``: silence transformers' load report (e.g. for checkpoints with extra heads).
    """
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelFileError(f"{path}: no config.json (expected a Qwen2.5-VL from_pretrained directory)")
    try:
        kwargs = {"dtype": dtype, "local_files_only": True}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        level = hf_logging.get_verbosity()
        if quiet:
            hf_logging.set_verbosity_error()
        try:
            model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                str(path), output_loading_info=True, **kwargs
            )
        finally:
            hf_logging.set_verbosity(level)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot load Qwen2.5-VL ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in info.get("missing_keys", ()) if "rotary" not in k]
    if missing:
        raise ModelFileError(f"{path}: Qwen2.5-VL weights missing for {sorted(missing)[:5]}")
    return model
