"""Fuzzing what reads untrusted text: MLLM answers, instructions, config files and overrides.

Only the project's own typed errors may escape; everything else is a bug.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from lens_ros.model.prompts import MAX_ANSWER_CHARS, find_box, parse_answer
from lens_ros.model.types import ConfigError, LensError

pieces = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "[",
        "]",
        "(",
        ")",
        ",",
        "-",
        ".",
        "1",
        "23",
        "456",
        "9999999999",
        "1e309",
        "nan",
        " ",
        "\n",
        "<|im_end|>",
        "box",
    ]
)
answers = st.one_of(st.text(max_size=400), st.lists(pieces, max_size=80).map("".join))


@settings(max_examples=400, deadline=None)
@given(answers)
def test_parse_answer_never_raises_and_boxes_are_sane(text):
    parsed = parse_answer(text)
    if parsed.box is None:
        assert parsed.error, "a missing box must say why"
    else:
        x1, y1, x2, y2 = parsed.box
        assert all(math.isfinite(v) for v in parsed.box) and x2 > x1 and y2 > y1
        assert parsed.error == ""
    assert len(parsed.answer) <= MAX_ANSWER_CHARS and len(parsed.think) <= MAX_ANSWER_CHARS


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 5000), st.integers(1, 5000), st.text(max_size=50))
def test_a_well_formed_box_is_always_found(x1, y1, w, h, noise):
    text = f"<think>{noise.replace('[', '').replace('(', '')}</think><answer>[{x1},{y1},{x1 + w},{y1 + h}]</answer>"
    assert parse_answer(text).box == (x1, y1, x1 + w, y1 + h)


def test_hostile_answers_stay_fast_and_bounded():
    import time

    for text in ("[" * 200_000, "(1," * 100_000, "<think>" * 50_000 + "</answer>", "9" * 1_000_000):
        start = time.perf_counter()
        parsed = parse_answer(text)
        assert time.perf_counter() - start < 5.0, "the parser must stay linear on hostile input"
        assert parsed.box is None
    assert find_box("x" * 10_000 + "[1,2,3,4]") == (1.0, 2.0, 3.0, 4.0)


keys = st.sampled_from(["lr", "batch_size", "max_steps", "seed", "nope", "", "=", "group_size", "beta"])
values = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=True),
    st.just("[1, 2"),
    st.just("{a: b}"),
    st.just("!!python/object:os.system ls"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=4))
def test_training_config_overrides_raise_only_config_errors(overrides):
    from lens_training.config import Stage2Config, load_config

    try:
        load_config(Stage2Config, None, overrides)
    except ConfigError as exc:
        assert str(exc)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_training_config_files_raise_only_config_errors(tmp_path_factory, text):
    from lens_training.config import Stage1Config, load_config

    path = tmp_path_factory.mktemp("cfg") / "stage1.yaml"
    path.write_text(text)
    try:
        load_config(Stage1Config, path, [])
    except ConfigError as exc:
        assert isinstance(exc, LensError) and str(exc)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_node_params_files_raise_only_config_errors(tmp_path_factory, text):
    from lens_ros.node_config import read_params_file

    path = tmp_path_factory.mktemp("params") / "lens_node.yaml"
    path.write_text(text)
    try:
        values = read_params_file(path)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(values, dict)
