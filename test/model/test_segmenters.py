"""Segmenter backends: masks at input resolution, equal to the official predictors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_ros.model.sam_backend import SamConfig, SamSegmenter, build_sam_custom
from lens_ros.model.types import ModelFileError

TINY_SAM = SamConfig(
    image_size=256,
    encoder_embed_dim=96,
    encoder_depth=2,
    encoder_num_heads=4,
    global_attn_indexes=(1,),
    prompt_embed_dim=64,
    decoder_mlp_dim=256,
    decoder_num_heads=4,
    iou_head_hidden_dim=64,
    window_size=8,
)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sam_seg() -> SamSegmenter:
    torch.manual_seed(0)
    return SamSegmenter(TINY_SAM)


@pytest.fixture(scope="module")
def sam2_seg():
    from lens_ros.model.sam2_backend import SAM2_CONFIGS, TINY_SAM2_OVERRIDES, Sam2Config, Sam2Segmenter

    torch.manual_seed(0)
    return Sam2Segmenter(Sam2Config(SAM2_CONFIGS["sam2.1_hiera_t"], TINY_SAM2_OVERRIDES))


def test_sam_box_prompt_equals_sam_predictor(sam_seg, image):
    from segment_anything import SamPredictor

    box = np.array([10, 20, 100, 90], np.float32)
    ours = sam_seg.decode(sam_seg.encode(image), boxes=torch.from_numpy(box)[None])
    predictor = SamPredictor(sam_seg.sam)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
    np.testing.assert_allclose(ours.mask_logits[0].detach().numpy(), masks, atol=1e-5)
    np.testing.assert_allclose(ours.iou_scores[0].detach().numpy(), scores, atol=1e-6)


def test_sam2_box_prompt_equals_sam2_predictor(sam2_seg, image):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    box = np.array([10, 20, 100, 90], np.float32)
    ours = sam2_seg.decode(sam2_seg.encode(image), boxes=torch.from_numpy(box)[None])
    predictor = SAM2ImagePredictor(sam2_seg.sam)
    predictor._bb_feat_sizes = sam2_seg._feat_sizes  # the predictor assumes 1024 px
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
    np.testing.assert_allclose(ours.mask_logits[0].detach().numpy(), masks, atol=1e-5)


@pytest.mark.parametrize("backend", ["sam_seg", "sam2_seg"])
def test_prompt_tokens_give_masks_at_input_resolution(backend, image, request):
    seg = request.getfixturevalue(backend)
    emb = seg.encode(image)
    tokens = torch.randn(3, 1, seg.prompt_dim)
    out = seg.decode(emb, prompt_tokens=tokens)
    assert out.mask_logits.shape == (3, 1, 120, 200)
    assert out.iou_scores.shape == (3, 1)
    boxes = torch.tensor([[0.0, 0.0, 50.0, 60.0]]).repeat(3, 1)
    both = seg.decode(emb, prompt_tokens=tokens, boxes=boxes)
    assert both.mask_logits.shape == (3, 1, 120, 200)
    assert not torch.equal(both.mask_logits, out.mask_logits)
    with pytest.raises(ValueError):
        seg.decode(emb)


def test_build_sam_custom_registry_sizes_match_official_builder():
    from segment_anything.build_sam import build_sam_vit_b

    ours = build_sam_custom()  # ViT-B numbers
    ref = build_sam_vit_b()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_sam_checkpoint_round_trip_and_errors(sam_seg, tmp_path):
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam_seg.sam.state_dict(), path)
    other = SamSegmenter(TINY_SAM)
    other.load_checkpoint(path)
    for k, v in sam_seg.sam.state_dict().items():
        assert torch.equal(v, other.sam.state_dict()[k]), k
    with pytest.raises(ModelFileError, match="not found"):
        other.load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="bad.pth"):
        other.load_checkpoint(tmp_path / "bad.pth")
    wrong = SamSegmenter(SamConfig(**{**TINY_SAM.to_dict(), "encoder_embed_dim": 64}))
    with pytest.raises(ModelFileError, match="do not match"):
        wrong.load_checkpoint(path)
