"""Bundles: bit-exact round trip and clear errors for bad files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lens_ros.model.bundle import load_bundle, save_bundle
from lens_ros.model.types import ModelFileError


def test_round_trip_is_bit_exact(tiny_model, tmp_path):
    out = save_bundle(tmp_path / "copy", tiny_model)
    again = load_bundle(out)
    a, b = tiny_model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    text = "<|im_start|>user red mug [1,2,3,4]<|im_end|>"
    assert tiny_model.tokenizer(text)["input_ids"] == again.tokenizer(text)["input_ids"]
    assert again.config.to_dict() == tiny_model.config.to_dict()


def test_sam2_bundle_round_trip(tiny_sam2_bundle, tmp_path):
    model = load_bundle(tiny_sam2_bundle)
    again = load_bundle(save_bundle(tmp_path / "copy", model))
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_and_corrupt_files_name_the_path(tiny_bundle, tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_bundle(tmp_path / "nowhere")
    d = _copy(tiny_bundle, tmp_path / "no_weights")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="model.safetensors"):
        load_bundle(d)
    d = _copy(tiny_bundle, tmp_path / "corrupt")
    (d / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError, match="corrupt"):
        load_bundle(d)
    d = _copy(tiny_bundle, tmp_path / "bad_json")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="invalid JSON"):
        load_bundle(d)
    d = _copy(tiny_bundle, tmp_path / "no_tok")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match="tokenizer"):
        load_bundle(d)


def test_config_weight_mismatch_is_reported(tiny_bundle, tmp_path):
    d = _copy(tiny_bundle, tmp_path / "mismatch")
    meta = json.loads((d / "config.json").read_text())
    meta["lens"]["context"]["num_queries"] = 32
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not match"):
        load_bundle(d)


def test_tied_embeddings_round_trip(tmp_path):
    """Qwen2.5-VL-3B ties lm_head to the input embeddings; the bundle stores them once."""
    import copy

    from lens_ros.model.lens import LensModel
    from lens_ros.model.tiny import build_tiny_random_model

    _, tokenizer, config = build_tiny_random_model(seed=5)
    config = copy.deepcopy(config)
    config.qwen["tie_word_embeddings"] = True
    config.qwen["text_config"]["tie_word_embeddings"] = True
    model = LensModel(config, tokenizer).eval()
    qwen = model.mllm.model
    assert qwen.lm_head.weight.data_ptr() == qwen.model.get_input_embeddings().weight.data_ptr()
    again = load_bundle(save_bundle(tmp_path / "tied", model))
    q2 = again.mllm.model
    assert q2.lm_head.weight.data_ptr() == q2.model.get_input_embeddings().weight.data_ptr()
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
