"""README overlays: the shipped lens-tiny on fresh held-out world scenes, one per expression kind.

    python -m lens_training.tiny.overlays --out docs/images

Writes overlay_<split>_<i>_<kind>.png (mask, box, label as lens-predict draws them) and prints each
instruction with the model's rationale and the mask's IoU against the ground truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from lens_ros.cli.predict import overlay
from lens_ros.model.pipeline import Pipeline
from lens_ros.world.language import KINDS
from lens_training.data.synthetic_dataset import SyntheticWorldDataset

OVERLAY_OFFSET = 71_000_000  # scenes no training run, evaluation or test draws


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--model", default="lens-tiny")
    parser.add_argument("--split", default="heldout")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline.from_pretrained(args.model)
    data = SyntheticWorldDataset(args.split, 10_000, (640, 480), OVERLAY_OFFSET)
    wanted = list(KINDS)
    i = 0
    while wanted:
        sample = data[i]
        i += 1
        kind = sample.meta["kind"]
        if kind not in wanted:
            continue
        wanted.remove(kind)
        result, _ = pipe.segment(sample.image, sample.expression)
        mask = result.masks[0] if result.masks.shape[0] else np.zeros(sample.mask.shape, bool)
        iou = (mask & sample.mask).sum() / max((mask | sample.mask).sum(), 1)
        name = f"overlay_{args.split}_{KINDS.index(kind):02d}_{kind}.png"
        cv2.imwrite(str(args.out / name), overlay(sample.image, result)[:, :, ::-1])
        print(f"{name}: {sample.expression!r} -> IoU {iou:.2f}; rationale: {result.rationale!r}")


if __name__ == "__main__":
    main()
