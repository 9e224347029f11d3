"""The embedded lens-tiny through ``Pipeline`` on the CPU and on an accelerator.

    python -m bench.tiny_device_parity cuda > bench/results/<machine>-<date>-tiny-cuda.json

Per precision (CPU fp32, <device> fp32, <device> bf16): median ``segment`` latency on eight
fresh 640x480 val scenes, mean mask IoU against the ground truth, and mean mask IoU against
the CPU fp32 masks (1.0 = the same masks). Prints JSON.
"""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np

from lens_ros.model.pipeline import Pipeline
from lens_ros.regions import mask_iou
from lens_training.data.specs import build_dataset


def main(device: str = "cuda") -> dict:
    samples = [build_dataset("synthetic:val:8:640x480")[i] for i in range(8)]
    out: dict[str, dict[str, float]] = {}
    masks: dict[str, list[np.ndarray]] = {}
    for name, dev, dtype in (
        ("cpu fp32", "cpu", "float32"),
        (f"{device} fp32", device, "float32"),
        (f"{device} bf16", device, "bfloat16"),
    ):
        pipe = Pipeline.from_pretrained("lens-tiny", device=dev, dtype=dtype)
        pipe.segment(samples[0].image, samples[0].expression)  # warm-up
        times, ious, masks[name] = [], [], []
        for s in samples:
            pipe.clear_cache()
            result, _ = pipe.segment(s.image, s.expression)
            times.append(result.timings.total_ms)
            mask = np.asarray(result.masks[0]).astype(bool)
            ious.append(mask_iou(mask, s.mask.astype(bool)))
            masks[name].append(mask)
        out[name] = {"segment_ms_median": statistics.median(times), "mean_iou_vs_gt": float(np.mean(ious))}
        print(name, out[name], file=sys.stderr, flush=True)
    for name, ms in masks.items():
        out[name]["mask_iou_vs_cpu_fp32"] = float(
            np.mean([mask_iou(a, b) for a, b in zip(masks["cpu fp32"], ms, strict=True)])
        )
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:2]), indent=1))
