"""Pipeline: (RGB image, instruction) -> SegmentationResult, ROS-free.

    pipe = Pipeline.from_pretrained("lens-tiny")          # or a bundle / LENS release dir
    result, state = pipe.segment(image, "the red mug")    # MLLM reasoning + context prompt + mask
    result, state = pipe.track(next_image, state)         # segmenter only, cached prompt

``segment``: MLLM generation, then the context pass (the queries continue the generation's
KV cache), the segmenter's image encoder and its decoder. Image embeddings are cached per
frame (content hash), so ``track`` on the frame just reasoned about costs only a decoder call.

``track``: re-uses the cached context prompt token and, optionally, the previous mask's
box as an extra box prompt; the MLLM is not run.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from lens_ros.model import prompts
from lens_ros.model.decoding import DraftStats, GenerationSettings
from lens_ros.model.lens import LensModel
from lens_ros.model.limits import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE
from lens_ros.model.presets import DEFAULT_PRESET, load_model, resolve_device, resolve_dtype
from lens_ros.model.segmenter import DecodeOutput, ImageEmbedding
from lens_ros.model.static_decode import resolve_decode
from lens_ros.model.types import BadInputError, LensError, SegmentationResult, Timings
from lens_ros.model.vision_input import check_rgb_image, scale_box
from lens_ros.regions import mask_box


@dataclass
class PipelineConfig:
    """Inference options.

    use_box_prompt: also give the segmenter the MLLM's parsed box (always on for a model
        trained so, ``LensConfig.box_prompt``; LENS uses the context
        prompt alone; when the answer has no box the context prompt is used alone anyway).
    track_with_previous_box: in ``track``, add the previous mask's box as a box prompt.
    embedding_cache_size: frames whose image embedding is kept.
    draft_tokens: speculative greedy decoding, up to this many drafted tokens checked per
        decoder step (``lens_ros.model.speculative``; same answer, fewer steps; 0: off).
    track_memory: with a SAM 2 segmenter that has its memory modules, ``track`` follows
        the object with SAM 2's video memory (conditioned on the reasoned frame's mask)
        instead of re-prompting each frame.
    decode: the MLLM's decode steps: "dynamic" (a growing KV cache), "static" (a
        preallocated one written in place), "graph" (static, each step replayed as a CUDA
        graph) or "auto" ("dynamic" until the graph is measured on a GPU; ``static_decode.resolve_decode``).
        The same answer either way.
    """

    max_new_tokens: int | None = None
    cot: bool | None = None
    use_box_prompt: bool = False
    track_with_previous_box: bool = True
    mask_threshold: float = 0.0
    embedding_cache_size: int = 2
    track_memory: bool = True
    draft_tokens: int = 6
    decode: str = "auto"

    def replace(self, **changes) -> PipelineConfig:
        return replace(self, **changes)


@dataclass
class TrackState:
    """What ``track`` needs from the last reasoning: the context prompt and the last box."""

    instruction: str
    prompt_tokens: torch.Tensor  # (1, 1, D)
    rationale: str = ""
    answer: str = ""
    last_box: np.ndarray | None = None  # xyxy, pixels of the image it came from
    last_hw: tuple[int, int] = (0, 0)
    frames_tracked: int = 0
    extras: dict = field(default_factory=dict)


def _frame_key(image: np.ndarray) -> str:
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()


def _check_image(image: np.ndarray) -> np.ndarray:
    image = check_rgb_image(image)
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise BadInputError(f"image {h}x{w} is too small (minimum side {MIN_IMAGE_SIDE} px)")
    if h * w > MAX_IMAGE_PIXELS:
        raise BadInputError(f"image {h}x{w} is too large (more than {MAX_IMAGE_PIXELS} pixels)")
    return image


class Pipeline:
    """Inference around a LensModel; see the module docstring."""

    def __init__(
        self,
        model: LensModel,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = "float32",
        segmenter_backend: str = "torch",
        config: PipelineConfig | None = None,
        onnx_dir: str | Path | None = None,
    ) -> None:
        self.device = resolve_device(device)
        # "auto"/None keeps the precision the model was loaded in (presets.resolve_dtype's choice)
        self.dtype = model.mllm.dtype if dtype in (None, "", "auto") else resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).cast(self.dtype).eval()
        self.config = config or PipelineConfig()
        resolve_decode(self.config.decode, self.device)  # a bad name fails here, not at the first instruction
        self.segmenter = self.model.segmenter
        if segmenter_backend == "onnx":
            from lens_ros.model.onnx_backend import OnnxSegmenter

            self.segmenter = OnnxSegmenter.from_segmenter(self.model.segmenter, onnx_dir, device=self.device)
        elif segmenter_backend != "torch":
            raise ValueError(f"segmenter_backend must be 'torch' or 'onnx', got {segmenter_backend!r}")
        self.segmenter_backend = segmenter_backend
        self._cache: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = DEFAULT_PRESET,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = "float32",
        segmenter_backend: str = "torch",
        model_dir: str | Path | None = None,
        config: PipelineConfig | None = None,
        onnx_dir: str | Path | None = None,
    ) -> Pipeline:
        """Load a preset name, bundle directory or LENS release directory (local files only).

        device: "cpu", "cuda", "cuda:N" or "auto" (``presets.resolve_device``: the preset's
        ``auto_device`` when it exists here); dtype: "float32", "bfloat16", "float16", or "auto"
        (``presets.resolve_dtype``: the preset's precision on CUDA, float32 on the CPU).
        """
        lens = load_model(model, model_dir=model_dir, device=device, dtype=dtype)  # decides "auto"
        return cls(
            lens,
            device=lens.mllm.device,
            dtype=dtype,
            segmenter_backend=segmenter_backend,
            config=config,
            onnx_dir=onnx_dir,
        )

    @property
    def draft_stats(self) -> DraftStats:
        """Speculative decoding's counters since the model was loaded."""
        return self.model.decoder.stats

    # -- image embeddings -------------------------------------------------------------------
    def encode_image(self, image: np.ndarray) -> tuple[ImageEmbedding, float]:
        """Cached segmenter embedding of a frame -> (embedding, encoder ms; 0 when cached)."""
        key = _frame_key(image)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key], 0.0
        start = time.perf_counter()
        emb = self.segmenter.encode(image)
        ms = (time.perf_counter() - start) * 1000
        self._store(key, emb)
        return emb, ms

    def _store(self, key: str, emb: ImageEmbedding) -> None:
        with self._lock:
            self._cache[key] = emb
            while len(self._cache) > max(1, self.config.embedding_cache_size):
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _out_of_memory(self, exc: BaseException) -> LensError:
        """Free what can be freed (cached embeddings, the allocator's cache) so the next call can run."""
        self.clear_cache()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return LensError(f"CUDA out of memory on {self.device} ({self.dtype}): {exc}")

    # -- full reasoning ---------------------------------------------------------------------
    @torch.no_grad()
    def segment(
        self, image: np.ndarray, instruction: str, on_rationale: Callable[[str], None] | None = None
    ) -> tuple[SegmentationResult, TrackState]:
        """Reason about ``image`` for ``instruction`` and segment the referred object.

        ``on_rationale``: called while the MLLM decodes with the rationale written so far
        (the ``<think>`` text; streaming to an operator), after every decoder step.
        """
        t_start = time.perf_counter()
        image = _check_image(image)
        expression = prompts.clean_instruction(instruction)
        timings = Timings()
        try:
            return self._segment(image, expression, timings, t_start, on_rationale)
        except torch.cuda.OutOfMemoryError as exc:
            raise self._out_of_memory(exc) from exc

    def _segment(self, image, expression, timings: Timings, t_start: float, on_rationale=None):
        model = self.model
        t0 = time.perf_counter()
        inputs = model.prepare([image], [expression], cot=self.config.cot, segmenter_inputs=False)
        timings.preprocess_ms = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        decode = resolve_decode(self.config.decode, self.device)
        settings = GenerationSettings(
            max_new_tokens=self.config.max_new_tokens or model.config.max_new_tokens,
            draft_tokens=self.config.draft_tokens,
            static_cache=decode != "dynamic",
            cuda_graph=decode == "graph",
        )
        on_tokens = None
        if on_rationale is not None:

            def on_tokens(ids: list[int]) -> None:
                on_rationale(prompts.partial_rationale(model.mllm.decode_completion(ids)))

        gen = model.decoder.generate(inputs.mllm, settings, on_tokens=on_tokens)
        timings.generate_ms = (time.perf_counter() - t0) * 1000
        timings.num_generated_tokens = len(gen.completion_ids[0])

        t0 = time.perf_counter()
        query_hidden = model.query_hidden(gen, inputs.mllm)
        prompt_tokens = model.prompt_tokens(query_hidden)
        timings.context_ms = (time.perf_counter() - t0) * 1000
        emb, timings.encoder_ms = self.encode_image(image)

        text = gen.texts[0]
        parsed = prompts.parse_answer(text)
        h, w = image.shape[:2]
        parsed_box = None
        if parsed.box is not None:
            parsed_box = np.array(scale_box(parsed.box, inputs.packed[0].resized_hw, (h, w)), dtype=np.float32)
        parse_error = ""
        if parsed.box is None:
            parse_error = f"{parsed.error}; mask from the context queries alone"
        with_box = self.config.use_box_prompt or self.model.config.box_prompt
        box_prompt = parsed_box if (with_box and parsed_box is not None) else None
        decoded = self._decode(emb, prompt_tokens, box_prompt, timings)
        result = self._result(decoded, expression, timings, fallback_box=parsed_box)
        result.rationale = parsed.think or (parsed.answer if parsed.box is None else "")
        result.answer = text
        result.parsed_box = parsed_box
        result.parse_error = parse_error
        timings.total_ms = (time.perf_counter() - t_start) * 1000
        state = TrackState(
            instruction=expression,
            prompt_tokens=prompt_tokens.detach(),
            rationale=result.rationale,
            answer=text,
            last_box=result.boxes[0].copy() if result.boxes.shape[0] else None,  # mask's, else MLLM's
            last_hw=(h, w),
        )
        memory = self._memory_tracker()
        if memory is not None:
            memory.start(emb, decoded.low_res_logits[:1, :1])
            state.extras["sam2_memory"] = memory
        return result, state

    def _memory_tracker(self):
        """A fresh SAM 2 memory tracker when the segmenter has memory modules, else None."""
        from lens_ros.model.sam2_backend import Sam2MemoryTracker, Sam2Segmenter

        seg = self.model.segmenter
        if self.config.track_memory and isinstance(seg, Sam2Segmenter) and seg.has_memory:
            return Sam2MemoryTracker(seg)
        return None

    def _decode(
        self, emb: ImageEmbedding, prompt_tokens: torch.Tensor, box: np.ndarray | None, timings: Timings
    ) -> DecodeOutput:
        t0 = time.perf_counter()
        boxes = None if box is None else torch.as_tensor(box, dtype=torch.float32, device=self.device)[None]
        out = self.segmenter.decode(emb, prompt_tokens=prompt_tokens, boxes=boxes)
        timings.decoder_ms = (time.perf_counter() - t0) * 1000
        return out

    def _result(
        self, out: DecodeOutput, label: str, timings: Timings, fallback_box: np.ndarray | None = None
    ) -> SegmentationResult:
        """Threshold the mask logits. An empty mask gives one object with the MLLM's box
        (``fallback_box``, score 0) when there is one, else zero objects."""
        logits = out.mask_logits[0, 0].float().cpu().numpy()
        score = float(out.iou_scores[0, 0].float().clamp(0, 1).cpu())
        mask = logits > self.config.mask_threshold
        mbox = mask_box(mask)
        if mbox is None and fallback_box is not None:
            return SegmentationResult(
                masks=mask[None],
                boxes=np.asarray(fallback_box, np.float32)[None],
                scores=np.zeros((1,), np.float32),
                labels=[label],
                timings=timings,
            )
        if mbox is None:
            h, w = mask.shape
            return SegmentationResult(
                masks=np.zeros((0, h, w), bool),
                boxes=np.zeros((0, 4), np.float32),
                scores=np.zeros((0,), np.float32),
                labels=[],
                timings=timings,
            )
        return SegmentationResult(
            masks=mask[None],
            boxes=mbox[None],
            scores=np.array([score], np.float32),
            labels=[label],
            timings=timings,
        )

    # -- tracking ---------------------------------------------------------------------------
    @torch.no_grad()
    def track(self, image: np.ndarray, state: TrackState) -> tuple[SegmentationResult, TrackState]:
        """Segment a new frame with the cached context prompt (no MLLM call)."""
        if not isinstance(state, TrackState):
            raise BadInputError("track needs the state returned by segment()")
        t_start = time.perf_counter()
        image = _check_image(image)
        h, w = image.shape[:2]
        timings = Timings()
        try:
            emb, timings.encoder_ms = self.encode_image(image)
            memory = state.extras.get("sam2_memory")
            if memory is not None:
                t0 = time.perf_counter()
                decoded = memory.step(emb)
                timings.decoder_ms = (time.perf_counter() - t0) * 1000
            else:
                box = None
                if self.config.track_with_previous_box and state.last_box is not None:
                    box = np.array(scale_box(tuple(state.last_box), state.last_hw, (h, w)), dtype=np.float32)
                tokens = state.prompt_tokens.to(device=self.device)
                decoded = self._decode(emb, tokens, box, timings)
            result = self._result(decoded, state.instruction, timings)
        except torch.cuda.OutOfMemoryError as exc:
            raise self._out_of_memory(exc) from exc
        result.tracked = True
        result.rationale = state.rationale
        result.answer = state.answer
        timings.total_ms = (time.perf_counter() - t_start) * 1000
        found = not result.empty
        new_box = result.boxes[0].copy() if found else state.last_box
        new_hw = (h, w) if found else state.last_hw
        return result, replace(state, last_box=new_box, last_hw=new_hw, frames_tracked=state.frames_tracked + 1)
