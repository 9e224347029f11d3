"""LENS-tiny's tokenizer and pre-training substitutes: format, packing, losses, resumable runs."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from lens_ros.model import prompts
from lens_ros.model.prompts import parse_answer
from lens_training.tiny.config import MLLM_IMAGE_HW, NUM_MAX, TinyMLLMConfig
from lens_training.tiny.tokenizer import build_tiny_tokenizer, phrase_tokens


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_tokenizer_round_trips_through_the_standard_api(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    text = prompts.render_chat(prompts.build_question("the second cube from the left", cot=True), num_image_tokens=4)
    assert loaded(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_numbers_and_chat_phrases_are_single_tokens(tokenizer):
    for n in (0, 7, 128, NUM_MAX):
        assert len(tokenizer(str(n), add_special_tokens=False)["input_ids"]) == 1
    for phrase in phrase_tokens():
        assert len(tokenizer(phrase, add_special_tokens=False)["input_ids"]) == 1, phrase
    unk = tokenizer.unk_token_id
    ids = tokenizer("the red cup left of the large blue ball", add_special_tokens=False)["input_ids"]
    assert unk not in ids


def test_decoded_answer_parses_to_the_same_box(tokenizer):
    answer = prompts.format_cot_answer("the target is the small red cube .", (12, 34, 56, 78))
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    parsed = parse_answer(tokenizer.decode(ids, skip_special_tokens=False))
    assert parsed.format_ok and parsed.box == (12.0, 34.0, 56.0, 78.0)
    assert parsed.think == "the target is the small red cube ."


def test_training_example_matches_inference_packing(tokenizer):
    from lens_training.tiny.mllm_data import make_example

    e = make_example(tokenizer, 3, "val")
    assert e.resized_hw == MLLM_IMAGE_HW
    n_tokens = MLLM_IMAGE_HW[0] * MLLM_IMAGE_HW[1] // 256
    image_pad = tokenizer.convert_tokens_to_ids(prompts.IMAGE_PAD)
    assert e.prompt_ids.count(image_pad) == n_tokens == len(e.labels["color"])
    assert e.pixel_values.shape == (n_tokens * 4, 5 * 64)
    x1, y1, x2, y2 = e.box
    assert 0 <= x1 < x2 <= MLLM_IMAGE_HW[1] and 0 <= y1 < y2 <= MLLM_IMAGE_HW[0]
    assert (e.labels["color"] > 0).any(), "some image tokens must lie on objects"


def test_sft_loss_backpropagates_into_vision_and_lm(tokenizer):
    from lens_ros.model.mllm import MLLM
    from lens_training.tiny.mllm_data import make_example
    from lens_training.tiny.model import AuxHeads, build_tiny_qwen
    from lens_training.tiny.pretrain_mllm import SFTLoss, tiny_image_config

    torch.manual_seed(0)
    cfg = TinyMLLMConfig(vision_depth=1, vision_hidden=32, text_hidden=64, text_layers=1, text_heads=2, text_kv_heads=1)
    qwen = build_tiny_qwen(tokenizer, cfg)
    mllm = MLLM(qwen, tokenizer, tiny_image_config(), cot=True)
    loss_fn = SFTLoss(mllm, AuxHeads(64), 1.0)
    loss, stats = loss_fn([make_example(tokenizer, s) for s in range(2)])
    loss.backward()
    assert torch.isfinite(loss) and {"lm", "aux_color", "aux_coord"} <= set(stats)
    assert qwen.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert qwen.lm_head.weight.grad.abs().sum() > 0


def test_soft_number_targets_peak_at_the_value():
    from lens_training.tiny.model import soft_number_targets

    t = soft_number_targets(torch.tensor([5, 0]), 20, 1.5)
    assert torch.allclose(t.sum(-1), torch.ones(2))
    assert t[0].argmax() == 5 and t[1].argmax() == 0


def test_sam_pretraining_resumes_where_it_stopped(tmp_path):
    from lens_training.tiny import pretrain_sam

    args = [
        "--out",
        str(tmp_path),
        "--minutes",
        "0.02",
        "--images-per-step",
        "1",
        "--prompts-per-image",
        "2",
        "--eval-images",
        "1",
        "--warmup-steps",
        "1",
    ]
    pretrain_sam.main(args)
    first = (tmp_path / "checkpoints" / "latest").read_text()
    pretrain_sam.main(args[:3] + ["0.04"] + args[4:])
    second = (tmp_path / "checkpoints" / "latest").read_text()
    assert int(second.split("-")[1]) > int(first.split("-")[1])
    assert (tmp_path / "sam.safetensors").is_file()


def test_time_budget_schedule_warms_up_then_decays():
    from lens_training.tiny.common import TimeBudgetSchedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = TimeBudgetSchedule(opt, budget_s=100.0, warmup_steps=2)
    s.tick()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    s.tick()
    s.elapsed = 100.0
    s.step_count = 10
    s._t0 = float("inf")  # freeze the clock for the check
    assert s.factor() == pytest.approx(0.1)
    state = s.state_dict()
    s2 = TimeBudgetSchedule(opt, 100.0, 2)
    s2.load_state_dict(state)
    assert s2.done and np.isclose(s2.elapsed, 100.0)


@pytest.mark.skipif(not hasattr(signal, "SIGCONT"), reason="no SIGCONT on this platform")
def test_time_spent_stopped_is_not_counted():
    """kill -STOP / kill -CONT of a long run must not advance its cosine curve."""
    from lens_training.tiny.common import TimeBudgetSchedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = TimeBudgetSchedule(opt, budget_s=100.0, warmup_steps=0)
    previous = signal.getsignal(signal.SIGCONT)
    try:
        s.exclude_stopped_time()
        s._t0 -= 50.0  # as if the process had been stopped for 50 s in the middle of a step
        os.kill(os.getpid(), signal.SIGCONT)  # what the shell sends on resume
        time.sleep(0.01)  # the handler runs in the main thread at the next bytecode
        s.tick()
        assert s.elapsed < 1.0
        s._t0 -= 50.0  # the same without the handler: counted
        signal.signal(signal.SIGCONT, previous)
        s.tick()
        assert s.elapsed >= 50.0
    finally:
        signal.signal(signal.SIGCONT, previous)
