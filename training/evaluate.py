"""Evaluation: gIoU / cIoU per split (``lens-eval``), the way the model is deployed.

Per sample: greedy generation, context queries on top of the generation's KV cache, the
segmenter decodes the context prompt, mask = logits > 0 at the image's resolution.
Also reported: parse rate and mean IoU of the MLLM's own box (mapped to image pixels), and
for sources that label them (the synthetic world) the same metrics per expression kind
and on unseen colour-shape compositions.

    lens-eval --model runs/stage2/final --data synthetic:heldout:500,synthetic:val:500 --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lens_ros.model.decoding import GenerationSettings
from lens_ros.model.prompts import parse_answer
from lens_ros.model.vision_input import scale_box
from lens_ros.regions import box_iou
from lens_training.config import EvalConfig
from lens_training.data.dataset import Sample, SegmentationDataset
from lens_training.metrics import SegmentationMeter


@torch.no_grad()
def predict_batch(model: nn.Module, samples: list[Sample], cot: bool, max_new_tokens: int) -> list[dict[str, Any]]:
    """Greedy LENS inference on a batch: per sample the mask (H, W) bool, completion text and box."""
    device = next(model.parameters()).device
    inputs = model.prepare([s.image for s in samples], [s.expression for s in samples], None, cot=cot)
    generation = model.decoder.generate(inputs.mllm, GenerationSettings.greedy(max_new_tokens))
    query_hidden = model.query_hidden(generation, inputs.mllm)
    prompt_tokens = model.prompt_tokens(query_hidden)
    embeddings = model.encode_images(inputs)
    boxes = []
    for i, sample in enumerate(samples):
        parsed = parse_answer(generation.texts[i])
        boxes.append(
            None if parsed.box is None else scale_box(parsed.box, inputs.packed[i].resized_hw, sample.image.shape[:2])
        )
    # a box_prompt model's segmenter also gets its box, as in the Pipeline
    prompt_boxes = boxes if model.config.box_prompt else None
    _, mask_logits, _ = model.decode_masks(embeddings, prompt_tokens.to(device), prompt_boxes)
    return [
        {"mask": (mask_logits[i][0] > 0).cpu().numpy(), "text": generation.texts[i], "box": boxes[i]}
        for i in range(len(samples))
    ]


def _group_keys(sample: Sample) -> list[str]:
    keys = []
    if "kind" in sample.meta:
        keys.append(f"kind={sample.meta['kind']}")
    if sample.meta.get("unseen_composition"):
        keys.append("unseen_composition")
    return keys


def evaluate_dataset(
    model: nn.Module,
    dataset: SegmentationDataset,
    batch_size: int = 8,
    limit: int = 0,
    cot: bool = False,
    max_new_tokens: int = 128,
) -> dict[str, Any]:
    """gIoU, cIoU, Pr@0.5/0.7/0.9, parse rate, box IoU over one data set (+ per-group rows)."""
    model.eval()
    count = min(len(dataset), limit) if limit > 0 else len(dataset)
    meter, groups = SegmentationMeter(), defaultdict(SegmentationMeter)
    parsed, box_ious = 0, []
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        samples = [dataset[i] for i in range(start, min(count, start + batch_size))]
        for sample, pred in zip(samples, predict_batch(model, samples, cot, max_new_tokens), strict=True):
            meter.update(pred["mask"], sample.mask, sample.ignore)
            for key in _group_keys(sample):
                groups[key].update(pred["mask"], sample.mask, sample.ignore)
            parsed += pred["box"] is not None
            box_ious.append(box_iou(pred["box"], sample.box) if pred["box"] is not None else 0.0)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = meter.summary()
    result.update(
        parse_rate=parsed / max(1, count),
        box_iou=float(np.mean(box_ious)) if box_ious else 0.0,
        seconds=seconds,
        samples_per_second=count / seconds if seconds else 0.0,
    )
    if groups:
        result["groups"] = {k: g.summary() for k, g in sorted(groups.items())}
    return result


def evaluate(model: nn.Module, datasets: dict[str, SegmentationDataset], cfg: EvalConfig) -> dict[str, Any]:
    """One result row per named data set; returns {"splits": {name: metrics}, "config": ...}."""
    splits = {
        name: evaluate_dataset(model, ds, cfg.batch_size, cfg.limit, cfg.cot, cfg.max_new_tokens)
        for name, ds in datasets.items()
    }
    return {"model": cfg.model, "splits": splits, "config": cfg.__dict__}


def format_table(results: dict[str, Any]) -> str:
    header = f"{'split':<40} {'n':>6} {'gIoU':>7} {'cIoU':>7} {'Pr@0.5':>7} {'parse':>6} {'boxIoU':>7}"
    lines = [header, "-" * len(header)]

    def row(name: str, r: dict[str, Any]) -> str:
        return (
            f"{name:<40} {r['count']:>6} {r['gIoU']:>7.4f} {r['cIoU']:>7.4f} {r['Pr@0.5']:>7.4f} "
            f"{r.get('parse_rate', float('nan')):>6.3f} {r.get('box_iou', float('nan')):>7.4f}"
        )

    for name, r in results["splits"].items():
        lines.append(row(name, r))
        for group, g in r.get("groups", {}).items():
            lines.append(row(f"  {group}", g))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lens-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="bundle directory, LENS release directory, preset, or tiny-random"
    )
    parser.add_argument("--model-dir", default="", help="directory a preset's paths refer to")
    parser.add_argument("--data", required=True, help="data spec(s), comma-separated: one table row each")
    parser.add_argument("--out", default="", help="JSON results file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=0, help="at most this many samples per split (0: all)")
    parser.add_argument("--cot", action="store_true", help="chain-of-thought prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args(argv)

    from lens_training.data.specs import build_one, split_specs
    from lens_training.model_setup import load_lens_model
    from lens_training.runtime import resolve_device

    cfg = EvalConfig(
        model=args.model,
        model_dir=args.model_dir,
        data=args.data,
        device=args.device,
        batch_size=args.batch_size,
        limit=args.limit,
        out=args.out,
        cot=args.cot,
        max_new_tokens=args.max_new_tokens,
    )
    device = resolve_device(cfg.device)
    model = load_lens_model(cfg.model, 0, cfg.model_dir).to(device).eval()
    datasets = {spec: build_one(spec) for spec in split_specs(cfg.data)}
    results = evaluate(model, datasets, cfg)
    print(format_table(results))
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(results, indent=2))
        print(f"results written to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
