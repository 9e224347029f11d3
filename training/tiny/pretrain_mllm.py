"""Pre-training substitute for the tiny MLLM: SFT on the world's rationales and boxes.

No pretrained Qwen2.5-VL this small exists, so the tiny model (``build_tiny_qwen``)
learns from scratch, by teacher forcing, to answer the LENS CoT question about a world
frame with ``<think>{rationale}</think><answer>[x1,y1,x2,y2]</answer>`` (box in the
MLLM's 160x128 pixels). Losses (see ``lens_training.tiny.model``): cross-entropy on the
completion, number tokens half hard / half soft (Gaussian, sigma 1.5); plus the dense
auxiliary losses on the image tokens, weighted by ``aux_weight``. fp32 by default
(``--bf16 true`` for CPUs with fast bf16 matmuls; on the build machines it was 10x slower).

    python -m lens_training.tiny.pretrain_mllm --out runs/tiny/mllm --minutes 55

Re-running the same command resumes from <out>/checkpoints/latest. Every
``eval_minutes`` the run decodes greedily a fixed set of val (seen compositions) and
held-out (unseen compositions and phrasings) scenes and logs parse rate, mean box IoU
and IoU >= 0.5 per expression kind (<out>/history.json). The current weights are always
in <out>/qwen (``from_pretrained`` directory) and the tokenizer in <out>/tokenizer.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lens_ros.model.decoding import Decoder, GenerationSettings
from lens_ros.model.mllm import MLLM, ImageConfig, PackedImage
from lens_ros.model.prompts import parse_answer
from lens_ros.regions import box_iou
from lens_ros.world.language import KINDS
from lens_training.runtime import save_checkpoint
from lens_training.tiny.common import SeedStream, TimeBudgetSchedule, resume_if_possible, setup_logging
from lens_training.tiny.config import MLLM_IMAGE_HW, MLLM_MAX_PIXELS, MLLM_MIN_PIXELS, TinyMLLMConfig
from lens_training.tiny.mllm_data import ExampleBatches, FromBatch, MLLMExample, make_example
from lens_training.tiny.model import (
    AuxHeads,
    build_tiny_qwen,
    number_token_ids,
    remap_vocabulary,
    soft_number_targets,
)
from lens_training.tiny.tokenizer import save_tiny_tokenizer

EVAL_SEED = 20_000_000


@dataclass
class MLLMPretrainConfig:
    out: str = "runs/tiny/mllm"
    minutes: float = 55.0
    batch_size: int = 16
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    aux_weight: float = 1.0
    threads: int = 2
    workers: int = 1
    bf16: bool = False  # measured on these CPUs: bf16 matmuls 10x slower than fp32
    device: str = "cpu"  # "cuda" trains the same model on a GPU (data stays on CPU workers)
    init_qwen: str = ""  # a from_pretrained directory to start from (e.g. an earlier run's qwen/)
    init_tokenizer: str = ""  # its tokenizer (default: <init_qwen>/../tokenizer); the vocabulary is remapped
    checkpoint_minutes: float = 5.0
    eval_minutes: float = 10.0
    eval_per_kind: int = 10
    max_new_tokens: int = 112  # grounded rationales list up to 3 candidates with boxes
    seed: int = 0


def tiny_image_config() -> ImageConfig:
    return ImageConfig(
        patch_size=8,
        merge_size=2,
        temporal_patch_size=1,
        coord_channels=True,
        min_pixels=MLLM_MIN_PIXELS,
        max_pixels=MLLM_MAX_PIXELS,
    )


def packed(e: MLLMExample) -> PackedImage:
    return PackedImage(e.pixel_values, e.grid_thw, e.resized_hw, int(e.grid_thw.prod()) // 4)


def _identity(x):
    return x


def _worker_init(_):
    torch.set_num_threads(1)


class SFTLoss(nn.Module):
    """Teacher-forced completion loss + auxiliary image-token losses."""

    def __init__(self, mllm: MLLM, aux: AuxHeads, aux_weight: float):
        super().__init__()
        self.mllm, self.aux, self.aux_weight = mllm, aux, aux_weight
        tok = mllm.tokenizer
        from lens_training.tiny.config import NUM_MAX

        self.register_buffer("num_ids", number_token_ids(tok, NUM_MAX), persistent=False)
        value = torch.full((len(tok),), -1, dtype=torch.long)
        value[self.num_ids] = torch.arange(len(self.num_ids))
        self.register_buffer("value_of_id", value, persistent=False)
        self.coord_range = max(MLLM_IMAGE_HW) + 1

    def forward(self, examples: list[MLLMExample]) -> tuple[torch.Tensor, dict[str, float]]:
        mllm = self.mllm
        inputs = mllm.collate(
            [e.prompt_ids for e in examples], [packed(e) for e in examples], [e.completion_ids for e in examples]
        ).to(mllm.device)
        core = mllm.model.model
        embeds = core.get_input_embeddings()(inputs.input_ids)
        feats = core.get_image_features(inputs.pixel_values, inputs.image_grid_thw, return_dict=True).pooler_output
        feats = torch.cat(list(feats), dim=0)
        image_mask = (inputs.input_ids == mllm.image_token_id) & inputs.attention_mask.bool()
        embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), feats.to(embeds.dtype))
        pos = mllm.position_ids(
            inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw, inputs.attention_mask
        )
        hidden, _ = mllm.run_language_model(embeds, pos, inputs.attention_mask)

        target = inputs.completion_mask.clone()
        target[:, 0] = False
        b, t = target.nonzero(as_tuple=True)
        logits = mllm.model.lm_head(hidden[b, t - 1]).float()
        tgt = inputs.input_ids[b, t]
        logp = F.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, tgt[:, None]).squeeze(-1)
        values = self.value_of_id[tgt]
        is_num = values >= 0
        per_token = nll.clone()
        if is_num.any():
            num_logp = logp[is_num][:, self.num_ids]
            soft = -(soft_number_targets(values[is_num], len(self.num_ids), 1.5) * num_logp).sum(-1)
            per_token[is_num] = 0.5 * nll[is_num] + 0.5 * soft
        lm_loss = per_token.mean()

        labels = {
            k: torch.cat([e.labels[k] for e in examples]).to(feats.device) for k in ("color", "shape", "size", "box")
        }
        rows = mllm.model.lm_head.weight[self.num_ids[: self.coord_range]]
        aux = self.aux(feats, labels, rows)
        weights = {"aux_color": 0.3, "aux_shape": 0.3, "aux_size": 0.3, "aux_box": 2.0, "aux_coord": 1.0}
        aux_loss = sum(weights[k] * v for k, v in aux.items())
        loss = lm_loss + self.aux_weight * aux_loss
        stats = {
            "lm": lm_loss.item(),
            "num_acc": float((logits.detach().argmax(-1) == tgt)[is_num].float().mean()) if is_num.any() else 0.0,
            **{k: v.item() for k, v in aux.items()},
        }
        return loss, stats


def eval_examples(tokenizer, per_kind: int) -> list[MLLMExample]:
    """A fixed set: per split (val, heldout) and kind, ``per_kind`` examples."""
    out = []
    for split in ("val", "heldout"):
        for k, kind in enumerate(KINDS):
            out += [make_example(tokenizer, EVAL_SEED + 1000 * k + i, split, kind) for i in range(per_kind)]
    return out


@torch.no_grad()
def evaluate(mllm: MLLM, examples: list[MLLMExample], max_new_tokens: int, batch: int = 24) -> tuple[dict, str]:
    """Greedy decoding -> per split/kind: parse rate, mean box IoU, IoU >= 0.5, think names the target."""
    mllm.eval()
    rows = []
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        inputs = mllm.collate([e.prompt_ids for e in chunk], [packed(e) for e in chunk]).to(mllm.device)
        gen = Decoder(mllm).generate(inputs, GenerationSettings.greedy(max_new_tokens))
        for e, text in zip(chunk, gen.texts, strict=False):
            p = parse_answer(text)
            iou = box_iou(p.box, e.box.tolist()) if p.box is not None else 0.0
            rows.append((e.meta["split"], e.meta["kind"], p.ok, iou, e.meta["target"] in p.think))
    mllm.train()
    groups = defaultdict(list)
    for split, kind, ok, iou, think in rows:
        groups[f"{split}/{kind}"].append((ok, iou, think))
        groups[f"{split}/all"].append((ok, iou, think))
    return {
        g: {
            "parse": float(np.mean([r[0] for r in v])),
            "miou": float(np.mean([r[1] for r in v])),
            "acc50": float(np.mean([r[1] >= 0.5 for r in v])),
            "think": float(np.mean([r[2] for r in v])),
            "n": len(v),
        }
        for g, v in sorted(groups.items())
    }, gen.texts[0]


def save_weights(out: Path, qwen: nn.Module) -> None:
    tmp = out / ".qwen.tmp"
    qwen.save_pretrained(str(tmp), safe_serialization=True)
    final = out / "qwen"
    if final.exists():
        import shutil

        shutil.rmtree(final)
    tmp.rename(final)


def main(argv: list[str] | None = None) -> None:
    cfg = MLLMPretrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(cfg).items():
        kw = {"type": type(value)} if not isinstance(value, bool) else {"type": lambda s: s.lower() in ("1", "true")}
        parser.add_argument(f"--{name.replace('_', '-')}", default=value, **kw)
    cfg = MLLMPretrainConfig(**vars(parser.parse_args(argv)))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    log = setup_logging(out, "pretrain_mllm")
    tokenizer = save_tiny_tokenizer(out / "tokenizer")

    qwen = build_tiny_qwen(tokenizer, TinyMLLMConfig())
    if cfg.init_qwen:  # from_pretrained maps the saved (legacy) key names
        start = type(qwen).from_pretrained(cfg.init_qwen, dtype=torch.float32)
        tok_dir = Path(cfg.init_tokenizer or Path(cfg.init_qwen).parent / "tokenizer")
        if tok_dir.is_dir():  # new words (commands, synonyms) get rows; known words keep theirs
            from lens_ros.model.mllm import load_tokenizer

            added = remap_vocabulary(start, load_tokenizer(tok_dir), tokenizer)
            log.info(f"vocabulary {len(tokenizer)} ({added} new tokens) from {tok_dir}")
        qwen.load_state_dict(start.state_dict())
        del start
    mllm = MLLM(qwen, tokenizer, tiny_image_config(), cot=True)
    aux = AuxHeads(mllm.hidden_size)
    trained = nn.ModuleDict({"qwen": qwen, "aux": aux}).train()
    loss_fn = SFTLoss(mllm, aux, cfg.aux_weight)
    device = torch.device(cfg.device)
    trained.to(device)
    loss_fn.to(device)
    decay = [p for n, p in trained.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in trained.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    sched = TimeBudgetSchedule(opt, cfg.minutes * 60, cfg.warmup_steps)
    sched.exclude_stopped_time()
    seeds = SeedStream(cfg.batch_size, offset=cfg.seed * 1_000_000_000)
    ckpt_dir = out / "checkpoints"
    step = resume_if_possible(ckpt_dir, trained, opt, sched, seeds, cfg.minutes * 60, log)
    n_vis = sum(p.numel() for p in qwen.model.visual.parameters())
    log.info(
        f"tiny Qwen2.5-VL {sum(p.numel() for p in qwen.parameters()) / 1e6:.2f} M params "
        f"(vision {n_vis / 1e6:.2f} M), vocab {len(tokenizer)}, config {cfg}"
    )
    evalset = eval_examples(tokenizer, cfg.eval_per_kind)
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []

    loader = torch.utils.data.DataLoader(
        ExampleBatches(tokenizer, cfg.batch_size, seeds.offset),
        batch_size=None,
        sampler=FromBatch(seeds.consumed),
        num_workers=cfg.workers,
        collate_fn=_identity,
        worker_init_fn=_worker_init,
        prefetch_factor=4 if cfg.workers else None,
        persistent_workers=cfg.workers > 0,
    )
    last_ckpt = last_eval = t_log = time.monotonic()
    acc: dict[str, list[float]] = defaultdict(list)
    sched.pause()
    if sched.done:
        log.info(f"budget of {cfg.minutes} min already spent at step {step}; nothing to do")
        return
    for examples in loader:
        seeds.consumed += 1
        sched.tick()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss, stats = loss_fn(examples)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        opt.step()
        step += 1
        acc["loss"].append(loss.item())
        for k, v in stats.items():
            acc[k].append(v)
        now = time.monotonic()
        if now - t_log > 60:
            means = " ".join(f"{k} {np.mean(v):.3f}" for k, v in acc.items())
            log.info(
                f"step {step} {means} lr {opt.param_groups[0]['lr']:.2e} "
                f"spent {sched.elapsed / 60:.1f}/{cfg.minutes:.0f} min"
            )
            t_log, acc = now, defaultdict(list)
        if now - last_eval > cfg.eval_minutes * 60 or sched.done:
            metrics, sample_text = evaluate(mllm, evalset, cfg.max_new_tokens)
            history.append({"step": step, "minutes": round(sched.elapsed / 60, 2), "metrics": metrics})
            (out / "history.json").write_text(json.dumps(history, indent=1))
            table = " | ".join(
                f"{g} p{m['parse']:.2f} iou{m['miou']:.2f} a{m['acc50']:.2f} t{m['think']:.2f}"
                for g, m in metrics.items()
            )
            log.info(f"eval step {step} ({sched.elapsed / 60:.1f} min): {table}")
            log.info(f"example completion: {sample_text!r}")
            last_eval = time.monotonic()
            sched.pause()
        if now - last_ckpt > cfg.checkpoint_minutes * 60 or sched.done:
            save_checkpoint(ckpt_dir, step, trained, opt, sched, seeds, asdict(cfg))
            save_weights(out, qwen)
            last_ckpt = time.monotonic()
            sched.pause()
        if sched.done:
            break
    log.info(f"done at step {step}; weights in {out / 'qwen'}")


if __name__ == "__main__":
    main()
