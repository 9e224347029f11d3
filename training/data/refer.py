"""RefCOCO / RefCOCO+ / RefCOCOg in the refer layout (lichengunc/refer).

    <data_root>/<dataset>/instances.json     COCO images + annotations (+ categories)
    <data_root>/<dataset>/refs(<split_by>).p  pickled list of refs: ref_id, ann_id, image_id,
                                             split, sentences [{sent, raw, tokens, sent_id}], ...
    <image_root>/<file_name>                 COCO train2014 images (default
                                             <data_root>/images/mscoco/images/train2014)

The refs file is a pickle. It is read with ``RestrictedUnpickler``, which builds only plain
containers and scalars (dict, list, tuple, str, bytes, int, float, bool, None, set), so a
tampered file cannot run code. Usual splits: refcoco/refcoco+ "unc" (train, val, testA,
testB), refcocog "umd" (train, val, test).
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lens_training.data.dataset import Sample, box_from_mask

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "refclef": "unc"}

# Globals a plain-data pickle may need: protocols < 4 build sets through a call.
_ALLOWED_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every class and function except set/frozenset."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return set if name == "set" else frozenset
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a refs file holds only plain data")


def load_plain_pickle(path: str | Path) -> Any:
    """Load a pickle that must contain only plain containers and scalars.

    Python 2 ``str`` objects (the original refs files) are decoded as latin-1.
    """
    data = Path(path).read_bytes()
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO run-length encoding (counts list or compressed string) -> (H, W) bool mask."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _counts_from_string(counts.decode() if isinstance(counts, bytes) else counts)
    flat = np.zeros(h * w, dtype=bool)
    position, value = 0, False
    for run in counts:
        if value:
            flat[position : position + run] = True
        position += run
        value = not value
    return flat.reshape(w, h).T  # COCO RLE is column-major


def _counts_from_string(s: str) -> list[int]:
    # Port of pycocotools rleFrString: 5-bit little-endian groups, sign bit 0x10, delta from m-2.
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO ``segmentation`` (polygons or RLE) -> (H, W) bool mask."""
    if isinstance(segmentation, dict):
        return decode_rle(segmentation)
    mask = np.zeros((height, width), np.uint8)
    for polygon in segmentation:
        points = np.round(np.asarray(polygon, np.float64).reshape(-1, 2)).astype(np.int32)
        cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


def load_image_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class RefDataset:
    """Referring-expression segmentation samples of one split.

    per_sentence=True: one sample per sentence (evaluation); False: one per ref with all its
    sentences, one picked deterministically from (index, epoch); call ``set_epoch`` each epoch.
    """

    def __init__(
        self,
        data_root: str | Path,
        dataset: str = "refcoco",
        split: str = "val",
        split_by: str | None = None,
        image_root: str | Path | None = None,
        per_sentence: bool = True,
    ):
        self.data_root = Path(data_root)
        self.dataset = dataset
        self.split = split
        self.split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
        folder = self.data_root / dataset
        self.image_root = Path(image_root) if image_root else self.data_root / "images/mscoco/images/train2014"
        refs = load_plain_pickle(folder / f"refs({self.split_by}).p")
        instances = json.loads((folder / "instances.json").read_text())
        self.images = {img["id"]: img for img in instances["images"]}
        self.annotations = {ann["id"]: ann for ann in instances["annotations"]}
        self.refs = [r for r in refs if r["split"] == split]
        if per_sentence:
            self.items = [(i, j) for i, r in enumerate(self.refs) for j in range(len(r["sentences"]))]
        else:
            self.items = [(i, -1) for i in range(len(self.refs))]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        ref_index, sentence_index = self.items[index]
        ref = self.refs[ref_index]
        if sentence_index < 0:  # one ref, a sentence chosen deterministically from (index, epoch)
            sentence_index = (index * 7919 + self.epoch) % len(ref["sentences"])
        sentence = ref["sentences"][sentence_index]
        info = self.images[ref["image_id"]]
        annotation = self.annotations[ref["ann_id"]]
        image = load_image_rgb(self.image_root / info["file_name"])
        mask = decode_segmentation(annotation["segmentation"], info["height"], info["width"])
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{info['file_name']}: image {image.shape[:2]} != annotation {mask.shape}")
        return Sample(
            image=image,
            expression=sentence.get("sent", sentence.get("raw", "")),
            mask=mask,
            box=box_from_mask(mask),
            meta={
                "source": self.dataset,
                "split": self.split,
                "ref_id": ref["ref_id"],
                "ann_id": ref["ann_id"],
                "image_id": ref["image_id"],
                "sent_id": sentence.get("sent_id"),
            },
        )
