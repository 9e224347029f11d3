"""Scenes from another renderer: flat-coloured blocks and balls drawn with OpenCV.

The embedded model learnt from the world's ray-cast tabletop (lens_ros/world). These scenes
share only the object names and colours: a plain background of a random colour, blocks as
filled rectangles, balls as filled discs, no shading, no table, no perspective. They measure
how far the model's grounding carries outside its own renderer:

- box IoU of the MLLM's answer with the drawn object's box;
- spill: mask pixels outside the target / target pixels (0 = none, 3 = three times its area);
- the segmenter's score of the answer.

    python -m lens_training.tiny.flat_scenes --bundle lens_ros/weights/lens-tiny --n 100
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import cv2
import numpy as np

from lens_ros.regions import box_iou, mask_box
from lens_ros.world.spec import COLORS

SHAPES = ("cube", "ball")  # drawn as a filled square / disc


@dataclass
class FlatScene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: list[np.ndarray]
    names: list[str]  # "<colour> <shape>"
    target: int
    expression: str


def draw_scene(seed: int, size: tuple[int, int] = (320, 240)) -> FlatScene:
    """2-4 objects of distinct colour-shape pairs, non-overlapping, on a plain background."""
    rng = np.random.default_rng([seed, 9090])
    width, height = size
    background = rng.integers(0, 256, 3)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    # colours far from the background only: the object must be visible
    pairs = [p for p in pairs if np.abs(np.asarray(COLORS[p[0]]) - background).sum() > 120]
    count = int(rng.integers(2, 5))
    chosen = [pairs[i] for i in rng.choice(len(pairs), size=min(count, len(pairs)), replace=False)]
    masks, names, taken = [], [], np.zeros((height, width), bool)
    for color, shape in chosen:
        for _ in range(50):
            r = int(rng.integers(height // 12, height // 6))
            cx, cy = int(rng.integers(r + 2, width - r - 2)), int(rng.integers(r + 2, height - r - 2))
            mask = np.zeros((height, width), np.uint8)
            if shape == "ball":
                cv2.circle(mask, (cx, cy), r, 1, -1)
            else:
                cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
            mask = mask.astype(bool)
            if not (mask & taken).any():
                break
        else:
            continue
        taken |= mask
        image[mask] = COLORS[color]
        masks.append(mask)
        names.append(f"{color} {shape}")
    target = int(rng.integers(len(names)))
    return FlatScene(image, masks, names, target, f"the {names[target]}")


def evaluate(bundle: str, n: int, seed: int = 0) -> dict:
    from lens_ros.model.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(bundle, device="cpu", dtype="float32")
    ious, spills, scores, random_ious = [], [], [], []
    rng = np.random.default_rng(seed)
    for i in range(n):
        scene = draw_scene(seed * 100_000 + i)
        gt = scene.masks[scene.target]
        gt_box = mask_box(gt)
        result, _ = pipe.segment(scene.image, scene.expression)
        answer_box = result.parsed_box  # the MLLM's own box
        ious.append(box_iou(answer_box, gt_box) if answer_box is not None else 0.0)
        mask = result.masks[0] if len(result.masks) else np.zeros_like(gt)
        spills.append(float((mask & ~gt).sum() / gt.sum()))
        scores.append(float(result.scores[0]) if len(result.scores) else 0.0)
        other = int(rng.integers(len(scene.masks)))  # a random object's box: the chance level
        random_ious.append(box_iou(mask_box(scene.masks[other]), gt_box))
    return {
        "scenes": n,
        "box_iou": round(float(np.mean(ious)), 4),
        "box_iou_random_object": round(float(np.mean(random_ious)), 4),
        "spill": round(float(np.mean(spills)), 4),
        "score": round(float(np.mean(scores)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="lens_ros/weights/lens-tiny")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.bundle, args.n, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
