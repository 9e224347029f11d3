"""The static-cache decode step (lens_ros/model/static_decode.py) against the dynamic lean step."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lens_ros.model.decoding import GenerationSettings
from lens_ros.model.fast_decode import LeanDecoder
from lens_ros.model.speculative import NgramDrafter
from lens_ros.model.static_decode import CAPACITY_STEP, StaticDecoder, resolve_decode

EXPRESSIONS = ["red mug", "the blue cube left of the small ball"]


def _images():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (56, 40, 3), dtype=np.uint8)]


@pytest.fixture
def model(tiny_model):
    """A copy that never stops early (no end tokens): every generation has exactly the asked length."""
    model = copy.deepcopy(tiny_model)
    model.mllm.eos_ids = []
    model.decoder.drafter = NgramDrafter()
    return model


def _settings(n: int, static: bool, draft_tokens: int = 0, graph: bool = False) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=n, draft_tokens=draft_tokens, static_cache=static, cuda_graph=graph)


def _check_same_generation(model, inputs, dynamic, static):
    assert static.completion_ids == dynamic.completion_ids, "the static cache must give the dynamic greedy tokens"
    assert torch.equal(static.sequences, dynamic.sequences)
    # the cache it hands over is a transformers cache of the same length, and the context pass agrees
    assert type(static.cache) is type(dynamic.cache)
    assert static.cache.get_seq_length() == dynamic.cache.get_seq_length() == dynamic.sequences.shape[1] - 1
    for layer_s, layer_d in zip(static.cache.layers, dynamic.cache.layers, strict=True):
        torch.testing.assert_close(layer_s.keys, layer_d.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer_s.values, layer_d.values, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        model.query_hidden_after_generation(static, inputs),
        model.query_hidden_after_generation(dynamic, inputs),
        atol=1e-5,
        rtol=1e-4,
    )


def _prefill(model, inputs):
    hidden, cache, next_pos = model.decoder._prefill(inputs)
    return hidden, cache, next_pos[0]


@pytest.mark.parametrize("rows", [1, 2], ids=["one row", "left-padded batch"])
def test_static_steps_give_the_lean_steps_logits(model, rows):
    """One, several (drafted) and cropped-then-rewritten tokens: the logits of both caches agree."""
    mllm = model.mllm
    lean = LeanDecoder(mllm.model.model.language_model)
    static = StaticDecoder(lean)
    inputs = model.prepare(_images()[:rows], EXPRESSIONS[:rows]).mllm
    emb = mllm.model.model.get_input_embeddings()
    lm_head = mllm.model.lm_head
    with torch.no_grad():
        _, dyn_cache, pos = _prefill(model, inputs)
        static_cache = static.begin(copy.deepcopy(dyn_cache), inputs.attention_mask, max_new_tokens=8)
        key_mask = inputs.attention_mask.bool()
        feeds = [[7], [9, 11, 13], [15], [17, 19]]
        crops = [0, -2, 0, 0]  # after the 3-token step, two of its tokens are dropped and rewritten
        for feed, crop in zip(feeds, crops, strict=True):
            t = len(feed)
            tokens = torch.tensor([feed] * rows)
            positions = pos + torch.arange(t)
            key_mask = torch.cat([key_mask, key_mask.new_ones((rows, t))], 1)
            want = lean.step(emb(tokens), positions, dyn_cache, key_mask)
            got = static.step(emb(tokens), positions, static_cache)
            torch.testing.assert_close(lm_head(got), lm_head(want), atol=1e-5, rtol=1e-4)
            assert static_cache.get_seq_length() == dyn_cache.get_seq_length()
            if crop:
                dyn_cache.crop(crop)
                static_cache.crop(crop)
                key_mask = key_mask[:, :crop]
            pos = pos + t + crop


@pytest.mark.parametrize("rows", [1, 2], ids=["one row", "left-padded batch"])
@pytest.mark.parametrize("n", [1, 6, 23])
def test_static_cache_gives_the_dynamic_greedy_tokens(model, rows, n):
    inputs = model.prepare(_images()[:rows], EXPRESSIONS[:rows]).mllm
    dynamic = model.decoder.generate(inputs, _settings(n, static=False))
    static = model.decoder.generate(inputs, _settings(n, static=True))
    assert isinstance(model.decoder.decode_step(_settings(n, static=True)), StaticDecoder)
    _check_same_generation(model, inputs, dynamic, static)


def test_buffers_are_written_in_place_and_reallocated_only_when_too_small(model):
    """A captured step replays fixed addresses: the cache buffers must never move during a generation."""
    inputs = model.prepare(_images()[:1], EXPRESSIONS[:1]).mllm
    static = model.decoder.decode_step(_settings(4, static=True))
    model.decoder.generate(inputs, _settings(4, static=True))
    cache = static._cache
    addresses = [t.data_ptr() for t in (*cache.keys, *cache.values, cache.valid, cache.length_t)]
    snapshot = [k.clone() for k in cache.keys]
    prompt = inputs.input_ids.shape[1]
    model.decoder.generate(inputs, _settings(CAPACITY_STEP - prompt, static=True))  # fills it up exactly
    assert static._cache is cache
    assert [t.data_ptr() for t in (*cache.keys, *cache.values, cache.valid, cache.length_t)] == addresses
    assert not all(torch.equal(a, b) for a, b in zip(snapshot, cache.keys, strict=True)), "written in place"
    longer = CAPACITY_STEP - prompt + 5
    dynamic = model.decoder.generate(inputs, _settings(longer, static=False))
    grown = model.decoder.generate(inputs, _settings(longer, static=True))
    assert static._cache is not cache and static._cache.capacity == 2 * CAPACITY_STEP
    _check_same_generation(model, inputs, dynamic, grown)


@pytest.mark.parametrize("primed", ["right answer", "confidently wrong"])
def test_speculative_decoding_on_the_static_cache_gives_the_plain_answer(model, primed):
    """Drafted tokens are checked in one static step; refused ones are cropped and their slots rewritten."""
    decoder = model.decoder
    inputs = model.prepare(_images()[:1], EXPRESSIONS[1:]).mllm
    n = 14
    plain = decoder.generate(inputs, _settings(n, static=False))
    answer = plain.completion_ids[0]
    context = inputs.input_ids[0, -3:].tolist()
    for static in (False, True):
        decoder.drafter = NgramDrafter()
        if primed == "right answer":
            decoder.drafter.learn(context + answer)
        else:  # the right start, then a wrong turn learned 3 times: sure drafts that are refused
            vocab = model.mllm.model.config.text_config.vocab_size
            for _ in range(3):
                decoder.drafter.learn(context + answer[:4] + [(t + 7) % vocab for t in answer[4:]])
        before = copy.copy(decoder.stats)
        spec = decoder.generate(inputs, _settings(n, static=static, draft_tokens=4))
        accepted = decoder.stats.accepted - before.accepted
        rejected = decoder.stats.drafted - before.drafted - accepted
        if primed == "right answer":
            assert accepted == n - 1 - (decoder.stats.steps - before.steps) and rejected == 0
        else:
            assert accepted >= 2 and rejected >= 1, (accepted, rejected)
        _check_same_generation(model, inputs, plain, spec)


def test_cuda_graph_without_cuda_runs_eagerly_says_so_and_answers_the_same(model, caplog):
    inputs = model.prepare(_images()[:2], EXPRESSIONS).mllm
    dynamic = model.decoder.generate(inputs, _settings(9, static=False))
    with caplog.at_level(logging.WARNING, logger="lens_ros.model.static_decode"):
        graphed = model.decoder.generate(inputs, _settings(9, static=True, graph=True))
        again = model.decoder.generate(inputs, _settings(9, static=True, graph=True))
    step = model.decoder.decode_step(_settings(9, static=True, graph=True))
    assert step.cuda_graph and step.captures == 0
    assert step.graph_status == "eager: CUDA graphs need a CUDA device, the model is on cpu"
    warnings = [r for r in caplog.records if "no CUDA graph" in r.getMessage()]
    assert len(warnings) == 1, "the fallback is logged once, not on every step"
    assert "CUDA graphs need a CUDA device" in warnings[0].getMessage()
    assert step.lean.fused is None, "a graph must read the modules' weights, not copies rebuilt in Python"
    _check_same_generation(model, inputs, dynamic, graphed)
    _check_same_generation(model, inputs, dynamic, again)


def test_resolve_decode_keeps_the_measured_path_by_default():
    assert resolve_decode("auto", "cpu") == "dynamic"
    assert resolve_decode("auto", torch.device("cuda")) == "dynamic"  # the graph is opt-in until measured on a GPU
    assert resolve_decode("graph", torch.device("cuda")) == "graph"
    assert resolve_decode("static", "cpu") == "static"
    with pytest.raises(ValueError, match="decode must be one of"):
        resolve_decode("fast", "cpu")


def test_the_static_cache_refuses_what_does_not_fit(model):
    inputs = model.prepare(_images()[:1], EXPRESSIONS[:1]).mllm
    static = model.decoder.decode_step(_settings(2, static=True))
    with torch.no_grad():
        _, dyn_cache, pos = _prefill(model, inputs)
        cache = static.begin(dyn_cache, inputs.attention_mask, max_new_tokens=2)
        with pytest.raises(ValueError, match="negative"):
            cache.crop(1)
        embeds = torch.zeros(1, cache.capacity - cache.length + 1, model.mllm.hidden_size)
        with pytest.raises(ValueError, match="do not fit"):
            static.step(embeds, pos + torch.arange(embeds.shape[1]), cache)


@pytest.mark.parametrize("decode", ["static", "graph"])
def test_pipeline_decode_option_gives_the_same_answer_and_mask(tiny_model, scene, decode):
    from lens_ros.model.pipeline import Pipeline, PipelineConfig

    results = {}
    for mode in ("dynamic", decode):
        pipe = Pipeline(copy.deepcopy(tiny_model), config=PipelineConfig(decode=mode, max_new_tokens=12))
        results[mode], _ = pipe.segment(scene, "the red square")
        used = pipe.model.decoder._static
        assert (mode in ("static", "graph")) == bool(used), f"decode={mode!r} should decide the decode step"
        if used:
            assert list(used) == [mode == "graph"]
    assert results[decode].answer == results["dynamic"].answer
    assert np.array_equal(results[decode].masks, results["dynamic"].masks)
    with pytest.raises(ValueError, match="decode must be one of"):
        Pipeline(copy.deepcopy(tiny_model), config=PipelineConfig(decode="fastest"))


class _KernelLog(TorchDispatchMode):
    """Every operator a piece of code runs, with the shapes of what it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        shapes = tuple(tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        self.calls.append((str(func), shapes))
        return out


@pytest.mark.parametrize("t", [1, 3])
def test_the_graph_step_runs_the_same_kernels_at_every_length_and_reads_nothing_back(model, t):
    """A CUDA graph replays the kernels, shapes and host values seen when it was captured: the step
    must run the same operators on the same shapes whatever the cache length, and never read a
    device value on the host (item/int/bool: aten._local_scalar_dense) nor make a shape from one."""
    inputs = model.prepare(_images()[:2], EXPRESSIONS).mllm
    static = model.decoder.decode_step(_settings(8, static=True, graph=True))
    emb = model.mllm.model.model.get_input_embeddings()
    logs = []
    with torch.no_grad():
        _, dyn_cache, pos = _prefill(model, inputs)
        cache = static.begin(dyn_cache, inputs.attention_mask, max_new_tokens=8)
        embeds = emb(torch.tensor([[7, 9, 11][:t]] * 2))
        length = cache.length
        for extra in (5, 0):  # two cache lengths, told by the device scalar alone (as a replay would)
            cache.length_t.fill_(length + extra)
            with _KernelLog() as log:
                static._forward(embeds, pos + extra + torch.arange(t), cache)
            logs.append(log.calls)
            if extra:
                written = cache.keys[0][:, :, length : length + extra + t].abs().sum(dim=(1, 3)) != 0
                assert not written[:, :extra].any() and written[:, extra:].all(), "writes must follow length_t"
    assert logs[0] == logs[1], "the step's operators or shapes depend on the cache length"
    host_reads = [name for name, _ in logs[0] if "_local_scalar_dense" in name or "nonzero" in name]
    assert not host_reads, f"the step reads device values on the host: {host_reads}"
