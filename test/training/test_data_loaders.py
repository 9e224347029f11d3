"""RefCOCO (refer layout) and ReasonSeg loaders on tiny fixtures written in the real formats."""

import json
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from lens_training.data.dataset import ListDataset, Sample, box_from_mask, check_sample, collate
from lens_training.data.reasonseg import ReasonSegDataset, masks_from_shapes
from lens_training.data.refer import RefDataset, decode_rle, load_plain_pickle


def _rle_string(counts):
    # pycocotools rleToString, the inverse of the loader's decoder
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _rle_counts(mask):
    flat = mask.T.reshape(-1)  # column-major
    counts, value, run = [], False, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return counts


def _write_refer(root, image_size=(40, 60)):
    h, w = image_size
    images_dir = root / "images/mscoco/images/train2014"
    images_dir.mkdir(parents=True)
    (root / "refcoco").mkdir()
    rng = np.random.default_rng(0)
    for image_id in (1, 2):
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(images_dir / f"COCO_train2014_{image_id:012d}.jpg"), image)
    rle_mask = np.zeros((h, w), bool)
    rle_mask[5:15, 30:50] = True
    instances = {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": h, "width": w} for i in (1, 2)],
        "annotations": [
            # polygon: rectangle x 10..20, y 10..30 (cv2 fills the closed boundary too)
            {
                "id": 11,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [10, 10, 10, 20],
                "segmentation": [[10, 10, 20, 10, 20, 30, 10, 30]],
                "area": 200,
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 2,
                "iscrowd": 0,
                "bbox": [30, 5, 20, 10],
                "segmentation": {"size": [h, w], "counts": _rle_string(_rle_counts(rle_mask))},
                "area": 200,
            },
        ],
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "book"}],
    }
    (root / "refcoco/instances.json").write_text(json.dumps(instances))
    refs = [
        {
            "ref_id": 100,
            "ann_id": 11,
            "image_id": 1,
            "split": "val",
            "category_id": 1,
            "file_name": "COCO_train2014_000000000001_11.jpg",
            "sent_ids": [0, 1],
            "sentences": [
                {"sent": "left cup", "raw": "Left cup.", "tokens": ["left", "cup"], "sent_id": 0},
                {"sent": "the cup", "raw": "the cup", "tokens": ["the", "cup"], "sent_id": 1},
            ],
        },
        {
            "ref_id": 101,
            "ann_id": 12,
            "image_id": 2,
            "split": "testA",
            "category_id": 2,
            "file_name": "COCO_train2014_000000000002_12.jpg",
            "sent_ids": [2],
            "sentences": [{"sent": "blue book", "raw": "blue book", "tokens": ["blue", "book"], "sent_id": 2}],
        },
    ]
    # protocol 2, as the original Python 2 files
    (root / "refcoco/refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return rle_mask


def test_refer_loader_reads_polygons_rle_and_splits(tmp_path):
    rle_mask = _write_refer(tmp_path)
    val = RefDataset(tmp_path, "refcoco", split="val")
    assert len(val) == 2  # one sample per sentence
    sample = val[0]
    check_sample(sample)
    assert sample.expression == "left cup"
    expected = np.zeros((40, 60), bool)
    expected[10:31, 10:21] = True
    assert np.array_equal(sample.mask, expected)
    assert sample.box.tolist() == [10, 10, 21, 31]
    assert sample.meta["ref_id"] == 100 and val[1].expression == "the cup"

    test_a = RefDataset(tmp_path, "refcoco", split="testA")
    assert len(test_a) == 1
    assert np.array_equal(test_a[0].mask, rle_mask)

    per_ref = RefDataset(tmp_path, "refcoco", split="val", per_sentence=False)
    assert len(per_ref) == 1 and per_ref[0].expression in ("left cup", "the cup")


def test_rle_uncompressed_counts_are_column_major():
    mask = decode_rle({"size": [2, 3], "counts": [1, 2, 3]})
    # column-major: pixels (0,0)=0, (1,0)=1, (0,1)=1, then zeros
    assert mask.tolist() == [[False, True, False], [True, False, False]]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_refs_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "payload": _Exploit()}], protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|refusing"):
        load_plain_pickle(path)
    path.write_bytes(pickle.dumps(np.zeros(3)))  # numpy reconstruct is code too
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_plain_pickle(path)


def test_refs_pickle_plain_data_and_sets_load(tmp_path):
    data = [{"a": (1, 2.5, None, True), "s": {1, 2}, "t": "x", "b": b"\x00"}]
    for protocol in (0, 2, 4, 5):
        path = tmp_path / f"p{protocol}.p"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        if protocol < 3:  # bytes in protocols < 3 go through a codecs call: refused, refs hold no bytes
            data_no_bytes = [{k: v for k, v in data[0].items() if k != "b"}]
            path.write_bytes(pickle.dumps(data_no_bytes, protocol=protocol))
            assert load_plain_pickle(path) == data_no_bytes
        else:
            assert load_plain_pickle(path) == data


def _write_reasonseg(root):
    split = root / "val"
    split.mkdir(parents=True)
    image = np.full((30, 40, 3), 128, np.uint8)
    cv2.imwrite(str(split / "scene_a.jpg"), image)
    annotation = {
        "text": ["What would you sit on?", "Where can I rest?"],
        "is_sentence": True,
        "shapes": [
            {"label": "target", "points": [[5, 5], [25, 5], [25, 20], [5, 20]], "shape_type": "polygon"},
            {"label": "ignore", "points": [[10, 10], [15, 10], [15, 15], [10, 15]], "shape_type": "polygon"},
            {"label": "flag", "points": [[0, 0], [39, 0], [39, 29], [0, 29]], "shape_type": "polygon"},
        ],
    }
    (split / "scene_a.json").write_text(json.dumps(annotation))


def test_reasonseg_loader_target_ignore_and_flag(tmp_path):
    _write_reasonseg(tmp_path)
    ds = ReasonSegDataset(tmp_path, "val")
    assert len(ds) == 2
    sample = ds[1]
    check_sample(sample)
    assert sample.expression == "Where can I rest?"
    ignore = np.zeros((30, 40), bool)
    ignore[10:16, 10:16] = True
    target = np.zeros((30, 40), bool)
    target[5:21, 5:26] = True
    target &= ~ignore  # the smaller ignore polygon is drawn over the target
    assert np.array_equal(sample.ignore, ignore)
    assert np.array_equal(sample.mask, target)
    assert sample.meta["is_sentence"] is True


def test_masks_from_shapes_draws_largest_first():
    shapes = [
        {"label": "ignore", "points": [[2, 2], [4, 2], [4, 4], [2, 4]]},
        {"label": "target", "points": [[0, 0], [9, 0], [9, 9], [0, 9]]},
    ]
    target, ignore = masks_from_shapes(shapes, 10, 10)
    assert ignore.sum() == 9 and target.sum() == 100 - 9


def test_collate_keeps_sizes_and_stacks_boxes():
    a = Sample(np.zeros((4, 5, 3), np.uint8), "a", np.ones((4, 5), bool), np.array([0, 0, 5, 4], np.float32))
    b = Sample(np.zeros((6, 7, 3), np.uint8), "b", np.zeros((6, 7), bool), np.zeros(4, np.float32), rationale="r")
    batch = collate(ListDataset([a, b]).samples)
    assert len(batch) == 2 and batch.boxes.shape == (2, 4) and batch.boxes.dtype == torch.float32
    assert batch.images[1].shape == (6, 7, 3) and batch.rationales == ["", "r"]
    assert box_from_mask(a.mask).tolist() == [0, 0, 5, 4]
