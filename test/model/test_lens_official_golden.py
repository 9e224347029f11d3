"""lens_ros reproduces hustvl/LENS's own inference on a tiny released checkpoint.

The fixture (test/fixtures/lens_official, written by tools/lens_golden/make_fixture.py) holds
a tiny random checkpoint in the release's format (the official ``SAMR1ForConditionalGeneration_qwen2p5``
saved by ``save_pretrained``, with a Qwen2.5-VL generation config), an image, and what the
official code produced under transformers 4.51.3 for three cases: a RefCOCO-style greedy
answer, the stage-1 teacher-forced forward, and a ReasonSeg CoT answer on the image resized
to a longest side of 640. lens_ros loads the checkpoint as a release and must give the same
prompt ids, answer tokens, query hidden states, prompt token and mask.
"""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lens_ros.model.decoding import GenerationSettings
from lens_ros.model.lens_release import load_lens_release
from lens_ros.model.pipeline import Pipeline, PipelineConfig

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lens_official"
CASES = json.loads((FIXTURE / "cases.json").read_text())
ATOL = 2e-4  # float32 on two torch/transformers versions


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> Path:
    """The checkpoint directory as released (the fixture keeps its safetensors xz-packed)."""
    out = tmp_path_factory.mktemp("lens_release")
    for f in (FIXTURE / "checkpoint").iterdir():
        if f.suffix == ".xz":
            (out / f.stem).write_bytes(lzma.decompress(f.read_bytes()))
        else:
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "expected.safetensors"))


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return np.array(Image.open(FIXTURE / "scene.png").convert("RGB"))


_MODELS: dict[tuple, object] = {}


def release_model(release_dir: Path, case: dict):
    """The fixture's release loaded as the matching preset would load it (one per setting)."""
    cot = case["template"] == "samr1_v4"
    longest = 640 if case["image_rule"] == "longest_640" else 0
    key = (cot, longest)
    if key not in _MODELS:
        _MODELS[key] = load_lens_release(
            release_dir,
            sam2_config=CASES["sam2"]["config_file"],
            sam2_overrides=tuple(CASES["sam2"]["overrides"]),
            cot=cot,
            image_longest_side=longest,
            sam_resize="cv2" if longest else "pil",  # evaluate_reasonseg.py / evaluate_res2.py
        )
    return _MODELS[key]


def official_mask(case: dict) -> np.ndarray:
    return np.array(Image.open(FIXTURE / case["mask_png"])) > 127


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def test_release_settings_come_from_the_checkpoint(release_dir):
    model = release_model(release_dir, CASES["cases"]["refcoco"])
    assert model.config.mask_pass == "rerun"
    assert model.config.question_final_period is False
    assert model.config.generation == {"repetition_penalty": 1.05}  # its generation_config.json
    assert model.decoder.repetition_penalty == 1.05
    assert model.config.max_new_tokens == 768


@pytest.mark.parametrize("name", ["refcoco", "cot"])
def test_official_answer_query_states_prompt_token_and_mask(release_dir, expected, scene, name):
    case = CASES["cases"][name]
    model = release_model(release_dir, case)
    inputs = model.prepare([scene], [case["expression"]])
    assert inputs.mllm.input_ids[0].tolist() == case["prompt_ids"], "prompt ids differ from the official prompt"
    assert inputs.mllm.image_grid_thw[0].tolist() == case["image_grid_thw"]

    # the official evaluation's generate(max_length=768): prompt + answer at most 768 tokens
    budget = case["max_length"] - len(case["prompt_ids"])
    gen = model.decoder.generate(inputs.mllm, GenerationSettings.greedy(budget))
    assert gen.completion_ids[0] == case["completion_ids"], (
        f"answer {gen.texts[0]!r} differs from the official {case['answer_text']!r}"
    )

    query_hidden = model.query_hidden(gen, inputs.mllm)
    want = expected[f"{name}.query_hidden"]
    torch.testing.assert_close(query_hidden[0], want, atol=ATOL, rtol=1e-3)
    token = model.prompt_tokens(query_hidden)
    torch.testing.assert_close(token[0].float(), expected[f"{name}.prompt_token"], atol=ATOL, rtol=1e-3)

    # the whole deployment path: Pipeline.segment's answer and mask
    pipe = Pipeline(model, config=PipelineConfig(max_new_tokens=budget, draft_tokens=0))
    result, _ = pipe.segment(scene, case["expression"])
    assert result.answer == model.mllm.decode_completion(case["completion_ids"])
    mask = result.masks[0] if result.masks.shape[0] else np.zeros(scene.shape[:2], bool)
    share = agreement(mask, official_mask(case))
    assert share >= 0.999, f"{name}: the mask agrees with the official one on {share:.4%} of the pixels"


def test_teacher_forced_forward_is_the_official_training_forward(release_dir, expected, scene):
    """Stage 1's forward on a release (prompt + ground-truth answer + queries, one pass)."""
    case = CASES["cases"]["forced"]
    model = release_model(release_dir, case)
    inputs = model.prepare([scene], [case["expression"]], completions=[case["forced_answer"]])
    assert inputs.mllm.input_ids[0].tolist() == case["prompt_ids"] + case["completion_ids"]
    with torch.no_grad():
        out = model(inputs)
    torch.testing.assert_close(out.query_hidden[0], expected["forced.query_hidden"], atol=ATOL, rtol=1e-3)
    torch.testing.assert_close(out.prompt_tokens[0].float(), expected["forced.prompt_token"], atol=ATOL, rtol=1e-3)
    mask = out.mask_logits[0][0].numpy() > 0
    share = agreement(mask, official_mask(case))
    assert share >= 0.999, f"the teacher-forced mask agrees with the official one on {share:.4%} of the pixels"


def test_the_cache_pass_is_not_what_the_release_was_trained_with(release_dir, expected, scene):
    """Keeps the fixture honest: the KV-cache pass (3D positions) gives other query states."""
    case = CASES["cases"]["refcoco"]
    model = release_model(release_dir, case)
    inputs = model.prepare([scene], [case["expression"]])
    gen = model.decoder.generate(inputs.mllm, GenerationSettings.greedy(len(case["completion_ids"])))
    cached = model.query_hidden_after_generation(gen, inputs.mllm)[0]
    want = expected["refcoco.query_hidden"]
    assert float((cached - want).norm() / want.norm()) > 0.1
