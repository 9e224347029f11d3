"""vision_input: the packing equals transformers' Qwen2VLImageProcessor, and is invertible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_ros.model.types import BadInputError
from lens_ros.model.vision_input import (
    coordinate_channels,
    num_image_tokens,
    pack_image,
    smart_resize,
    unpatchify,
)


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as ref

    for h, w in [(480, 640), (1080, 1920), (100, 3000), (57, 57), (2000, 1500), (28, 28)]:
        for max_pixels in (1_000_000, 28 * 28 * 1280, 128 * 128):
            assert smart_resize(h, w, 28, 56 * 56, max_pixels) == ref(h, w, 28, 56 * 56, max_pixels), (h, w)


def test_smart_resize_rejects_empty_and_extreme_aspect():
    with pytest.raises(BadInputError):
        smart_resize(0, 10)
    with pytest.raises(BadInputError):
        smart_resize(2, 1000)


@pytest.mark.parametrize("temporal", [2, 1])
def test_pack_image_equals_qwen_image_processor(temporal):
    from transformers import Qwen2VLImageProcessor

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(56, 84, 3), dtype=np.uint8)  # already a multiple of 28
    proc = Qwen2VLImageProcessor(
        patch_size=14, merge_size=2, temporal_patch_size=temporal, min_pixels=56 * 56, max_pixels=10**6
    )
    ref = proc(images=[image], return_tensors="pt")
    pv, thw, hw = pack_image(image, patch_size=14, merge_size=2, temporal_patch_size=temporal)
    assert hw == (56, 84)
    assert torch.equal(thw, ref["image_grid_thw"])
    assert pv.shape == ref["pixel_values"].shape
    torch.testing.assert_close(pv, ref["pixel_values"].float(), atol=1e-5, rtol=1e-5)
    assert num_image_tokens(thw, 2) == 2 * 3


def test_coordinate_channels_round_trip_through_packing():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    pv, thw, hw = pack_image(
        image, patch_size=8, merge_size=2, temporal_patch_size=1, coord_channels=True, resized_hw=(64, 96)
    )
    assert pv.shape == (8 * 12, 5 * 8 * 8)
    chw = unpatchify(pv.numpy(), tuple(thw[0].tolist()), channels=5, patch_size=8, merge_size=2, temporal_patch_size=1)
    np.testing.assert_array_equal(chw[3:], coordinate_channels(64, 96))
    assert chw[3].min() > -1 and chw[3].max() < 1
    assert chw[3, 0, 0] < 0 < chw[3, 0, -1]  # x grows to the right
    assert chw[4, 0, 0] < 0 < chw[4, -1, 0]  # y grows downwards
    rgb = chw[:3] * np.array([0.26862954, 0.26130258, 0.27577711], np.float32)[:, None, None]
    rgb += np.array([0.48145466, 0.4578275, 0.40821073], np.float32)[:, None, None]
    np.testing.assert_allclose(rgb.transpose(1, 2, 0) * 255, image, atol=1e-3)


def test_pack_image_rejects_bad_arrays():
    with pytest.raises(BadInputError):
        pack_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(BadInputError):
        pack_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(BadInputError):
        pack_image(np.zeros((0, 10, 3), np.uint8))


def test_image_config_from_qwen_preprocessor_files(tmp_path):
    import json

    from lens_ros.model.mllm import ImageConfig

    old = tmp_path / "old.json"
    old.write_text(
        json.dumps(
            {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 3136, "max_pixels": 12845056}
        )
    )
    new = tmp_path / "new.json"
    new.write_text(
        json.dumps(
            {
                "patch_size": 14,
                "merge_size": 2,
                "temporal_patch_size": 2,
                "size": {"shortest_edge": 3136, "longest_edge": 12845056},
            }
        )
    )
    for path in (old, new):
        cfg = ImageConfig.from_preprocessor_config(path)
        assert (cfg.patch_size, cfg.min_pixels, cfg.max_pixels) == (14, 3136, 1_000_000)
