"""Held-out evaluation of LENS-tiny and export of the shipped bundle.

Three models on the same fresh scenes (val: seen colour-shape compositions; heldout:
unseen compositions, half of them with unseen phrasings), per expression kind:
- box baseline: the stage-1 model's MLLM answers, and its parsed box alone prompts SAM;
- stage 1: the context module's prompt token (MLLM + SAM frozen);
- stage 2: after GRPO.
Writes <results>.json and <results>.md (with the pre-training learning curves).
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lens_ros.model.decoding import GenerationSettings
from lens_ros.model.prompts import parse_answer
from lens_ros.model.vision_input import scale_box
from lens_ros.regions import box_iou
from lens_training.data.synthetic_dataset import SyntheticWorldDataset
from lens_training.metrics import SegmentationMeter

EVAL_OFFSET = 30_000_000
FRAME = (320, 240)
NAMED_TARGET = re.compile(r"the target is the ((?:\w+ ){2}\w+)")


def rationale_names_the_boxed_object(think: str, box, objects) -> bool:
    """The object the rationale finally names ("the target is the <size> <colour> <shape>") is
    the one under the answer's box (box IoU >= 0.5 with an object of that name)."""
    named = NAMED_TARGET.findall(think or "")
    if not named or box is None:
        return False
    return any(name == named[-1] and box_iou(box, obj_box) >= 0.5 for name, obj_box in objects)


@torch.no_grad()
def evaluate_model(model, samples, max_new_tokens: int, with_box_baseline: bool, batch: int = 8) -> dict[str, Any]:
    """-> {"context": {group: summary}, "other": {...}, "box": {...}} with groups all / kind=<k>.

    context: the model as the Pipeline runs it (a ``box_prompt`` model gets its parsed box with
    the context token); other: the other way of prompting (a ``box_prompt`` model's context
    token alone, else the context token plus the box); box: the box alone (the baseline)."""
    model.eval()
    meters: dict[str, dict[str, SegmentationMeter]] = defaultdict(lambda: defaultdict(SegmentationMeter))
    parsed, box_ious, consistent = defaultdict(list), defaultdict(list), defaultdict(list)
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        inputs = model.prepare([s.image for s in chunk], [s.expression for s in chunk], None, cot=True)
        gen = model.decoder.generate(inputs.mllm, GenerationSettings.greedy(max_new_tokens))
        prompt_tokens = model.prompt_tokens(model.query_hidden_after_generation(gen, inputs.mllm))
        embeddings = model.encode_images(inputs)
        answers = [parse_answer(text) for text in gen.texts]
        boxes = [
            None if p.box is None else scale_box(p.box, inputs.packed[i].resized_hw, s.image.shape[:2])
            for i, (p, s) in enumerate(zip(answers, chunk, strict=True))
        ]
        # "context": the model as the Pipeline runs it (a box_prompt model also gets its box)
        _, masks, _ = model.decode_masks(embeddings, prompt_tokens, boxes if model.config.box_prompt else None)
        for i, s in enumerate(chunk):
            groups = ["all", f"kind={s.meta['kind']}"]
            p, box = answers[i], boxes[i]
            for g in groups:
                meters["context"][g].update((masks[i][0] > 0).cpu().numpy(), s.mask)
                parsed[g].append(p.ok)
                box_ious[g].append(box_iou(box, s.box) if box is not None else 0.0)
                if "objects" in s.meta:
                    consistent[g].append(rationale_names_the_boxed_object(p.think, box, s.meta["objects"]))
            other_box = None if (box is None or model.config.box_prompt) else torch.tensor([box], dtype=torch.float32)
            other = model.segmenter.decode(embeddings[i], prompt_tokens=prompt_tokens[i : i + 1], boxes=other_box)
            for g in groups:
                meters["other"][g].update((other.mask_logits[0, 0] > 0).cpu().numpy(), s.mask)
            if with_box_baseline:
                if box is not None:
                    out = model.segmenter.decode(embeddings[i], boxes=torch.tensor([box], dtype=torch.float32))
                    pred = (out.mask_logits[0, 0] > 0).cpu().numpy()
                else:
                    pred = np.zeros_like(s.mask)
                for g in groups:
                    meters["box"][g].update(pred, s.mask)
    out: dict[str, Any] = {}
    for name, by_group in meters.items():
        out[name] = {}
        for g, m in sorted(by_group.items()):
            row = {k: round(float(v), 4) for k, v in m.summary().items()}
            row["parse_rate"] = round(float(np.mean(parsed[g])), 4)
            row["box_iou"] = round(float(np.mean(box_ious[g])), 4)
            if consistent[g]:
                row["rationale_names_boxed"] = round(float(np.mean(consistent[g])), 4)
            out[name][g] = row
    return out


def eval_sets(n: int) -> dict[str, list]:
    """val and heldout (as the world draws them) and "paraphrase": the val scenes with every
    instruction rewritten as a typed command (synonyms, "pick up", "please", ...)."""
    sets = {split: SyntheticWorldDataset(split, n, FRAME, EVAL_OFFSET) for split in ("val", "heldout")}
    sets["paraphrase"] = SyntheticWorldDataset("val", n, FRAME, EVAL_OFFSET, paraphrase_share=1.0)
    return {name: [data[i] for i in range(n)] for name, data in sets.items()}


def evaluate_all(cfg, base: Path, stage1: Path, stage2: Path) -> dict[str, Any]:
    from lens_ros.model.bundle import load_bundle

    sets = eval_sets(cfg.eval_samples)
    results: dict[str, Any] = {"frame": list(FRAME), "samples_per_split": cfg.eval_samples, "models": {}}
    models = [("stage1", stage1), ("stage2", stage2)]
    continued = Path(cfg.work) / "stage1_continued" / "final"
    if continued.is_dir():
        models.append(("stage1 continued (same compute as stage 2)", continued))
    if cfg.compare:
        models.append(("previous bundle", Path(cfg.compare)))
    for name, path in models:
        if not (path / "config.json").is_file():
            continue
        model = load_bundle(path)
        t0 = time.time()
        for split, samples in sets.items():
            r = evaluate_model(model, samples, model.config.max_new_tokens, with_box_baseline=(name == "stage1"))
            results["models"].setdefault(name, {})[split] = r["context"]
            other = "context token alone" if model.config.box_prompt else "context token + box"
            results["models"].setdefault(f"{name} ({other})", {})[split] = r["other"]
            if "box" in r:
                results["models"].setdefault("box_baseline", {})[split] = r["box"]
        results.setdefault("seconds", {})[name] = round(time.time() - t0, 1)
    results["pretraining"] = pretraining_curves(Path(cfg.work))
    write_results(Path(cfg.results), results)
    return results


def pretraining_curves(work: Path) -> dict[str, Any]:
    out = {}
    for name in ("mllm", "sam"):
        path = work / name / "history.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def write_results(stem: Path, results: dict[str, Any]) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    lines = [
        "# LENS-tiny on the synthetic world: held-out results",
        "",
        f"Fresh scenes, {results['samples_per_split']} per split, frames {results['frame'][0]}x"
        f"{results['frame'][1]}; val = seen colour-shape compositions, heldout = every target an "
        "unseen composition (half with unseen phrasings), paraphrase = the val scenes with every "
        'instruction typed as a command (synonyms, "pick up", "please"). cIoU / gIoU of the mask; '
        "names boxed = the object the rationale finally names is the one under the answer's box.",
        "",
        "| model | split | group | cIoU | gIoU | parse | box IoU | names boxed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, splits in results["models"].items():
        for split, groups in splits.items():
            for g, r in groups.items():
                lines.append(
                    f"| {model} | {split} | {g} | {r['cIoU']:.3f} | {r['gIoU']:.3f} | "
                    f"{r['parse_rate']:.2f} | {r['box_iou']:.3f} | {r.get('rationale_names_boxed', float('nan')):.2f} |"
                )
    curves = results.get("pretraining", {})
    if "mllm" in curves:
        lines += [
            "",
            "## MLLM pre-training substitute (greedy decoding, mean box IoU / IoU>=0.5)",
            "",
            "| step | minutes | val all | heldout all | heldout simple | heldout relational | heldout reasoning |",
            "|---|---|---|---|---|---|---|",
        ]
        for h in curves["mllm"]:
            m = h["metrics"]

            def cell(k, m=m):
                return f"{m[k]['miou']:.2f} / {m[k]['acc50']:.2f}" if k in m else "-"

            lines.append(
                f"| {h['step']} | {h['minutes']} | {cell('val/all')} | {cell('heldout/all')} | "
                f"{cell('heldout/simple')} | {cell('heldout/relational')} | {cell('heldout/reasoning')} |"
            )
    if "sam" in curves:
        lines += [
            "",
            "## SAM pre-training substitute (val mask IoU)",
            "",
            "| step | minutes | box prompt | point prompts |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {h['step']} | {h['minutes']} | {h['miou_box']:.3f} | {h['miou_points']:.3f} |" for h in curves["sam"]
        ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def export_best(cfg, base: Path, stage1: Path, stage2: Path, results: dict[str, Any] | None) -> Path:
    """Ship the stage with the best val cIoU (stage 2 when tied), weights stored as fp16."""
    from lens_ros.model.bundle import load_bundle, save_bundle

    candidates = [
        (n, p) for n, p in (("stage2", stage2), ("stage1", stage1), ("base", base)) if (p / "config.json").is_file()
    ]
    name, path = candidates[0]
    if results:
        scored = [
            (results["models"].get(n, {}).get("val", {}).get("all", {}).get("cIoU", -1.0), n, p)
            for n, p in candidates
            if n != "base"
        ]
        if scored:
            _, name, path = max(scored, key=lambda t: t[0])
    model = load_bundle(path)
    model.half()  # fp16 storage: 10.7 M parameters in ~21 MB; the loader casts back to float32
    summary = {"stage": name, "source": str(path)}
    if results and name in results["models"]:
        summary["heldout"] = results["models"][name].get("heldout", {}).get("all", {})
        summary["val"] = results["models"][name].get("val", {}).get("all", {})
    out = save_bundle(cfg.out, model, extra=summary)
    print(f"exported {name} from {path} to {out}")
    from lens_training.tiny.draft_table import write_draft_table

    write_draft_table(out)  # the speculative decoder's starting n-grams, from the shipped weights
    return out
