"""ReasonSeg (LISA) in its released layout.

    <root>/<split>/<name>.jpg
    <root>/<split>/<name>.json   {"text": [question, ...], "is_sentence": bool,
                                  "shapes": [{"label": "target" | "ignore" | "flag",
                                              "points": [[x, y], ...], "shape_type": "polygon"}]}

Mask rules follow the release: "flag" shapes are skipped; polygons are drawn largest first
(outline + fill) so a smaller polygon drawn later wins; "ignore" polygons mark pixels that
evaluation excludes, every other label is the target.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from lens_training.data.dataset import Sample, box_from_mask
from lens_training.data.refer import load_image_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def masks_from_shapes(shapes: list[dict], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """ReasonSeg shapes -> (target mask, ignore mask), both (H, W) bool."""
    polygons = []
    for shape in shapes:
        if shape["label"].lower() == "flag":
            continue
        points = np.asarray(shape["points"], np.float64).round().astype(np.int32)
        area_mask = np.zeros((height, width), np.uint8)
        cv2.polylines(area_mask, [points], True, 1, 1)
        cv2.fillPoly(area_mask, [points], 1)
        polygons.append((int(area_mask.sum()), shape["label"], points))
    label_map = np.zeros((height, width), np.uint8)
    for _, label, points in sorted(polygons, key=lambda p: -p[0]):  # stable: ties keep file order
        value = 255 if "ignore" in label.lower() else 1
        cv2.polylines(label_map, [points], True, value, 1)
        cv2.fillPoly(label_map, [points], value)
    return label_map == 1, label_map == 255


class ReasonSegDataset:
    """ReasonSeg samples of one split; per_question=True yields one sample per question."""

    def __init__(self, root: str | Path, split: str = "val", per_question: bool = True):
        self.root = Path(root)
        self.split = split
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"ReasonSeg split folder not found: {folder}")
        self.images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.items: list[tuple[int, int]] = []
        self.annotations: list[dict] = []
        for i, image_path in enumerate(self.images):
            annotation = json.loads(image_path.with_suffix(".json").read_text())
            self.annotations.append(annotation)
            questions = range(len(annotation["text"])) if per_question else [0]
            self.items.extend((i, q) for q in questions)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        image_index, question_index = self.items[index]
        annotation = self.annotations[image_index]
        image = load_image_rgb(self.images[image_index])
        mask, ignore = masks_from_shapes(annotation["shapes"], *image.shape[:2])
        return Sample(
            image=image,
            expression=annotation["text"][question_index],
            mask=mask,
            box=box_from_mask(mask),
            ignore=ignore if ignore.any() else None,
            meta={
                "source": "reasonseg",
                "split": self.split,
                "name": self.images[image_index].stem,
                "is_sentence": bool(annotation.get("is_sentence", False)),
            },
        )
