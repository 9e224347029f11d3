"""The lean decode step (lens_ros/model/fast_decode.py) against transformers' own step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lens_ros.model.decoding import Decoder, GenerationSettings
from lens_ros.model.fast_decode import LeanDecoder


def _images():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (56, 40, 3), dtype=np.uint8)]


def _prefill(mllm, inputs):
    embeds = mllm.embed(inputs)
    pos = mllm.position_ids(inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw, inputs.attention_mask)
    _, cache = mllm.run_language_model(embeds, pos, inputs.attention_mask, use_cache=True)
    return cache, pos[:, :, -1:] + 1


def _steps_both_ways(mllm, lean, inputs, n_steps: int = 4):
    """Feed the same tokens through the transformers text model and the lean step."""
    cache_ref, pos = _prefill(mllm, inputs)
    cache_lean = copy.deepcopy(cache_ref)
    mask = inputs.attention_mask
    key_mask = None if bool(mask.all()) else mask.bool()
    emb = mllm.model.model.get_input_embeddings()
    b = mask.shape[0]
    out = []
    for step in range(n_steps):
        tokens = torch.full((b, 1), 7 + step)
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype)], 1)
        ref, cache_ref = mllm.run_language_model(emb(tokens), pos, mask, cache=cache_ref, use_cache=True)
        if key_mask is not None:
            key_mask = torch.cat([key_mask, key_mask.new_ones((b, 1))], 1)
        got = lean.step(emb(tokens), pos[0], cache_lean, key_mask)
        out.append((ref, got))
        pos = pos + 1
    return out, cache_ref, cache_lean


@pytest.mark.parametrize("rows", [1, 2], ids=["one row", "left-padded batch"])
@pytest.mark.parametrize("fuse", [True, False], ids=["fused weights", "per-module weights"])
def test_lean_step_equals_the_transformers_step(tiny_model, rows, fuse):
    mllm = tiny_model.mllm
    text_model = mllm.model.model.language_model
    lean = LeanDecoder(text_model, fuse_max_bytes=1 << 30 if fuse else 0)
    assert (lean.fused is not None) == fuse
    exprs = ["red mug", "the blue cube left of the small ball"][:rows]
    inputs = tiny_model.prepare(_images()[:rows], exprs).mllm
    if rows == 2:
        assert not bool(inputs.attention_mask.all()), "the batch should be left-padded"
    with torch.no_grad():
        steps, cache_ref, cache_lean = _steps_both_ways(mllm, lean, inputs)
    for ref, got in steps:
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    # the cache the lean step leaves is the one the context pass continues
    for layer_ref, layer_lean in zip(cache_ref.layers, cache_lean.layers, strict=True):
        torch.testing.assert_close(layer_lean.keys, layer_ref.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer_lean.values, layer_ref.values, atol=1e-5, rtol=1e-4)


def test_fused_weights_follow_in_place_updates(tiny_model):
    """An optimizer step changes weights in place: the fused copies must not go stale."""
    mllm = copy.deepcopy(tiny_model.mllm)
    lean = LeanDecoder(mllm.model.model.language_model)
    inputs = tiny_model.prepare(_images()[:1], ["red mug"]).mllm
    with torch.no_grad():
        _steps_both_ways(mllm, lean, inputs, n_steps=1)  # builds the fused copies
        layer = mllm.model.model.language_model.layers[0]
        layer.self_attn.k_proj.weight.mul_(1.5)
        layer.mlp.up_proj.weight.add_(0.01)
        steps, _, _ = _steps_both_ways(mllm, lean, inputs, n_steps=2)
    for ref, got in steps:
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("batch", [1, 2])
def test_generation_engines_agree_and_the_cache_serves_the_context_pass(tiny_model, batch):
    inputs = tiny_model.prepare(_images()[:batch], ["red mug", "the blue cube left of the ball"][:batch])
    assert tiny_model.decoder.lean() is not None, "the tiny model should take the lean step"
    settings = GenerationSettings.greedy(12)
    lean = tiny_model.decoder.generate(inputs.mllm, settings, engine="loop")
    ref = tiny_model.decoder.generate(inputs.mllm, settings, engine="loop-hf")
    assert torch.equal(lean.sequences, ref.sequences) and lean.completion_ids == ref.completion_ids
    torch.testing.assert_close(
        tiny_model.query_hidden_after_generation(lean, inputs.mllm),
        tiny_model.query_hidden_after_generation(ref, inputs.mllm),
        atol=1e-5,
        rtol=1e-4,
    )


def test_the_lean_step_is_not_a_submodule(tiny_model):
    keys = set(tiny_model.state_dict())
    tiny_model.decoder.lean()
    assert set(tiny_model.state_dict()) == keys


def test_models_it_does_not_cover_keep_the_transformers_step(tiny_model):
    mllm = copy.deepcopy(tiny_model.mllm)
    text_model = mllm.model.model.language_model
    assert LeanDecoder.unsupported(text_model) == ""
    text_model.config.layer_types = ["sliding_attention"] * len(text_model.layers)
    assert "sliding_attention" in LeanDecoder.unsupported(text_model)
    with pytest.raises(ValueError, match="not applicable"):
        LeanDecoder(text_model)
    text_model.config.layer_types = ["full_attention"] * len(text_model.layers)
    text_model.layers[0].mlp.up_proj = torch.nn.Identity()
    assert "up_proj" in LeanDecoder.unsupported(text_model)
    decoder = Decoder(mllm)
    assert decoder.lean() is None
    with pytest.raises(ValueError, match="engine"):
        decoder.generate(tiny_model.prepare(_images()[:1], ["red mug"]).mllm, GenerationSettings.greedy(2), engine="x")


@pytest.mark.parametrize("rows", [1, 2], ids=["one row", "left-padded batch"])
def test_several_new_tokens_in_one_step_equal_the_transformers_text_model(tiny_model, rows):
    """Drafted tokens are checked in one step: each attends causally to the ones before it."""
    mllm = tiny_model.mllm
    lean = LeanDecoder(mllm.model.model.language_model)
    inputs = tiny_model.prepare(_images()[:rows], ["red mug", "the blue cube left of the small ball"][:rows]).mllm
    emb = mllm.model.model.get_input_embeddings()
    with torch.no_grad():
        cache_ref, pos = _prefill(mllm, inputs)
        cache_lean = copy.deepcopy(cache_ref)
        tokens = torch.tensor([[7, 9, 11, 13]] * rows)
        positions = pos + torch.arange(4)
        mask = torch.cat([inputs.attention_mask, torch.ones((rows, 4), dtype=inputs.attention_mask.dtype)], 1)
        ref, _ = mllm.run_language_model(emb(tokens), positions, mask, cache=cache_ref, use_cache=True)
        key_mask = None if rows == 1 else mask.bool()
        got = lean.step(emb(tokens), positions[0], cache_lean, key_mask)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    for layer_ref, layer_lean in zip(cache_ref.layers, cache_lean.layers, strict=True):
        torch.testing.assert_close(layer_lean.keys, layer_ref.keys, atol=1e-5, rtol=1e-4)
