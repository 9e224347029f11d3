"""Speculative greedy decoding with n-gram drafts (lens_ros/model/speculative.py, MLLM.generate)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lens_ros.model.decoding import GenerationSettings
from lens_ros.model.speculative import NgramDrafter, SequenceIndex


def test_sequence_index_gives_the_latest_continuation():
    index = SequenceIndex(max_n=2)
    index.extend([5, 6, 7, 5, 6, 8, 5])
    assert index.follower((5, 6)) == 8  # the later of "5 6 7" and "5 6 8"
    assert index.follower((5,)) == 6
    assert index.follower((8,)) == 5
    assert index.follower((9,)) is None


def test_drafts_take_the_longest_known_context_and_stop_where_unsure():
    drafter = NgramDrafter(max_n=2)
    for _ in range(3):
        drafter.learn([1, 2, 3, 4])
    drafter.learn([1, 2, 9, 9])

    def draft(tokens, k):
        index = SequenceIndex(2)
        index.extend(tokens)
        return drafter.draft(index, k)

    assert draft([0, 1, 2], 2) == [3, 4]  # "1 2" -> 3 in 3 of 4 answers; then "2 3" -> 4
    assert draft([6, 2, 5, 1, 2], 1) == [3]  # the answers' longer "1 2" beats the sequence's "2 -> 5"
    assert draft([0, 1, 2, 7, 1, 2], 1) == [7]  # equally long and the answers unsure (3 of 4): the sequence
    assert draft([2, 3, 8, 2, 3], 1) == [4]  # equally long and the answers sure (always 4): the answers
    assert draft([6, 2, 5, 8, 2], 3) == [3, 4]  # one-token repeats of the sequence ("2 -> 5") are no draft
    assert draft([42], 4) == []
    for follower in (6, 7, 8):
        drafter.learn([5, follower])
    assert draft([1, 5], 3) == []  # "5" -> 6, 7 or 8: unsure, so no draft at all


def test_the_history_is_bounded():
    drafter = NgramDrafter(max_n=2, max_contexts=10, max_followers=2)
    rng = np.random.default_rng(0)
    for _ in range(50):
        drafter.learn(rng.integers(0, 100, 30).tolist())
    assert len(drafter.history) <= 10
    assert all(len(f) <= 2 for f in drafter.history.values())
    assert drafter.learned_sequences == 50


def _inputs(model):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return model.prepare([image], ["the blue cube left of the small ball"]).mllm


@pytest.fixture
def model(tiny_model):
    """A copy: the tests prime and swap its drafter and its end tokens."""
    return copy.deepcopy(tiny_model)


@pytest.fixture
def decoder(model):
    return model.decoder


def _check_equal(model, decoder, inputs, plain, spec):
    assert spec.completion_ids == plain.completion_ids
    assert torch.equal(spec.sequences, plain.sequences)
    # the cache ends as the plain loop leaves it and serves the context pass the same way
    assert spec.cache.get_seq_length() == plain.cache.get_seq_length() == plain.sequences.shape[1] - 1
    torch.testing.assert_close(
        model.query_hidden_after_generation(spec, inputs),
        model.query_hidden_after_generation(plain, inputs),
        atol=1e-5,
        rtol=1e-4,
    )


@pytest.mark.parametrize("primed", ["right answer", "confidently wrong", "wrong answers", "nothing"])
def test_speculative_decoding_gives_the_plain_greedy_answer(model, decoder, primed):
    inputs = _inputs(model)
    n = 14
    plain = decoder.generate(inputs, GenerationSettings.greedy(n, draft_tokens=0))
    answer = plain.completion_ids[0]
    assert len(answer) == n, "the random model should not stop early here"
    decoder.drafter = NgramDrafter()  # (earlier tests may have taught the shared model's drafter)
    if primed == "right answer":
        decoder.drafter.learn(inputs.input_ids[0, -3:].tolist() + answer)
    elif primed == "confidently wrong":  # the right start, then a wrong turn learned 3 times: sure drafts
        vocab = model.mllm.model.config.text_config.vocab_size
        wrong = answer[:4] + [(t + 7) % vocab for t in answer[4:]]
        for _ in range(3):
            decoder.drafter.learn(inputs.input_ids[0, -3:].tolist() + wrong)
    elif primed == "wrong answers":  # five different answers: unsure, so hardly drafted
        rng = np.random.default_rng(1)
        for _ in range(5):
            decoder.drafter.learn(inputs.input_ids[0, -3:].tolist() + rng.integers(0, 50, n).tolist())
    before = copy.copy(decoder.stats)
    spec = decoder.generate(inputs, GenerationSettings.greedy(n, draft_tokens=4))
    _check_equal(model, decoder, inputs, plain, spec)
    steps = decoder.stats.steps - before.steps
    accepted = decoder.stats.accepted - before.accepted
    rejected = decoder.stats.drafted - before.drafted - accepted
    assert decoder.stats.generations == before.generations + 1
    if primed == "right answer":  # every draft stands: 13 further tokens in ceil(13 / 5) steps
        assert steps == 3 and accepted == n - 1 - steps and rejected == 0
    elif primed == "confidently wrong":  # the right start stands, the wrong turn is drafted and refused
        assert accepted >= 2 and rejected >= 1, (accepted, rejected)
    else:
        assert steps <= n - 1
    # and it learned this answer for the next time
    assert (
        decoder.drafter.learned_sequences
        == 1 + ({"right answer": 1, "confidently wrong": 3, "wrong answers": 5, "nothing": 0}[primed])
    )


@pytest.mark.parametrize("cut_at", [3, 6], ids=["end inside a draft", "end at a step's own token"])
def test_an_end_token_inside_the_drafted_tokens_ends_the_answer_there(model, decoder, cut_at):
    inputs = _inputs(model)
    free = decoder.generate(inputs, GenerationSettings.greedy(14)).completion_ids[0]
    decoder.mllm.eos_ids = [free[cut_at]]  # make a token the model produces an end token
    plain = decoder.generate(inputs, GenerationSettings.greedy(14))
    assert plain.completion_ids[0][-1] == free[cut_at] and len(plain.completion_ids[0]) <= cut_at + 1
    decoder.drafter = NgramDrafter()
    decoder.drafter.learn(inputs.input_ids[0, -3:].tolist() + free)  # drafts run past the end token
    spec = decoder.generate(inputs, GenerationSettings.greedy(14, draft_tokens=5))
    _check_equal(model, decoder, inputs, plain, spec)


@pytest.mark.parametrize("limit", [1, 2, 6])
def test_max_new_tokens_holds_with_drafts(model, decoder, limit):
    inputs = _inputs(model)
    free = decoder.generate(inputs, GenerationSettings.greedy(14)).completion_ids[0]
    decoder.drafter.learn(inputs.input_ids[0, -3:].tolist() + free)
    plain = decoder.generate(inputs, GenerationSettings.greedy(limit))
    spec = decoder.generate(inputs, GenerationSettings.greedy(limit, draft_tokens=8))
    assert len(spec.completion_ids[0]) == limit
    _check_equal(model, decoder, inputs, plain, spec)


def test_batches_and_sampling_decode_one_token_per_step(model, decoder):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    batch = model.prepare(images, ["red mug", "the blue cube"]).mllm
    generations, learned = decoder.stats.generations, decoder.drafter.learned_sequences
    decoder.generate(batch, GenerationSettings.greedy(5, draft_tokens=4))
    torch.manual_seed(0)
    decoder.generate(_inputs(model), GenerationSettings(max_new_tokens=5, do_sample=True, draft_tokens=4))
    assert (decoder.stats.generations, decoder.drafter.learned_sequences) == (generations, learned)


def test_a_saved_history_loads_back_and_bad_files_are_refused(tmp_path):
    from lens_ros.model.types import ModelFileError

    drafter = NgramDrafter(max_n=2)
    drafter.learn([1, 2, 3, 4, 2, 3, 5])
    path = drafter.save(tmp_path / "drafts.json")
    loaded = NgramDrafter.load(path, vocab_size=10)
    assert loaded.history == drafter.history and loaded.max_n == 2 and loaded.learned_sequences == 1
    index = SequenceIndex(2)
    index.extend([9, 2])
    assert loaded.draft(index, 2) == drafter.draft(index, 2) != []

    def refused(text: str, match: str, vocab: int = 10, **kwargs) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ModelFileError, match=match):
            NgramDrafter.load(bad, vocab_size=vocab, **kwargs)

    refused("{not json", "cannot read")
    refused('{"format": "other"}', "not a draft n-gram file")
    refused(path.read_text(), "outside the vocabulary", vocab=4)
    refused(path.read_text(), "at most 2 entries", max_contexts=2)
    refused('{"format": "lens_ros.draft_ngrams", "contexts": [[[1], "x"]]}', "malformed")
    refused('{"format": "lens_ros.draft_ngrams", "contexts": [[[1], [[2, 0]]]]}', "malformed")
    refused('{"format": "lens_ros.draft_ngrams", "contexts": [[[1, 2, 3, 4], [[2, 1]]]]}', "malformed")


def test_a_bundle_brings_its_draft_table(tiny_bundle, tmp_path):
    import shutil

    from lens_ros.model.bundle import DRAFTS_FILE, load_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert load_bundle(bundle).decoder.drafter.history == {}  # none shipped: starts empty
    drafter = NgramDrafter()
    drafter.learn([3, 4, 5, 6])
    drafter.save(bundle / DRAFTS_FILE)
    assert load_bundle(bundle).decoder.drafter.history == drafter.history


def test_no_new_tokens_asked_gives_none(model, decoder):
    out = decoder.generate(_inputs(model), GenerationSettings.greedy(0, draft_tokens=4))
    assert out.completion_ids == [[]]
