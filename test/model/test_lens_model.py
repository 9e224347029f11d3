"""LensModel: where the query hidden states come from, and where gradients go."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_ros.model.decoding import GenerationSettings


def _images():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (60, 40, 3), dtype=np.uint8)]


def test_forward_shapes(tiny_model):
    images = _images()
    inputs = tiny_model.prepare(
        images,
        ["red mug", "the blue cube left of the ball"],
        ["<think>a</think><answer>[1,2,3,4]</answer>", "[5,6,7,8]"],
    )
    with torch.no_grad():
        out = tiny_model(inputs)
    b, length = inputs.mllm.input_ids.shape
    q, c = tiny_model.num_queries, tiny_model.mllm.hidden_size
    assert out.query_hidden.shape == (2, q, c)
    assert out.prompt_tokens.shape == (2, 1, tiny_model.segmenter.prompt_dim)
    assert [tuple(m.shape) for m in out.mask_logits] == [(1, 48, 64), (1, 60, 40)]
    assert out.token_logprobs.shape == (2, length)
    assert (out.token_logprobs[~out.completion_mask] == 0).all()
    assert (out.token_logprobs[out.completion_mask][1:] < 0).all()


def test_queries_follow_the_completion_and_do_not_change_it(tiny_model):
    image = _images()[:1]
    with torch.no_grad():
        a = tiny_model(tiny_model.prepare(image, ["red mug"], ["[1,2,3,4]"]))
        b = tiny_model(tiny_model.prepare(image, ["red mug"], ["[1,2,3,9]"]))
        # the queries attend to the completion ...
        assert not torch.allclose(a.query_hidden, b.query_hidden)
        # ... but nothing before them attends to the queries
        saved = tiny_model.context.learnable_query.data.clone()
        tiny_model.context.learnable_query.data.normal_()
        try:
            c = tiny_model(tiny_model.prepare(image, ["red mug"], ["[1,2,3,4]"]))
        finally:
            tiny_model.context.learnable_query.data.copy_(saved)
    torch.testing.assert_close(a.token_logprobs, c.token_logprobs)
    assert not torch.allclose(a.query_hidden, c.query_hidden)


def test_query_hidden_independent_of_left_padding(tiny_model):
    images = _images()
    completions = ["[1,2,3,4]", "<think>the blue one on the left</think><answer>[5,6,7,8]</answer>"]
    exprs = ["red mug", "the blue cube left of the ball"]
    with torch.no_grad():
        batch = tiny_model(tiny_model.prepare(images, exprs, completions))
        single = tiny_model(tiny_model.prepare(images[:1], exprs[:1], completions[:1]))
    torch.testing.assert_close(batch.query_hidden[0], single.query_hidden[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch.mask_logits[0], single.mask_logits[0], atol=1e-4, rtol=1e-4)


def test_kv_cache_continuation_equals_full_recompute(tiny_model):
    images = _images()
    inputs = tiny_model.prepare(images, ["red mug", "the blue cube left of the ball"])
    torch.manual_seed(0)
    gen = tiny_model.decoder.generate(inputs.mllm, GenerationSettings.sampling(10))
    length = gen.cache.get_seq_length()
    assert length == gen.sequences.shape[1] - 1
    cached = tiny_model.query_hidden_after_generation(gen, inputs.mllm)
    assert gen.cache.get_seq_length() == length  # the queries leave the cache as it was
    full = tiny_model.query_hidden_full(gen.sequences, gen.attention_mask, inputs.mllm)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tiny_model.query_hidden_after_generation(gen, inputs.mllm), cached)
    # and equals the teacher-forced forward given the same completion ids
    with torch.no_grad():
        tf = tiny_model(tiny_model.prepare(images[:1], ["red mug"], [gen.completion_ids[0]]))
    torch.testing.assert_close(cached[:1], tf.query_hidden, atol=1e-5, rtol=1e-4)


def test_greedy_generation_is_deterministic(tiny_model):
    inputs = tiny_model.prepare(_images()[:1], ["red mug"])
    a = tiny_model.decoder.generate(inputs.mllm, GenerationSettings.greedy(8))
    b = tiny_model.decoder.generate(inputs.mllm, GenerationSettings.greedy(8))
    assert a.completion_ids == b.completion_ids and a.texts == b.texts


def test_gradients_reach_queries_connector_and_mllm(tiny_model):
    inputs = tiny_model.prepare(_images(), ["red mug", "blue cube"], ["[1,2,3,4]", "[5,6,7,8]"])
    tiny_model.zero_grad(set_to_none=True)
    tiny_model.train()
    try:
        out = tiny_model(inputs)
        target = [torch.zeros_like(m) for m in out.mask_logits]
        loss = sum(
            torch.nn.functional.binary_cross_entropy_with_logits(m, t)
            for m, t in zip(out.mask_logits, target, strict=True)
        )
        (loss - out.token_logprobs.sum()).backward()
    finally:
        tiny_model.eval()
    ctx = tiny_model.context
    for name, p in [
        ("queries", ctx.learnable_query),
        ("connector", ctx.connector.blocks[0].attn.qkv.weight),
        ("pos_embed", ctx.connector.pos_embed),
        ("conv_1d", ctx.conv_1d.weight),
        ("proj_to_sam", ctx.proj_to_sam[2].weight),
        ("mllm layer", tiny_model.mllm.model.model.language_model.layers[0].mlp.up_proj.weight),
        ("mask decoder", next(tiny_model.segmenter.sam.mask_decoder.parameters())),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
    tiny_model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "expressions",
    [["red mug", "the blue cube left of the ball"], ["red mug"]],
    ids=["padded batch", "one row: prepared decode-step mask"],
)
def test_decoding_loop_equals_transformers_generate(tiny_model, expressions):
    inputs = tiny_model.prepare(_images()[: len(expressions)], expressions)
    prepared = tiny_model.decoder.step_mask(inputs.mllm.attention_mask)
    # padded rows need the model's own mask; one unpadded row takes the prepared (empty) one
    assert (prepared is None) == (len(expressions) > 1)
    ours = tiny_model.decoder.generate(inputs.mllm, GenerationSettings.greedy(12), engine="loop")
    ref = tiny_model.decoder.generate(inputs.mllm, GenerationSettings.greedy(12), engine="hf")
    assert torch.equal(ours.sequences, ref.sequences)
    assert ours.completion_ids == ref.completion_ids
    torch.testing.assert_close(
        tiny_model.query_hidden_after_generation(ours, inputs.mllm),
        tiny_model.query_hidden_after_generation(ref, inputs.mllm),
    )


def test_sampling_settings_restrict_the_candidates():
    from lens_ros.model.decoding import sample_next_token

    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0, -2.0]]).repeat(200, 1)
    torch.manual_seed(0)
    top2 = sample_next_token(logits, GenerationSettings(do_sample=True, temperature=1.0, top_k=2, top_p=1.0))
    assert set(top2.tolist()) == {0, 1}
    nucleus = sample_next_token(logits, GenerationSettings(do_sample=True, temperature=1.0, top_k=0, top_p=0.5))
    assert set(nucleus.tolist()) == {0}
    assert sample_next_token(logits[:1], GenerationSettings()).item() == 0
