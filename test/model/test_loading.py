"""Presets, the released-LENS directory loader and component loading (official formats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lens_ros.model.context_module import ContextModule, ContextModuleConfig
from lens_ros.model.types import ModelFileError


def test_presets_are_shipped():
    from lens_ros.model.presets import get_preset, list_presets

    assert {"lens-tiny", "lens-3b-sam2-l", "lens-3b-sam-h"} <= set(list_presets())
    assert get_preset("lens-3b-sam2-l").kind == "lens_release"
    assert get_preset("lens-3b-sam-h").data["segmenter"]["size"] == "vit_h"
    assert get_preset("lens-tiny").kind == "bundle"


def test_context_module_uses_official_names_and_shapes():
    ctx = ContextModule(ContextModuleConfig(hidden_size=64, num_queries=64, out_dim=32, connector_heads=4))
    names = set(ctx.state_dict())
    assert {
        "learnable_query",
        "conv_1d.weight",
        "conv_1d.bias",
        "connector.pos_embed",
        "connector.blocks.3.attn.qkv.weight",
        "connector.blocks.0.mlp.fc2.bias",
        "proj_to_sam.0.weight",
        "proj_to_sam.2.weight",
    } <= names
    assert ctx.learnable_query.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.count_nonzero(ctx.conv_1d.bias) == 0
    assert ctx(torch.randn(3, 64, 64)).shape == (3, 1, 32)
    with pytest.raises(ValueError, match="divide"):
        ContextModuleConfig(hidden_size=100, connector_heads=16)


def _write_release(model, tokenizer, out: Path) -> Path:
    """The tiny model in the official SAMR1 layout (transformers 4.5x key names, sharded)."""
    from safetensors.torch import save_file

    out.mkdir()
    state = {}
    for k, v in model.mllm.model.state_dict().items():
        if k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model.") :]
        elif k.startswith("model.visual."):
            k = "visual." + k[len("model.visual.") :]
        state[k] = v.clone().contiguous()
    state.update({k: v.clone().contiguous() for k, v in model.context.state_dict().items()})
    state.update({"sam." + k: v.clone().contiguous() for k, v in model.segmenter.sam.state_dict().items()})
    keys = sorted(state)
    shards = {k: f"model-0000{1 + (i % 2)}-of-00002.safetensors" for i, k in enumerate(keys)}
    for shard in set(shards.values()):
        save_file({k: state[k] for k in keys if shards[k] == shard}, str(out / shard))
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": shards}))
    config = model.mllm.model.config.to_dict()
    config.update(num_of_query=64, if_use_qwen_connector=True, architectures=["SAMR1ForConditionalGeneration_qwen2p5"])
    (out / "config.json").write_text(json.dumps(config))
    image = model.config.image
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "patch_size": image.patch_size,
                "merge_size": image.merge_size,
                "temporal_patch_size": image.temporal_patch_size,
                "min_pixels": image.min_pixels,
            }
        )
    )
    tokenizer.save_pretrained(str(out))
    return out


def test_lens_release_directory_loads_every_weight(tiny_sam2_bundle, tmp_path):
    from lens_ros.model.bundle import load_bundle
    from lens_ros.model.lens_release import load_lens_release
    from lens_ros.model.presets import load_model

    model = load_bundle(tiny_sam2_bundle)
    release = _write_release(model, model.tokenizer, tmp_path / "LENS")
    seg_cfg = model.config.segmenter
    loaded = load_lens_release(release, sam2_config=seg_cfg["config_file"], sam2_overrides=seg_cfg["overrides"])
    ref = model.state_dict()
    got = loaded.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert loaded.mllm.system_prompt == "You are a helpful assistant. "
    # a release whose shards lack the LENS heads is refused with the path
    index = json.loads((release / "model.safetensors.index.json").read_text())
    assert any(k.startswith("sam.") for k in index["weight_map"])
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "missing_release")


def test_components_preset_loads_qwen_sam_and_context(tiny_model, tmp_path, monkeypatch):
    """lens-3b-sam-h's loading path, with tiny files in the official formats."""
    from safetensors.torch import save_file

    from lens_ros.model import presets
    from lens_ros.model.sam_backend import SAM_REGISTRY, SamConfig

    root = tmp_path / "models"
    qwen_dir = root / "Qwen2.5-VL-3B-Instruct"
    tiny_model.mllm.model.save_pretrained(str(qwen_dir))
    tiny_model.tokenizer.save_pretrained(str(qwen_dir))
    torch.save(tiny_model.segmenter.sam.state_dict(), root / "sam_vit_h_4b8939.pth")
    save_file(
        {k: v.contiguous() for k, v in tiny_model.context.state_dict().items()},
        str(root / "context_module.safetensors"),
    )
    # the registry's vit_h swapped for the tiny SAM's numbers, the rest is the real preset
    monkeypatch.setitem(SAM_REGISTRY, "vit_h", SamConfig.from_dict(tiny_model.config.segmenter))
    model = presets.load_model("lens-3b-sam-h", model_dir=root)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    (root / "context_module.safetensors").unlink()
    with pytest.raises(ModelFileError, match="context_module.safetensors"):
        presets.load_model("lens-3b-sam-h", model_dir=root)


def test_lens_release_with_official_sam2_memory_weights(tmp_path):
    """Released weights + the memory modules of an official SAM 2 checkpoint file."""
    from lens_ros.model.lens_release import load_lens_release
    from lens_ros.model.sam2_backend import MEMORY_MODULES
    from lens_ros.model.tiny import build_tiny_random_model

    model, tokenizer, config = build_tiny_random_model(seed=4, segmenter="sam2", sam2_memory=True)
    release = _write_release(model, tokenizer, tmp_path / "LENS")  # drops nothing: remove memory keys
    index_path = release / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    from safetensors.torch import load_file, save_file

    for shard in set(index["weight_map"].values()):
        tensors = load_file(str(release / shard))
        save_file(
            {k: v for k, v in tensors.items() if not k.startswith(tuple("sam." + m for m in MEMORY_MODULES))},
            str(release / shard),
        )
    index["weight_map"] = {
        k: v for k, v in index["weight_map"].items() if not k.startswith(tuple("sam." + m for m in MEMORY_MODULES))
    }
    index_path.write_text(json.dumps(index))
    official = tmp_path / "sam2_official.pt"
    torch.save({"model": model.segmenter.sam.state_dict()}, official)
    seg = config.segmenter
    loaded = load_lens_release(
        release, sam2_config=seg["config_file"], sam2_overrides=seg["overrides"], sam2_memory_checkpoint=official
    )
    assert loaded.segmenter.has_memory
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
