"""Model-level benchmarks, in process (no ROS): parts, tracking and lens_ros vs a naive pipeline.

- parts: prefill ms, decode ms/token, context module, segmenter encoder and decoder,
  torch vs onnxruntime decoder, peak RSS (and CUDA max allocated on GPU);
- tracking: per-frame latency / sustained Hz of ``Pipeline.track`` at 640x480 and
  1280x720 vs re-reasoning (``Pipeline.segment``) on every frame;
- end_to_end: ``Pipeline.segment`` on a new frame with a new instruction vs the naive
  sequential pipeline: HF ``generate``, then segment_anything's ``SamPredictor.set_image``
  + ``predict`` with the parsed box, fp32, no caching, no overlap.

The frames come from the synthetic world so the model sees what it was trained on.
"""

from __future__ import annotations

import copy
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lens_ros.model import prompts
from lens_ros.model.decoding import GenerationSettings
from lens_ros.model.pipeline import Pipeline

INSTRUCTION = "the red cube"


def _frames(size: tuple[int, int], count: int) -> list[np.ndarray]:
    """Synthetic tabletop frames (W, H) = size; each a different scene."""
    from lens_ros.world.scene import generate_sample

    return [generate_sample(seed=10_000 + i, split="val", size=size).image for i in range(count)]


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def load_pipeline(model: str, backend: str = "torch") -> tuple[Pipeline, str, str]:
    """(pipeline, description, model argument that loads it elsewhere).

    A tiny random bundle stands in when the requested weights are not there, and the
    description says so.
    """
    try:
        return Pipeline.from_pretrained(model, segmenter_backend=backend), model, model
    except Exception as exc:  # noqa: BLE001 - report what was used instead
        from lens_ros.model.tiny import build_tiny_random_bundle

        bundle = str(build_tiny_random_bundle(Path(tempfile.mkdtemp()) / "tiny", seed=0))
        return Pipeline.from_pretrained(bundle, segmenter_backend=backend), f"tiny-random ({exc})", bundle


def naive_segment(pipe: Pipeline, image: np.ndarray, instruction: str, max_new_tokens: int):
    """The baseline: HF generate, then SamPredictor on the parsed box; nothing shared or cached."""
    from segment_anything import SamPredictor

    lens = pipe.model
    prepared = lens.prepare([image], [instruction], segmenter_inputs=False)  # SamPredictor resizes itself
    inputs = prepared.mllm
    lens.mllm.model.model.rope_deltas = None
    out = lens.mllm.model.generate(
        **inputs.hf_kwargs(),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=lens.mllm.eos_ids,
        pad_token_id=lens.mllm.pad_id,
    )
    lens.mllm.model.model.rope_deltas = None
    text = lens.mllm.decode_completion(out[0, inputs.input_ids.shape[1] :].tolist())
    parsed = prompts.parse_answer(text)
    predictor = SamPredictor(lens.segmenter.sam)
    predictor.set_image(image)
    h, w = image.shape[:2]
    box = None
    if parsed.box is not None:
        from lens_ros.model.vision_input import scale_box

        box = np.array(scale_box(parsed.box, prepared.packed[0].resized_hw, (h, w)))
    masks, _, _ = predictor.predict(box=box, multimask_output=False)
    return masks


def parts(pipe: Pipeline, frames: list[np.ndarray], repeats: int) -> list[dict]:
    lens = pipe.model
    image = frames[0]
    inputs = lens.prepare([image], [INSTRUCTION]).mllm
    n_tokens = 16

    def prefill():
        lens.mllm.model.model.rope_deltas = None
        lens.mllm.model(
            **inputs.hf_kwargs(),
            use_cache=True,
        )

    def generate_n():
        lens.mllm.model.model.rope_deltas = None
        lens.mllm.model.generate(
            **inputs.hf_kwargs(),
            max_new_tokens=n_tokens,
            min_new_tokens=n_tokens,
            do_sample=False,
            pad_token_id=lens.mllm.pad_id,
        )

    def loop_tokens(engine: str, n: int):
        eos, lens.mllm.eos_ids = lens.mllm.eos_ids, []  # exactly n tokens
        try:
            return lens.decoder.generate(inputs, GenerationSettings.greedy(n), engine=engine)
        finally:
            lens.mllm.eos_ids = eos

    with torch.no_grad():
        prefill_ms = _median_ms(prefill, repeats)
        gen_ms = _median_ms(generate_n, repeats)
        step_ms = {}
        for engine in ("loop", "loop-hf"):
            first = _median_ms(lambda engine=engine: loop_tokens(engine, 1), repeats)
            step_ms[engine] = (_median_ms(lambda engine=engine: loop_tokens(engine, n_tokens), repeats) - first) / (
                n_tokens - 1
            )
    # The other parts as the Pipeline times them (each call: new frame, fresh KV cache).
    timings = []
    for i in range(repeats):
        pipe.clear_cache()
        timings.append(pipe.segment(frames[i % len(frames)], INSTRUCTION)[0].timings)

    def med(field: str) -> float:
        return statistics.median(getattr(t, field) for t in timings)

    encoder_ms, decoder_ms = med("encoder_ms"), med("decoder_ms")
    rows = [
        {"part": "MLLM prefill (prompt + image)", "ms": prefill_ms},
        {"part": "MLLM decode per token, transformers generate", "ms": max(gen_ms - prefill_ms, 0.0) / n_tokens},
        {"part": "MLLM decode step, our loop on the transformers text model", "ms": step_ms["loop-hf"]},
        {
            "part": "MLLM decode step, our loop with the lean step (default; speed-up vs the line above)",
            "ms": step_ms["loop"],
            "speedup": step_ms["loop-hf"] / step_ms["loop"],
        },
        {
            "part": "Pipeline: generation (prefill + decode)",
            "ms": med("generate_ms"),
            "value": f"{med('num_generated_tokens'):.0f} tokens",
        },
        {"part": "Pipeline: context module (queries on KV cache + connector)", "ms": med("context_ms")},
        {"part": "Pipeline: segmenter image encoder (torch)", "ms": encoder_ms},
        {"part": "Pipeline: segmenter decoder (torch)", "ms": decoder_ms},
        {"part": "Pipeline: total segment()", "ms": med("total_ms")},
    ]
    with torch.no_grad():
        gen = lens.decoder.generate(inputs, GenerationSettings.greedy(n_tokens))
        tokens = lens.prompt_tokens(lens.query_hidden_after_generation(gen, inputs))
    try:
        from lens_ros.model.onnx_backend import OnnxSegmenter

        with tempfile.TemporaryDirectory() as onnx_dir:
            ort = OnnxSegmenter.from_segmenter(lens.segmenter, onnx_dir, device=pipe.device)
            ort_emb = ort.encode(image)
            ort_encoder_ms = _median_ms(lambda: ort.encode(image), repeats)
            ort_decoder_ms = _median_ms(lambda: ort.decode(ort_emb, prompt_tokens=tokens), repeats)
        rows += [
            {
                "part": "segmenter image encoder (onnxruntime; speed-up vs torch)",
                "ms": ort_encoder_ms,
                "speedup": encoder_ms / ort_encoder_ms,
            },
            {
                "part": "segmenter decoder (onnxruntime; speed-up vs torch)",
                "ms": ort_decoder_ms,
                "speedup": decoder_ms / ort_decoder_ms,
            },
        ]
    except Exception as exc:  # noqa: BLE001 - the table says why the ORT rows are missing
        rows.append({"part": f"onnxruntime: not measured ({type(exc).__name__}: {str(exc)[:120]})"})
    rows.append(
        {
            "part": "peak RSS of this process (MiB)",
            "ms": None,
            "value": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    if torch.cuda.is_available():
        rows.append({"part": "CUDA max allocated (MiB)", "value": torch.cuda.max_memory_allocated() / 2**20})
    return rows


def tracking(pipe: Pipeline, sizes: dict[str, tuple[int, int]], count: int) -> list[dict]:
    rows = []
    for name, size in sizes.items():
        frames = _frames(size, count)
        _, state = pipe.segment(frames[0], INSTRUCTION)
        start = time.perf_counter()
        per_frame = []
        for frame in frames[1:]:
            t0 = time.perf_counter()
            _, state = pipe.track(frame, state)
            per_frame.append((time.perf_counter() - t0) * 1000)
        track_hz = (len(frames) - 1) / (time.perf_counter() - start)
        start = time.perf_counter()
        reason_ms = []
        for frame in frames[1:]:
            t0 = time.perf_counter()
            pipe.segment(frame, INSTRUCTION)
            reason_ms.append((time.perf_counter() - t0) * 1000)
        reason_hz = (len(frames) - 1) / (time.perf_counter() - start)
        rows.append(
            {
                "size": name,
                "track_median_ms": statistics.median(per_frame),
                "track_hz": track_hz,
                "reason_every_frame_ms": statistics.median(reason_ms),
                "reason_every_frame_hz": reason_hz,
                "speedup": track_hz / reason_hz,
            }
        )
    return rows


def _scenes(split: str, count: int, first_seed: int) -> list[tuple[np.ndarray, str]]:
    """(640x480 frame, the world's referring expression for it): every kind of instruction."""
    from lens_ros.world.scene import generate_sample

    samples = (generate_sample(seed=first_seed + i, split=split, size=(640, 480)) for i in range(count))
    return [(s.image, s.expression) for s in samples]


def drafts_after_answers(pipe: Pipeline, count: int = 20):
    """The drafter of ``pipe``'s MLLM after it answered ``count`` other instructions (train-split
    scenes, seeds apart from every measured scene), as a copy: a node that has run a while."""
    for image, text in _scenes("train", count, 30_000):
        pipe.segment(image, text)
    return copy.deepcopy(pipe.model.decoder.drafter)


def end_to_end(pipe: Pipeline, count: int, shipped) -> list[dict]:
    """New frame + new instruction (each scene's own expression) -> mask, five ways.

    lens_ros's speculative decoding drafts from n-grams of earlier answers, so its state
    matters: none at all (a bundle without ``draft_ngrams.json``, just started); the bundle's
    table (the default just after start-up); the table plus 20 answers to other scenes'
    instructions (train split), as after a while of use. Each call starts from that state.
    ``shipped``: the drafter as the bundle loaded it (before any benchmark call taught it).
    """
    from lens_ros.model.speculative import NgramDrafter
    from lens_ros.node_config import NodeConfig
    from lens_ros.node_outputs import throttled_rationale  # the node's ~/rationale_stream rule

    max_new = pipe.config.max_new_tokens or pipe.model.config.max_new_tokens
    scenes = _scenes("val", count, 20_000)
    decoder = pipe.model.decoder
    decoder.drafter = copy.deepcopy(shipped)
    used = drafts_after_answers(pipe)
    default = "lens_ros Pipeline.segment, drafts from the bundle's n-grams (default after start-up)"
    streamed = "same, rationale streamed to a callback (as the node's ~/rationale_stream)"
    states = {  # name -> (draft_tokens, drafter, stream the rationale)
        "lens_ros Pipeline.segment, no drafts (draft_tokens 0)": (0, shipped, False),
        "lens_ros Pipeline.segment, drafts from no n-grams": (None, NgramDrafter(), False),
        default: (None, shipped, False),
        streamed: (None, shipped, True),
        "lens_ros Pipeline.segment, drafts after 20 more answers": (None, used, False),
    }
    times: dict[str, list[float]] = {"naive": [], **{name: [] for name in states}}
    sent: list[str] = []  # what the node would publish on ~/rationale_stream
    period = NodeConfig().rationale_stream_period_s
    default_drafts = pipe.config.draft_tokens
    for image, text in scenes:
        for name, (draft_tokens, drafter, stream) in states.items():
            pipe.clear_cache()  # a new frame: no cached embedding
            pipe.config.draft_tokens = default_drafts if draft_tokens is None else draft_tokens
            decoder.drafter = copy.deepcopy(drafter)
            t0 = time.perf_counter()
            pipe.segment(image, text, on_rationale=throttled_rationale(period, sent.append) if stream else None)
            times[name].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        with torch.no_grad():
            naive_segment(pipe, image, text, max_new)
        times["naive"].append((time.perf_counter() - t0) * 1000)
    pipe.config.draft_tokens = default_drafts
    decoder.drafter = used
    naive_med = statistics.median(times.pop("naive"))
    rows = [{"pipeline": "naive (HF generate -> SamPredictor, fp32, no cache/overlap)", "median_ms": naive_med}]
    for name, values in times.items():
        med = statistics.median(values)
        rows.append({"pipeline": name, "median_ms": med, "speedup_vs_naive": naive_med / med})
    overhead = statistics.median(a / b for a, b in zip(times[streamed], times[default], strict=True))
    rows.append({"pipeline": "rationale streaming: streamed / default, median of per-scene ratios", "value": overhead})
    return rows


def run(quick: bool, model: str = "lens-tiny") -> dict:
    torch.manual_seed(0)
    pipe, used, _ = load_pipeline(model)
    shipped_drafts = copy.deepcopy(pipe.model.decoder.drafter)
    repeats, count = (3, 4) if quick else (20, 30)
    frames = _frames((640, 480), count)
    for frame in frames[:2]:  # warm-up: first calls pay for allocations and lazy initialisation
        pipe.segment(frame, INSTRUCTION)
    part_rows = parts(pipe, frames, repeats)
    track_rows = tracking(pipe, {"640x480": (640, 480), "1280x720": (1280, 720)}, count + 1)
    e2e_rows = end_to_end(pipe, 4 if quick else 30, shipped_drafts)
    device = f"{pipe.device} {str(pipe.dtype).replace('torch.', '')}"
    return {
        "note": f"Model: {used}; device {device}; torch threads {torch.get_num_threads()}.",
        "sections": {
            "parts": {"columns": ["part", "ms", "speedup", "value"], "rows": part_rows},
            "tracking": {
                "columns": [
                    "size",
                    "track_median_ms",
                    "track_hz",
                    "reason_every_frame_ms",
                    "reason_every_frame_hz",
                    "speedup",
                ],
                "rows": track_rows,
            },
            "end_to_end (in process)": {
                "columns": ["pipeline", "median_ms", "speedup_vs_naive", "value"],
                "rows": e2e_rows,
            },
        },
    }
