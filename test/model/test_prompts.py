"""prompts: chat rendering and answer parsing (valid, malformed, adversarial)."""

from __future__ import annotations

import time

import pytest

from lens_ros.model.prompts import (
    MAX_ANSWER_CHARS,
    build_question,
    clean_instruction,
    format_box_answer,
    format_cot_answer,
    parse_answer,
    render_chat,
)
from lens_ros.model.types import BadInputError


def test_render_chat_is_qwen_chat_format():
    text = render_chat(build_question("red mug"), num_image_tokens=3)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>"
        "Output the bounding box of the red mug in the image.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_cot_question_ends_with_period():
    assert build_question("x", cot=True).endswith("</answer>.")


def test_clean_instruction_strips_chat_tokens_and_bounds_length():
    assert clean_instruction("  the <|im_end|> blue\ncup ") == "the blue cup"
    with pytest.raises(BadInputError):
        clean_instruction("   ")
    with pytest.raises(BadInputError):
        clean_instruction("a" * 5000)
    with pytest.raises(BadInputError):
        clean_instruction(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text, box",
    [
        ("<think>two mugs</think><answer>[10,20,30,40]</answer>", (10, 20, 30, 40)),
        ('<think>a</think> <answer>{"bbox_2d": [1.5, 2, 3.25, 4]}</answer>', (1.5, 2, 3.25, 4)),
        ("<|object_ref_start|>mug<|object_ref_end|><|box_start|>(5,6),(70,80)<|box_end|><|im_end|>", (5, 6, 70, 80)),
        ("mug(5,6),(70,80)", (5, 6, 70, 80)),
        ("the box is (1, 2, 3, 4) then [5,6,7,8]", (1, 2, 3, 4)),
        ("first [9,9,20,20] and (1,2),(3,4)", (9, 9, 20, 20)),
    ],
)
def test_parse_valid_answers(text, box):
    parsed = parse_answer(text)
    assert parsed.box == box, parsed
    assert parsed.error == ""
    assert parsed.ok


def test_format_flag_and_parts():
    p = parse_answer("<think> reasoning </think>\n<answer>[1,2,3,4]</answer><|im_end|>")
    assert p.format_ok and p.think == "reasoning" and p.answer == "[1,2,3,4]"
    assert not parse_answer("<answer>[1,2,3,4]</answer>").format_ok
    assert not parse_answer("text <think>a</think><answer>[1,2,3,4]</answer>").format_ok


def test_teacher_forced_formats_parse_back():
    assert parse_answer(format_box_answer("cup", (1.4, 2.6, 30, 40))).box == (1, 3, 30, 40)
    p = parse_answer(format_cot_answer("the left one", (1, 2, 3, 4)))
    assert p.format_ok and p.box == (1, 2, 3, 4) and p.think == "the left one"


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("<think>hmm</think><answer></answer>", "empty"),
        ("I cannot see it", "no box"),
        ("[1,2,3]", "no box"),
        ("[1,2,3,4,5]", "no box"),
        ("[10,10,5,20]", "degenerate"),
        ("(a,b),(c,d)", "no box"),
        ("__import__('os').system('x') [1,2", "no box"),
    ],
)
def test_parse_malformed_answers_say_why(text, why):
    parsed = parse_answer(text)
    assert parsed.box is None
    assert why in parsed.error


def test_parse_adversarial_inputs_are_bounded_and_safe():
    start = time.perf_counter()
    for text in [
        "[" + "1," * 200000,
        "(" * 100000,
        "<think>" * 50000,
        "[1" + " " * 100000 + ",2,3,4]",
        "9" * 100000,
        "<answer>" + "(1," * 30000,
    ]:
        parsed = parse_answer(text)
        assert parsed.box is None
    assert time.perf_counter() - start < 2.0
    assert "cut" in parse_answer("x" * (MAX_ANSWER_CHARS + 10)).error
    assert parse_answer(None).error  # type: ignore[arg-type]
    assert parse_answer("[1e309,2,3,4]").box is None
