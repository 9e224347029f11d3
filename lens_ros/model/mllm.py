"""MLLM wrapper: Qwen2_5_VLForConditionalGeneration + tokenizer + our image packing.

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
from lens_ros.model.fast_decode import LeanDecoder
from lens_ros.model.speculative import NgramDrafter, SequenceIndex
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
class GenerationSettings:
    """Decoding settings: greedy for deployment, sampling (LENS's RL values) for GRPO.

    draft_tokens: greedy decoding of one row checks up to this many drafted tokens per
    decoder step (``speculative``; the output is the same, 0 turns it off).
    """

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 0.9
    top_p: float = 0.9
    top_k: int = 50
    draft_tokens: int = 0

    @classmethod
    def greedy(cls, max_new_tokens: int = 256, draft_tokens: int = 0) -> GenerationSettings:
        return cls(max_new_tokens=max_new_tokens, draft_tokens=draft_tokens)

    @classmethod
    def sampling(cls, max_new_tokens: int = 256) -> GenerationSettings:
        return cls(max_new_tokens=max_new_tokens, do_sample=True)


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


@dataclass
class Generation:
    """Result of ``MLLM.generate``.

    sequences: (B, L + T) prompt + generated ids (right part padded after EOS).
    attention_mask: (B, L + T) 1 on real tokens, 0 on padding and after each row's EOS.
    completion_ids: per row, generated ids up to and including EOS.
    texts: per row, the decoded completion (chat end tokens removed).
    cache: the KV cache (covers all but the last column of ``sequences``).
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    completion_ids: list[list[int]]
    texts: list[str]
    cache: object
    prompt_length: int


class MLLM(nn.Module):
    """Qwen2.5-VL + tokenizer with LENS's prompts; the weights live in ``self.model``."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        image_config: ImageConfig,
        system_prompt: str = prompts.SYSTEM_PROMPT,
        cot: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_config = image_config
        self.system_prompt = system_prompt
        self.cot = cot
        cfg = model.config
        self.image_token_id = int(cfg.image_token_id)
        self._check_tokenizer()
        self.eos_ids = [i for i in (self.token_id(prompts.IM_END), self.token_id("<|endoftext|>")) if i is not None]
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[-1])
        self.drafter = NgramDrafter()  # n-grams of this model's earlier greedy answers
        self.draft_stats = DraftStats()
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
        """(H, W, 3) uint8 RGB -> PackedImage (see ``vision_input.pack_image``)."""
        c = self.image_config
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
        question = prompts.build_question(expression, cot=self.cot if cot is None else cot)
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
        or None} that the text model uses as is (see ``decode_step_mask``).
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

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, inputs: MLLMInputs, settings: GenerationSettings, engine: str = "loop") -> Generation:
        """Greedy or sampled completions for a left-padded prompt batch, keeping the KV cache.

        engine "loop": our own decoding loop with explicit 3D positions, each step by
        ``fast_decode.LeanDecoder`` where it applies (the same arithmetic without
        transformers' per-layer machinery: most of a step's time for the CPU model), else by
        the transformers text model; "loop-hf": the same loop always through the
        transformers text model; "hf": transformers' ``generate``. Greedy results agree.
        Greedy decoding of one row with the lean step and ``settings.draft_tokens`` > 0 is
        speculative (``_generate_speculative``): the same tokens in fewer decoder steps.
        """
        if engine == "hf":
            return self._generate_hf(inputs, settings)
        if engine not in ("loop", "loop-hf"):
            raise ValueError(f"engine must be 'loop', 'loop-hf' or 'hf', got {engine!r}")
        lean = self.lean_decoder() if engine == "loop" else None
        one_greedy_row = not settings.do_sample and inputs.input_ids.shape[0] == 1 and settings.max_new_tokens > 0
        if lean is not None and settings.draft_tokens > 0 and one_greedy_row:
            return self._generate_speculative(inputs, settings, lean)
        hidden, cache, next_pos = self._prefill(inputs)
        mask = inputs.attention_mask
        batch = hidden.shape[0]
        finished = torch.zeros(batch, dtype=torch.bool, device=hidden.device)
        eos = torch.tensor(self.eos_ids, device=hidden.device)
        tokens: list[torch.Tensor] = []
        embed_layer = self.model.model.get_input_embeddings()
        prepared_mask = self.decode_step_mask(mask)
        key_mask = None if bool(mask.all()) else mask.bool()
        for step in range(settings.max_new_tokens):
            logits = self.model.lm_head(hidden[:, -1]).float()
            token = sample_next_token(logits, settings)
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            tokens.append(token)
            finished |= torch.isin(token, eos)
            if bool(finished.all()) or step == settings.max_new_tokens - 1:
                break  # the last token is not fed: the cache covers all but the last column
            if lean is not None:
                if key_mask is not None:
                    key_mask = torch.cat([key_mask, key_mask.new_ones((batch, 1))], 1)
                hidden = lean.step(embed_layer(token[:, None]), next_pos[0], cache, key_mask)
                next_pos = next_pos + 1
                continue
            if prepared_mask is None:
                mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=mask.device)], 1)
            hidden, cache = self.run_language_model(
                embed_layer(token[:, None]),
                next_pos,
                mask if prepared_mask is None else prepared_mask,
                cache=cache,
                use_cache=True,
            )
            next_pos = next_pos + 1
        generated = torch.stack(tokens, 1) if tokens else inputs.input_ids[:, :0]
        return self._finish(torch.cat([inputs.input_ids, generated], 1), inputs, cache)

    def _prefill(self, inputs: MLLMInputs):
        """Prompt through the decoder -> (last hidden (B, L, C), cache, position of the next token (3, B, 1))."""
        embeds = self.embed(inputs)
        mask = inputs.attention_mask
        pos = self.position_ids(inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw, mask)
        hidden, cache = self.run_language_model(embeds, pos, mask, use_cache=True)
        # text after the prompt continues from the last prompt position (all 3 axes agree on text)
        return hidden, cache, pos[:, :, -1:] + 1

    def _generate_speculative(self, inputs: MLLMInputs, settings: GenerationSettings, lean: LeanDecoder) -> Generation:
        """Greedy decoding of one row, checking drafted tokens (``speculative``) in each step.

        Each step feeds the last token plus up to ``draft_tokens`` drafted ones; the model's
        greedy token after each fed position decides how many drafted tokens stand (the
        longest prefix equal to them); the cache is cut back to the tokens that stand, so it
        ends as the plain loop leaves it: all but the last generated token.
        """
        hidden, cache, next_pos = self._prefill(inputs)
        embed_layer = self.model.model.get_input_embeddings()
        eos = set(self.eos_ids)
        index = SequenceIndex(self.drafter.max_n)
        index.extend(inputs.input_ids[0].tolist())
        limit = settings.max_new_tokens
        tokens = [int(self.model.lm_head(hidden[:, -1]).argmax(-1))]
        steps = drafted = accepted = 0
        while tokens[-1] not in eos and len(tokens) < limit:
            index.extend(tokens[-1:])
            draft = self.drafter.draft(index, min(settings.draft_tokens, limit - len(tokens) - 1))
            fed = torch.tensor([tokens[-1:] + draft], device=hidden.device)
            positions = next_pos[0] + torch.arange(fed.shape[1], device=hidden.device)
            hidden = lean.step(embed_layer(fed), positions, cache)
            greedy = self.model.lm_head(hidden[0]).argmax(-1).tolist()  # next token after each fed one
            n_ok = next((j for j, tok in enumerate(draft) if greedy[j] != tok), len(draft))
            new = draft[:n_ok] + [greedy[n_ok]]
            end = next((j + 1 for j, tok in enumerate(new) if tok in eos), len(new))
            new = new[: min(end, limit - len(tokens))]
            index.extend(new[:-1])
            tokens += new
            if len(new) < len(fed[0]):  # drop the fed tokens that do not stand (never crop(0): older
                cache.crop(len(new) - len(fed[0]))  # transformers read 0 as "keep no tokens")
            next_pos = next_pos + len(new)
            steps, drafted, accepted = steps + 1, drafted + len(draft), accepted + n_ok
        self.draft_stats.add(len(tokens), steps, drafted, accepted)
        self.drafter.learn(inputs.input_ids[0, -self.drafter.max_n :].tolist() + tokens)
        generated = torch.tensor([tokens], dtype=inputs.input_ids.dtype, device=inputs.input_ids.device)
        return self._finish(torch.cat([inputs.input_ids, generated], 1), inputs, cache)

    def lean_decoder(self) -> LeanDecoder | None:
        """The lean decode step for this text model, or None where it does not apply."""
        text_model = self.model.model.language_model
        if LeanDecoder.unsupported(text_model):  # checked per call: modules can be swapped (LoRA, tests)
            return None
        key = (id(text_model), *map(id, text_model.layers))
        cached = self.__dict__.get("_lean_cache")  # in __dict__: not a registered submodule
        if cached is None or cached[0] != key or cached[1].text_model is not text_model:
            self.__dict__["_lean_cache"] = cached = (key, LeanDecoder(text_model))
        return cached[1]

    def decode_step_mask(self, attention_mask: torch.Tensor) -> dict | None:
        """The mask mapping of a one-token decode step when no prompt row is padded, else None.

        Without padding a new token attends to every cached position, so every layer's mask
        is None, which is what the text model would build itself (``create_causal_mask``
        skips the mask for one query without padding); handing it over prepared saves that
        construction on every token (~0.5 ms on the CPU, ~10% of a lens-tiny decode step).
        With padding, or sliding-window layers, the text model builds the mask as before.
        """
        layer_types = set(getattr(self.model.model.language_model.config, "layer_types", None) or ())
        if layer_types != {"full_attention"} or not bool(attention_mask.all()):
            return None
        return {"full_attention": None}

    def _generate_hf(self, inputs: MLLMInputs, settings: GenerationSettings) -> Generation:
        self.model.model.rope_deltas = None  # cached state from an earlier call would shift positions
        kwargs = dict(do_sample=settings.do_sample)
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.model.generate(
            **inputs.hf_kwargs(self.dtype),
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            use_cache=True,
            return_dict_in_generate=True,
            **kwargs,
        )
        self.model.model.rope_deltas = None
        cache = out.get("cache") if hasattr(out, "get") else None
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        return self._finish(out.sequences, inputs, cache)

    def _finish(self, sequences: torch.Tensor, inputs: MLLMInputs, cache) -> Generation:
        """Cut each row at its first EOS (inclusive) and build the full attention mask."""
        prompt_len = inputs.input_ids.shape[1]
        gen = sequences[:, prompt_len:]
        gen_mask = torch.ones_like(gen)
        completion_ids: list[list[int]] = []
        for i in range(gen.shape[0]):
            row = gen[i].tolist()
            end = next((j + 1 for j, t in enumerate(row) if t in self.eos_ids), len(row))
            gen_mask[i, end:] = 0
            completion_ids.append(row[:end])
        return Generation(
            sequences=sequences,
            attention_mask=torch.cat([inputs.attention_mask, gen_mask.to(inputs.attention_mask)], dim=1),
            completion_ids=completion_ids,
            texts=[self.decode_completion(c) for c in completion_ids],
            cache=cache,
            prompt_length=prompt_len,
        )


@dataclass
class DraftStats:
    """Counts of speculative decoding since the model was loaded (``MLLM.draft_stats``)."""

    generations: int = 0
    tokens: int = 0
    steps: int = 0
    drafted: int = 0
    accepted: int = 0

    def add(self, tokens: int, steps: int, drafted: int, accepted: int) -> None:
        self.generations += 1
        self.tokens += tokens
        self.steps += steps
        self.drafted += drafted
        self.accepted += accepted

    @property
    def tokens_per_step(self) -> float:
        return (self.tokens - self.generations) / self.steps if self.steps else 0.0


def sample_next_token(logits: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids: argmax, or temperature -> top-k -> top-p sampling."""
    if not settings.do_sample:
        return logits.argmax(-1)
    logits = logits / max(settings.temperature, 1e-5)
    if settings.top_k and settings.top_k < logits.shape[-1]:
        kth = torch.topk(logits, settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove_sorted = cumulative <= 1 - settings.top_p
        remove_sorted[:, -1] = False  # always keep the most likely token
        remove = remove_sorted.scatter(1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1).squeeze(-1)


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
