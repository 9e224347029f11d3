"""Training examples of the tiny MLLM: world sample -> packed image, chat ids, labels.

The image goes through exactly the inference path: the frame is rendered at a 4:3 size
and packed by ``vision_input.pack_image`` (smart_resize to 160x128, bicubic, CLIP
normalisation, coordinate channels); the prompt is ``prompts.render_chat`` of the LENS CoT
question; the completion is ``prompts.format_cot_answer(rationale, box)`` with the box in
the MLLM's 160x128 pixel frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lens_ros.model import prompts, vision_input
from lens_ros.world import appearance
from lens_ros.world.language import rescale_boxes
from lens_ros.world.scene import Sample, generate_sample
from lens_ros.world.spec import COLORS, SHAPES, SIZES
from lens_training.tiny.config import (
    MLLM_FRAME_SIZE,
    MLLM_MAX_PIXELS,
    MLLM_MERGE,
    MLLM_MIN_PIXELS,
    MLLM_PATCH,
)

COLOR_IDS = {c: i + 1 for i, c in enumerate(COLORS)}
SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}
SIZE_IDS = {s: i + 1 for i, s in enumerate(SIZES)}
MIN_CELL_COVER = 0.2  # a token is labelled with an object covering this much of its cell
APPEARANCE_SHARE = 0.3  # train frames whose background, shading and lighting are randomised


@dataclass
class MLLMExample:
    """One example. pixel_values (N, 5*P*P); grid_thw (1, 3); prompt/completion ids;
    token labels: color/shape/size (T,) long, box (T, 4) float (MLLM pixels);
    box: (4,) int target box in MLLM pixels; meta: kind, template, split, seed, target name."""

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    resized_hw: tuple[int, int]
    prompt_ids: list[int]
    completion_ids: list[int]
    labels: dict[str, torch.Tensor]
    box: np.ndarray
    meta: dict


def pack(image: np.ndarray):
    return vision_input.pack_image(
        image,
        patch_size=MLLM_PATCH,
        merge_size=MLLM_MERGE,
        temporal_patch_size=1,
        coord_channels=True,
        min_pixels=MLLM_MIN_PIXELS,
        max_pixels=MLLM_MAX_PIXELS,
    )


def mllm_box(sample: Sample, resized_hw: tuple[int, int]) -> np.ndarray:
    """The target box in the MLLM's pixel frame, integer xyxy."""
    h, w = sample.image.shape[:2]
    box = vision_input.scale_box(tuple(sample.target_box), (h, w), resized_hw)
    box = np.round(np.asarray(box)).astype(np.int64)
    box[[0, 2]] = np.clip(box[[0, 2]], 0, resized_hw[1])
    box[[1, 3]] = np.clip(box[[1, 3]], 0, resized_hw[0])
    return box


def token_labels(sample: Sample, resized_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Per merged image token (raster order over the (h/16, w/16) grid): the object under it."""
    h, w = sample.image.shape[:2]
    cell = MLLM_PATCH * MLLM_MERGE
    gh, gw = resized_hw[0] // cell, resized_hw[1] // cell
    ids = np.full((h, w), -1, np.int64)
    for i, o in enumerate(sample.objects):
        ids[o.mask] = i
    ys = (np.arange(gh + 1) * h / gh).astype(int)
    xs = (np.arange(gw + 1) * w / gw).astype(int)
    n_obj = len(sample.objects)
    color = np.zeros(gh * gw, np.int64)
    shape = np.zeros(gh * gw, np.int64)
    size = np.zeros(gh * gw, np.int64)
    box = np.zeros((gh * gw, 4), np.float32)
    for r in range(gh):
        for c in range(gw):
            block = ids[ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
            counts = np.bincount(block[block >= 0], minlength=n_obj)
            if counts.size == 0 or counts.max() < MIN_CELL_COVER * block.size:
                continue
            o = sample.objects[int(counts.argmax())]
            k = r * gw + c
            color[k], shape[k], size[k] = COLOR_IDS[o.color], SHAPE_IDS[o.shape], SIZE_IDS[o.size]
            box[k] = vision_input.scale_box(tuple(o.box), (h, w), resized_hw)
    return {
        "color": torch.from_numpy(color),
        "shape": torch.from_numpy(shape),
        "size": torch.from_numpy(size),
        "box": torch.from_numpy(box),
    }


def mllm_rationale(rationale: str, image_hw: tuple[int, int], resized_hw: tuple[int, int]) -> str:
    """The rationale with its candidate boxes in the MLLM's pixel frame (where its answer box is)."""
    sy, sx = resized_hw[0] / image_hw[0], resized_hw[1] / image_hw[1]
    return rescale_boxes(rationale, sx, sy, limit=(resized_hw[1], resized_hw[0]))


def completion_text(sample: Sample, box: np.ndarray, resized_hw: tuple[int, int]) -> str:
    think = mllm_rationale(sample.rationale, sample.image.shape[:2], resized_hw)
    return prompts.format_cot_answer(think, tuple(float(v) for v in box)) + prompts.answer_suffix()


def make_example(tokenizer, seed: int, split: str = "train", kind: str | None = None) -> MLLMExample:
    sample = generate_sample(seed, split, size=MLLM_FRAME_SIZE, kind=kind)
    image = sample.image
    arng = np.random.default_rng([seed, 4242])
    if split == "train" and arng.random() < APPEARANCE_SHARE:
        image = appearance.randomize(image, sample.objects, arng)
    pv, thw, hw = pack(image)
    n_tokens = vision_input.num_image_tokens(thw, MLLM_MERGE)
    chat = prompts.render_chat(prompts.build_question(sample.expression, cot=True), num_image_tokens=n_tokens)
    box = mllm_box(sample, hw)
    enc = lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    meta = {
        "kind": sample.kind,
        "template": sample.template,
        "split": split,
        "seed": seed,
        "target": sample.target_object.name,
        "heldout_template": sample.heldout_template,
        "expression": sample.expression,
        "paraphrased": bool(sample.extra.get("paraphrased", False)),
    }
    return MLLMExample(
        pv, thw, hw, enc(chat), enc(completion_text(sample, box, hw)), token_labels(sample, hw), box, meta
    )


class ExampleBatches(torch.utils.data.Dataset):
    """Batch k = examples of seeds [offset + k*B, offset + (k+1)*B) (for a DataLoader worker)."""

    def __init__(self, tokenizer, batch_size: int, offset: int = 0, split: str = "train"):
        self.tokenizer, self.batch_size, self.offset, self.split = tokenizer, batch_size, offset, split

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, k: int) -> list[MLLMExample]:
        start = self.offset + k * self.batch_size
        return [make_example(self.tokenizer, s, self.split) for s in range(start, start + self.batch_size)]


class FromBatch(torch.utils.data.Sampler):
    """Batch indices start, start + 1, ... (resuming a run starts at the consumed count)."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        k = self.start
        while True:
            yield k
            k += 1

    def __len__(self) -> int:
        return 10**9
