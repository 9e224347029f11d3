"""Decoding: prompts -> completions for one ``MLLM`` (greedy, sampled, speculative, or transformers').

``Decoder`` is to ``MLLM`` what segment-anything's ``SamPredictor`` is to ``Sam``: the model
holds weights and the forward pieces (embedding, positions, decoder layers); the decoder
owns what a generation loop keeps between calls: the speculative drafter's n-grams of
earlier answers, its counters and the lean decode step built for the text model.

- ``Decoder.generate(inputs, settings, engine)``: engine "loop" is our loop with explicit
  3D positions, each step by ``fast_decode.LeanDecoder`` where it applies; "loop-hf" the
  same loop through the transformers text model; "hf" transformers' ``generate``. Greedy
  results agree. Greedy decoding of one row with ``settings.draft_tokens`` > 0 checks
  drafted tokens (``speculative``) in each step: the same tokens in fewer steps.
  ``settings.static_cache`` / ``cuda_graph`` run the loop's steps on a preallocated KV cache,
  optionally replayed as a CUDA graph (``static_decode.StaticDecoder``): the same tokens.
- The ``Generation`` it returns keeps the KV cache, which the context pass continues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lens_ros.model.fast_decode import LeanDecoder
from lens_ros.model.mllm import MLLM, MLLMInputs
from lens_ros.model.speculative import NgramDrafter, SequenceIndex
from lens_ros.model.static_decode import StaticDecoder


@dataclass
class GenerationSettings:
    """Decoding settings: greedy for deployment, sampling (LENS's RL values) for GRPO.

    draft_tokens: greedy decoding of one row checks up to this many drafted tokens per
    decoder step (``speculative``; the output is the same, 0 turns it off).
    static_cache: the loop engine's steps write a preallocated KV cache in place
    (``static_decode``); cuda_graph: that, with each step replayed as a CUDA graph on a
    CUDA device (elsewhere it runs eagerly and says so). Same tokens; the ``Generation``
    still holds a transformers cache.
    repetition_penalty: None takes the checkpoint's generation config (``Decoder``), as
    transformers' ``generate`` does; 1.0 turns it off.
    """

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 0.9
    top_p: float = 0.9
    top_k: int = 50
    draft_tokens: int = 0
    static_cache: bool = False
    cuda_graph: bool = False
    repetition_penalty: float | None = None

    @classmethod
    def greedy(cls, max_new_tokens: int = 256, draft_tokens: int = 0) -> GenerationSettings:
        return cls(max_new_tokens=max_new_tokens, draft_tokens=draft_tokens)

    @classmethod
    def sampling(cls, max_new_tokens: int = 256) -> GenerationSettings:
        return cls(max_new_tokens=max_new_tokens, do_sample=True)


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


class Decoder:
    """Generation for one ``MLLM``; keeps the drafter, its counters and the lean step between calls."""

    def __init__(self, mllm: MLLM, drafter: NgramDrafter | None = None, generation_config: dict | None = None) -> None:
        """``generation_config``: the checkpoint's decoding settings (``mllm.read_generation_config``)."""
        self.mllm = mllm
        self.drafter = drafter or NgramDrafter()  # n-grams of this model's earlier greedy answers
        self.stats = DraftStats()
        self._lean: tuple | None = None
        self._static: dict[bool, StaticDecoder] = {}  # by cuda_graph
        self.repetition_penalty = float((generation_config or {}).get("repetition_penalty", 1.0))

    def penalty(self, settings: GenerationSettings) -> float:
        """The repetition penalty of one call: the settings', else the checkpoint's."""
        return self.repetition_penalty if settings.repetition_penalty is None else float(settings.repetition_penalty)

    @torch.no_grad()
    def generate(
        self,
        inputs: MLLMInputs,
        settings: GenerationSettings,
        engine: str = "loop",
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> Generation:
        """Greedy or sampled completions for a left-padded prompt batch, keeping the KV cache.

        engine "loop": our own decoding loop with explicit 3D positions, each step by
        ``fast_decode.LeanDecoder`` where it applies (the same arithmetic without
        transformers' per-layer machinery: most of a step's time for the CPU model), else by
        the transformers text model; "loop-hf": the same loop always through the
        transformers text model; "hf": transformers' ``generate``. Greedy results agree.
        Greedy decoding of one row with the lean step and ``settings.draft_tokens`` > 0 is
        speculative (``_speculative``): the same tokens in fewer decoder steps.
        ``on_tokens``: called after each decoder step of the loop engines with the first row's
        tokens so far (streaming; "hf" calls nothing).
        """
        if engine == "hf":
            return self._hf(inputs, settings)
        penalty = self.penalty(settings)
        if engine not in ("loop", "loop-hf"):
            raise ValueError(f"engine must be 'loop', 'loop-hf' or 'hf', got {engine!r}")
        lean = self.decode_step(settings) if engine == "loop" else None
        one_greedy_row = not settings.do_sample and inputs.input_ids.shape[0] == 1 and settings.max_new_tokens > 0
        if lean is not None and settings.draft_tokens > 0 and one_greedy_row:
            return self._speculative(inputs, settings, lean, on_tokens)
        hidden, cache, next_pos = self._prefill(inputs)
        if lean is not None:
            cache = lean.begin(cache, inputs.attention_mask, settings.max_new_tokens)
        mask = inputs.attention_mask
        batch = hidden.shape[0]
        finished = torch.zeros(batch, dtype=torch.bool, device=hidden.device)
        eos = torch.tensor(self.mllm.eos_ids, device=hidden.device)
        tokens: list[torch.Tensor] = []
        embed_layer = self.mllm.model.model.get_input_embeddings()
        prepared_mask = self.step_mask(mask)
        key_mask = None if bool(mask.all()) else mask.bool()
        seen = inputs.input_ids  # the repetition penalty sees prompt and completion, as in transformers
        for step in range(settings.max_new_tokens):
            logits = penalize_repetitions(self.mllm.model.lm_head(hidden[:, -1]).float(), seen, penalty)
            token = sample_next_token(logits, settings)
            token = torch.where(finished, torch.full_like(token, self.mllm.pad_id), token)
            tokens.append(token)
            if penalty != 1.0:
                seen = torch.cat([seen, token[:, None]], 1)
            if on_tokens is not None:
                on_tokens([int(t[0]) for t in tokens])
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
            hidden, cache = self.mllm.run_language_model(
                embed_layer(token[:, None]),
                next_pos,
                mask if prepared_mask is None else prepared_mask,
                cache=cache,
                use_cache=True,
            )
            next_pos = next_pos + 1
        generated = torch.stack(tokens, 1) if tokens else inputs.input_ids[:, :0]
        if lean is not None:
            cache = lean.finish(cache)
        return self._finish(torch.cat([inputs.input_ids, generated], 1), inputs, cache)

    def _prefill(self, inputs: MLLMInputs):
        """Prompt through the decoder -> (last hidden (B, L, C), cache, position of the next token (3, B, 1))."""
        embeds = self.mllm.embed(inputs)
        mask = inputs.attention_mask
        pos = self.mllm.position_ids(inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw, mask)
        hidden, cache = self.mllm.run_language_model(embeds, pos, mask, use_cache=True)
        # text after the prompt continues from the last prompt position (all 3 axes agree on text)
        return hidden, cache, pos[:, :, -1:] + 1

    def _speculative(
        self,
        inputs: MLLMInputs,
        settings: GenerationSettings,
        lean: LeanDecoder | StaticDecoder,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> Generation:
        """Greedy decoding of one row, checking drafted tokens (``speculative``) in each step.

        Each step feeds the last token plus up to ``draft_tokens`` drafted ones; the model's
        greedy token after each fed position decides how many drafted tokens stand (the
        longest prefix equal to them); the cache is cut back to the tokens that stand, so it
        ends as the plain loop leaves it: all but the last generated token.
        """
        hidden, cache, next_pos = self._prefill(inputs)
        cache = lean.begin(cache, inputs.attention_mask, settings.max_new_tokens)
        embed_layer = self.mllm.model.model.get_input_embeddings()
        eos = set(self.mllm.eos_ids)
        index = SequenceIndex(self.drafter.max_n)
        index.extend(inputs.input_ids[0].tolist())
        limit = settings.max_new_tokens
        penalty = self.penalty(settings)
        prompt = inputs.input_ids[0].tolist()
        tokens = self._greedy_after(hidden[0, -1:], [prompt], penalty)
        steps = drafted = accepted = 0
        while tokens[-1] not in eos and len(tokens) < limit:
            index.extend(tokens[-1:])
            draft = self.drafter.draft(index, min(settings.draft_tokens, limit - len(tokens) - 1))
            fed = torch.tensor([tokens[-1:] + draft], device=hidden.device)
            positions = next_pos[0] + torch.arange(fed.shape[1], device=hidden.device)
            hidden = lean.step(embed_layer(fed), positions, cache)
            seen = [prompt + tokens + draft[:j] for j in range(fed.shape[1])]  # what each fed position follows
            greedy = self._greedy_after(hidden[0], seen, penalty)  # next token after each fed one
            n_ok = next((j for j, tok in enumerate(draft) if greedy[j] != tok), len(draft))
            new = draft[:n_ok] + [greedy[n_ok]]
            end = next((j + 1 for j, tok in enumerate(new) if tok in eos), len(new))
            new = new[: min(end, limit - len(tokens))]
            index.extend(new[:-1])
            tokens += new
            if on_tokens is not None:
                on_tokens(tokens)
            if len(new) < len(fed[0]):  # drop the fed tokens that do not stand (never crop(0): older
                cache.crop(len(new) - len(fed[0]))  # transformers read 0 as "keep no tokens")
            next_pos = next_pos + len(new)
            steps, drafted, accepted = steps + 1, drafted + len(draft), accepted + n_ok
        self.stats.add(len(tokens), steps, drafted, accepted)
        self.drafter.learn(inputs.input_ids[0, -self.drafter.max_n :].tolist() + tokens)
        generated = torch.tensor([tokens], dtype=inputs.input_ids.dtype, device=inputs.input_ids.device)
        return self._finish(torch.cat([inputs.input_ids, generated], 1), inputs, lean.finish(cache))

    def _greedy_after(self, hidden: torch.Tensor, seen: list[list[int]], penalty: float) -> list[int]:
        """Greedy next token for each row of ``hidden`` (N, C); row i follows the ids ``seen[i]``."""
        logits = self.mllm.model.lm_head(hidden)
        if penalty == 1.0:
            return logits.argmax(-1).tolist()
        logits = logits.float()
        rows = [
            penalize_repetitions(logits[i : i + 1], torch.tensor([ids], device=logits.device), penalty)
            for i, ids in enumerate(seen)
        ]
        return torch.cat(rows).argmax(-1).tolist()

    def lean(self) -> LeanDecoder | None:
        """The lean decode step for this text model, or None where it does not apply."""
        text_model = self.mllm.model.model.language_model
        if LeanDecoder.unsupported(text_model):  # checked per call: modules can be swapped (LoRA, tests)
            return None
        key = (id(text_model), *map(id, text_model.layers))
        if self._lean is None or self._lean[0] != key or self._lean[1].text_model is not text_model:
            self._lean = (key, LeanDecoder(text_model))
        return self._lean[1]

    def decode_step(self, settings: GenerationSettings) -> LeanDecoder | StaticDecoder | None:
        """The loop engine's step: the lean step, on a static cache when ``settings`` ask (None: transformers')."""
        lean = self.lean()
        if lean is None or not (settings.static_cache or settings.cuda_graph):
            return lean
        static = self._static.get(settings.cuda_graph)
        if static is None or static.source is not lean:
            static = self._static[settings.cuda_graph] = StaticDecoder(lean, cuda_graph=settings.cuda_graph)
        return static

    def step_mask(self, attention_mask: torch.Tensor) -> dict | None:
        """The mask mapping of a one-token decode step when no prompt row is padded, else None.

        Without padding a new token attends to every cached position, so every layer's mask
        is None, which is what the text model would build itself (``create_causal_mask``
        skips the mask for one query without padding); handing it over prepared saves that
        construction on every token (~0.5 ms on the CPU, ~10% of a lens-tiny decode step).
        With padding, or sliding-window layers, the text model builds the mask as before.
        """
        layer_types = set(getattr(self.mllm.model.model.language_model.config, "layer_types", None) or ())
        if layer_types != {"full_attention"} or not bool(attention_mask.all()):
            return None
        return {"full_attention": None}

    def _hf(self, inputs: MLLMInputs, settings: GenerationSettings) -> Generation:
        self.mllm.model.model.rope_deltas = None  # cached state from an earlier call would shift positions
        kwargs = dict(do_sample=settings.do_sample)
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.mllm.model.generate(
            **inputs.hf_kwargs(self.mllm.dtype),
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=self.mllm.eos_ids,
            pad_token_id=self.mllm.pad_id,
            repetition_penalty=self.penalty(settings),
            use_cache=True,
            return_dict_in_generate=True,
            **kwargs,
        )
        self.mllm.model.model.rope_deltas = None
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
            end = next((j + 1 for j, t in enumerate(row) if t in self.mllm.eos_ids), len(row))
            gen_mask[i, end:] = 0
            completion_ids.append(row[:end])
        return Generation(
            sequences=sequences,
            attention_mask=torch.cat([inputs.attention_mask, gen_mask.to(inputs.attention_mask)], dim=1),
            completion_ids=completion_ids,
            texts=[self.mllm.decode_completion(c) for c in completion_ids],
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


def penalize_repetitions(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' ``RepetitionPenaltyLogitsProcessor``: (B, V) logits, (B, L) ids already in
    each sequence; their logits are divided by ``penalty`` where positive, multiplied where negative."""
    if penalty == 1.0:
        return logits
    score = logits.gather(-1, seen)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(-1, seen, score)


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
