"""What a released LENS checkpoint brings besides its weights, on tiny random models.

The mask pass (plain 1D positions over prompt + completion + queries, also in the training
forward), the question without an added period, the generation config's repetition penalty
in every decode path, the longest-side image rule and the answer budget of the released
presets. test_lens_official_golden.py checks the same against the official code's outputs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lens_ros.model import prompts
from lens_ros.model.decoding import GenerationSettings
from lens_ros.model.mllm import MLLMInputs, read_generation_config
from lens_ros.model.types import ModelFileError


def _image(h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def model(tiny_model):
    """A copy whose settings the tests change."""
    return copy.deepcopy(tiny_model)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_rerun_pass_reads_the_queries_with_plain_1d_positions(model):
    model.config.mask_pass = "rerun"
    inputs = model.prepare([_image()], ["the red mug"]).mllm
    gen = model.decoder.generate(inputs, GenerationSettings.greedy(10))
    got = model.query_hidden(gen, inputs)

    # reference: transformers' text model given 1D positions 0..L-1 (it uses them on all
    # three rotary axes), over the embedded prompt + completion + the queries, no cache
    seq = gen.sequences
    extra = seq.shape[1] - inputs.input_ids.shape[1]
    mm = torch.cat([inputs.mm_token_type_ids, inputs.mm_token_type_ids.new_zeros((1, extra))], 1)
    full = MLLMInputs(
        seq, gen.attention_mask, mm, torch.zeros_like(seq, dtype=torch.bool), inputs.pixel_values, inputs.image_grid_thw
    )
    with torch.no_grad():
        embeds = torch.cat([model.mllm.embed(full), model.context.queries(1)], 1)
        positions = torch.arange(embeds.shape[1])[None]
        out = model.mllm.model.model.language_model(inputs_embeds=embeds, position_ids=positions)
    q = model.num_queries
    torch.testing.assert_close(got, out.last_hidden_state[:, -q:], atol=1e-5, rtol=1e-4)
    cached = model.query_hidden_after_generation(gen, inputs)
    assert _relative(cached, got) > 1e-3, "the KV-cache pass (3D positions) should differ from the re-run"


@pytest.mark.parametrize("mask_pass", ["rerun", "cache"])
def test_training_forward_reads_the_queries_as_inference_does(model, mask_pass):
    """Fine-tuning trains the pass that deploys: the teacher-forced forward on a generated
    completion gives the query states inference reads after that generation."""
    model.config.mask_pass = mask_pass
    image = _image()
    inputs = model.prepare([image], ["the red mug"]).mllm
    gen = model.decoder.generate(inputs, GenerationSettings.greedy(10))
    at_inference = model.query_hidden(gen, inputs)
    forced = model.prepare([image], ["the red mug"], completions=[gen.completion_ids[0]])
    with torch.no_grad():
        trained = model(forced, compute_logprobs=False).query_hidden
    torch.testing.assert_close(trained, at_inference, atol=1e-5, rtol=1e-4)


def test_cot_question_gets_no_added_period_for_a_release(model):
    assert prompts.build_question("x", cot=True, final_period=False).endswith("</answer>")
    packed = model.mllm.pack(_image())
    trained_so = model.mllm.prompt_ids("the red mug", packed, cot=True)  # lens-tiny: with the period
    model.mllm.question_final_period = False
    release = model.mllm.prompt_ids("the red mug", packed, cot=True)
    (period,) = model.mllm.encode_text(".")
    i = next(j for j, (a, b) in enumerate(zip(trained_so, release, strict=False)) if a != b)
    assert trained_so[i] == period and trained_so[i + 1 :] == release[i:], "one token apart: the period"


def _decodes(model, inputs, n, **settings):
    """The same greedy request through every decode path."""
    loop = model.decoder.generate(inputs, GenerationSettings(max_new_tokens=n, **settings), engine="loop")
    loop_hf = model.decoder.generate(inputs, GenerationSettings(max_new_tokens=n, **settings), engine="loop-hf")
    hf = model.decoder.generate(inputs, GenerationSettings(max_new_tokens=n, **settings), engine="hf")
    model.decoder.drafter.learn(inputs.input_ids[0, -4:].tolist() + loop.completion_ids[0])  # drafts that stand
    spec = model.decoder.generate(inputs, GenerationSettings(max_new_tokens=n, draft_tokens=4, **settings))
    return loop, loop_hf, hf, spec


def test_generation_config_repetition_penalty_applies_in_every_decode_path(model):
    inputs = model.prepare([_image()], ["the blue cube left of the small ball"]).mllm
    n = 24
    plain = model.decoder.generate(inputs, GenerationSettings.greedy(n)).completion_ids[0]
    model.decoder.repetition_penalty = 1.5  # as Decoder reads it from generation_config.json
    loop, loop_hf, hf, spec = _decodes(model, inputs, n)
    assert loop.completion_ids[0] != plain, "a penalty of 1.5 should change this model's greedy answer"
    assert hf.completion_ids == loop.completion_ids, "the loop differs from transformers' generate"
    assert loop_hf.completion_ids == loop.completion_ids
    assert spec.completion_ids == loop.completion_ids
    assert model.decoder.stats.accepted > 0, "no drafted token was checked"
    off = model.decoder.generate(inputs, GenerationSettings(max_new_tokens=n, repetition_penalty=1.0))
    assert off.completion_ids[0] == plain  # the settings' own value wins


def test_sampling_sees_the_penalty_too(model):
    """A token already in the sequence becomes rarer under sampling, as in transformers."""
    from lens_ros.model.decoding import penalize_repetitions

    logits = torch.tensor([[2.0, 2.0, -1.0, 0.5]])
    out = penalize_repetitions(logits, torch.tensor([[0, 2, 0]]), 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, -2.0, 0.5]]))


def test_generation_config_file_is_read_and_checked(tmp_path):
    assert read_generation_config(tmp_path) == {}
    (tmp_path / "generation_config.json").write_text(
        '{"do_sample": true, "temperature": 1e-06, "repetition_penalty": 1.05, "eos_token_id": [1, 2]}'
    )
    assert read_generation_config(tmp_path) == {"repetition_penalty": 1.05}
    (tmp_path / "generation_config.json").write_text('{"no_repeat_ngram_size": 3}')
    with pytest.raises(ModelFileError, match="no_repeat_ngram_size"):
        read_generation_config(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"repetition_penalty": "x"}')
    with pytest.raises(ModelFileError, match="repetition_penalty"):
        read_generation_config(tmp_path)


def test_longest_side_rule_shrinks_the_image_before_smart_resize(model):
    from lens_ros.model import vision_input

    frame = _image(720, 1280)
    model.mllm.image_config.max_pixels = 1_000_000
    full = model.mllm.pack(frame)
    model.mllm.image_config.longest_side = 640
    shrunk = model.mllm.pack(frame)
    assert shrunk.num_tokens < full.num_tokens / 3
    # the same as packing the 640x360 picture LENS's resize_longest gives
    direct = model.mllm.pack(vision_input.resize_rgb(frame, 360, 640))
    assert shrunk.resized_hw == direct.resized_hw
    torch.testing.assert_close(shrunk.pixel_values, direct.pixel_values)


@pytest.mark.parametrize("name", ["lens-3b-sam2-l", "lens-3b-sam2-l-reasonseg", "lens-3b-sam2-l-reasonseg-cot"])
def test_released_presets(name):
    from lens_ros.model.presets import get_preset

    data = get_preset(name).data
    assert data["kind"] == "lens_release"
    assert data["max_new_tokens"] == 768
    reasonseg = "reasonseg" in name
    assert data["image_longest_side"] == (640 if reasonseg else 0)
    assert data["sam_resize"] == ("cv2" if reasonseg else "pil")
    assert data["cot"] == name.endswith("-cot")
