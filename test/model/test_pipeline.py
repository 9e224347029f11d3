"""Pipeline: segment, track without the MLLM, bad input, ONNX backend parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_ros.model.pipeline import Pipeline, PipelineConfig, TrackState
from lens_ros.model.types import BadInputError, ModelFileError


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return Pipeline(tiny_model, device="cpu", dtype="float32", config=PipelineConfig(max_new_tokens=12))


def test_segment_returns_masks_at_input_resolution(pipe, scene):
    result, state = pipe.segment(scene, "the red block")
    assert result.masks.shape[1:] == scene.shape[:2] and result.masks.dtype == bool
    assert result.boxes.shape == (result.masks.shape[0], 4)
    assert result.answer and not result.tracked
    assert result.timings.generate_ms > 0 and result.timings.total_ms > 0
    # a random model writes no box: the context queries alone made the mask, and it says so
    assert result.parsed_box is None and "context queries alone" in result.parse_error
    assert isinstance(state, TrackState) and state.prompt_tokens.shape == (1, 1, pipe.segmenter.prompt_dim)
    assert result.masks.shape[0] == 1 and result.masks[0].any(), "no mask from the context queries"
    emb = pipe.segmenter.encode(scene)
    threshold = pipe.config.mask_threshold

    def mask_of(tokens):
        return (pipe.segmenter.decode(emb, prompt_tokens=tokens).mask_logits[0, 0] > threshold).numpy()

    np.testing.assert_array_equal(result.masks[0], mask_of(state.prompt_tokens))
    assert (mask_of(torch.zeros_like(state.prompt_tokens)) != result.masks[0]).any(), "the mask ignores the prompt"


def test_track_does_not_call_the_mllm(pipe, scene, monkeypatch):
    _, state = pipe.segment(scene, "the red block")

    def forbidden(*args, **kwargs):
        raise AssertionError("track must not run the MLLM")

    monkeypatch.setattr(pipe.model.decoder, "generate", forbidden)
    monkeypatch.setattr(pipe.model.mllm, "run_language_model", forbidden)
    moved = np.roll(scene, 5, axis=1)
    result, state2 = pipe.track(moved, state)
    assert result.tracked and result.masks.shape[1:] == scene.shape[:2]
    assert result.timings.generate_ms == 0 and result.timings.encoder_ms > 0
    assert state2.frames_tracked == 1
    again, _ = pipe.track(moved, state2)  # same frame: embedding comes from the cache
    assert again.timings.encoder_ms == 0


def test_track_on_reasoned_frame_matches_segment_without_box(tiny_model, scene):
    pipe = Pipeline(tiny_model, config=PipelineConfig(max_new_tokens=6, track_with_previous_box=False))
    first, state = pipe.segment(scene, "the red block")
    tracked, _ = pipe.track(scene, state)
    np.testing.assert_array_equal(first.masks, tracked.masks)


@pytest.mark.parametrize(
    "image, instruction, message",
    [
        (np.zeros((60, 80), np.uint8), "cup", "HxWx3"),
        (np.zeros((60, 80, 3), np.float32), "cup", "uint8"),
        (np.zeros((2, 80, 3), np.uint8), "cup", "too small"),
        (np.zeros((60, 80, 3), np.uint8), "   ", "empty"),
        (np.zeros((60, 80, 3), np.uint8), "x" * 5000, "limit"),
    ],
)
def test_bad_input_is_a_clear_error(pipe, image, instruction, message):
    with pytest.raises(BadInputError, match=message):
        pipe.segment(image, instruction)


def test_track_needs_a_state(pipe, scene):
    with pytest.raises(BadInputError):
        pipe.track(scene, None)  # type: ignore[arg-type]


def test_missing_model_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="nowhere"):
        Pipeline.from_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(ModelFileError, match="unknown model preset"):
        Pipeline.from_pretrained("no-such-preset")
    with pytest.raises(ModelFileError, match="model_dir"):
        Pipeline.from_pretrained("lens-3b-sam2-l")


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_sam2_bundle"])
def test_onnx_segmenter_matches_torch(bundle, request, scene, tmp_path):
    from lens_ros.model.bundle import load_bundle
    from lens_ros.model.onnx_backend import OnnxSegmenter

    seg = load_bundle(request.getfixturevalue(bundle)).segmenter
    onnx = OnnxSegmenter.from_segmenter(seg, tmp_path / "onnx")
    ref_emb, emb = seg.encode(scene), onnx.encode(scene)
    for key in ref_emb.features:
        torch.testing.assert_close(emb.features[key], ref_emb.features[key], atol=1e-4, rtol=1e-4)
    tokens = torch.randn(1, 1, seg.prompt_dim)
    box = torch.tensor([[10.0, 12.0, 50.0, 40.0]])
    for kwargs in ({"prompt_tokens": tokens}, {"prompt_tokens": tokens, "boxes": box}):
        ref, out = seg.decode(ref_emb, **kwargs), onnx.decode(emb, **kwargs)
        torch.testing.assert_close(out.mask_logits, ref.mask_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.iou_scores, ref.iou_scores, atol=1e-4, rtol=1e-4)


def test_pipeline_with_onnx_backend(tiny_model, scene, tmp_path):
    torch_pipe = Pipeline(tiny_model, config=PipelineConfig(max_new_tokens=6))
    onnx_pipe = Pipeline(
        tiny_model, segmenter_backend="onnx", onnx_dir=tmp_path / "onnx", config=PipelineConfig(max_new_tokens=6)
    )
    from lens_ros.model.onnx_backend import DECODER_FILE, ENCODER_FILE, OnnxSegmenter

    segmenter = onnx_pipe.segmenter
    assert isinstance(segmenter, OnnxSegmenter), type(segmenter)
    assert (tmp_path / "onnx" / DECODER_FILE).is_file() and (tmp_path / "onnx" / ENCODER_FILE).is_file()
    segmenter.encoder, segmenter.decoder = CountedSession(segmenter.encoder), CountedSession(segmenter.decoder)
    a, _ = torch_pipe.segment(scene, "the red block")
    b, _ = onnx_pipe.segment(scene, "the red block")
    assert segmenter.encoder.runs == 1 and segmenter.decoder.runs == 1, "onnxruntime did not make the mask"
    assert b.masks.shape == a.masks.shape and a.masks.any()
    assert (a.masks != b.masks).mean() < 1e-3


class CountedSession:
    """An onnxruntime InferenceSession that counts its runs."""

    def __init__(self, session):
        self.session, self.runs = session, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.session.run(*args, **kwargs)


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_sam2_bundle"])
def test_bfloat16_pipeline_runs_with_float32_decoder(bundle, request, scene):
    """The GPU precision setup, checked on the CPU: bf16 MLLM/encoder, float32 decoder."""
    pipe = Pipeline.from_pretrained(
        request.getfixturevalue(bundle), dtype="bfloat16", config=PipelineConfig(max_new_tokens=4, use_box_prompt=True)
    )
    assert pipe.model.mllm.dtype == torch.bfloat16
    assert pipe.segmenter.encoder_dtype == torch.bfloat16 and pipe.segmenter.decoder_dtype == torch.float32
    result, state = pipe.segment(scene, "the red block")
    assert result.masks.shape[1:] == scene.shape[:2]
    tracked, _ = pipe.track(scene, state)
    assert tracked.masks.shape[1:] == scene.shape[:2]


def test_sam2_memory_tracking_without_mllm(tmp_path, scene, monkeypatch):
    from lens_ros.model.sam2_backend import Sam2MemoryTracker
    from lens_ros.model.tiny import build_tiny_random_bundle

    bundle = build_tiny_random_bundle(tmp_path / "mem", seed=2, segmenter="sam2", sam2_memory=True)
    pipe = Pipeline.from_pretrained(bundle, config=PipelineConfig(max_new_tokens=4))
    _, state = pipe.segment(scene, "the red block")
    memory = state.extras["sam2_memory"]
    assert isinstance(memory, Sam2MemoryTracker) and 0 in memory.output_dict["cond_frame_outputs"]
    monkeypatch.setattr(pipe.model.decoder, "generate", lambda *a, **k: pytest.fail("track ran the MLLM"))
    monkeypatch.setattr(pipe.model.segmenter.sam, "max_obj_ptrs_in_encoder", 2)  # fewer frames to fill it
    for shift in range(1, 10):
        result, state = pipe.track(np.roll(scene, shift, axis=1), state)
        assert result.tracked and result.masks.shape[1:] == scene.shape[:2]
    # the memory bank stays bounded on an endless stream
    keep = max(pipe.model.segmenter.sam.num_maskmem, pipe.model.segmenter.sam.max_obj_ptrs_in_encoder)
    assert len(memory.output_dict["non_cond_frame_outputs"]) <= keep


def test_auto_dtype_keeps_the_loaded_precision(tiny_bundle):
    pipe = Pipeline.from_pretrained(tiny_bundle, dtype="auto")
    assert pipe.dtype == torch.float32 and pipe.model.mllm.dtype == torch.float32


def test_empty_mask_reports_the_mllm_box(pipe, scene, monkeypatch):
    """mask threshold above every logit: no mask, the parsed box is the object's box."""
    from lens_ros.model import prompts

    monkeypatch.setattr(pipe.config, "mask_threshold", 1e9)
    monkeypatch.setattr(
        prompts, "parse_answer", lambda text: prompts.ParsedAnswer("", "[1,2,3,4]", (8.0, 6.0, 40.0, 30.0), False, "")
    )
    result, state = pipe.segment(scene, "the red block")
    assert result.empty and result.masks.shape == (1, *scene.shape[:2])
    assert result.parse_error == "" and result.scores.tolist() == [0.0]
    np.testing.assert_allclose(result.boxes[0], result.parsed_box)
    assert state.last_box is not None
