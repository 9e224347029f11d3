"""Pre-training substitute for the tiny SAM: promptable segmentation of the world's objects.

No pretrained SAM this small exists, so the tiny SAM (``TINY_SAM``, built by
``lens_ros.model.sam_backend`` from segment_anything's modules) learns from scratch to
segment any object of the synthetic world from a box, from points, or from both, with
single-mask output (the way LENS uses it). Loss: BCE + Dice on the mask at the frame's
resolution, plus MSE of the IoU head against the mask's real IoU.

    python -m lens_training.tiny.pretrain_sam --out runs/tiny/sam --minutes 45

Re-running the same command resumes from <out>/checkpoints/latest (model, optimizer,
schedule clock, data position, RNG). The final weights are <out>/sam.safetensors.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lens_ros.model.sam_backend import SamSegmenter
from lens_ros.world.scene import _rng, render_frame, sample_scene
from lens_training.losses import dice_loss
from lens_training.runtime import save_checkpoint
from lens_training.tiny.common import SeedStream, TimeBudgetSchedule, resume_if_possible, setup_logging
from lens_training.tiny.config import SAM_FRAME_SIZE, TINY_SAM


@dataclass
class SamPretrainConfig:
    out: str = "runs/tiny/sam"
    minutes: float = 45.0
    images_per_step: int = 8
    prompts_per_image: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    threads: int = 1
    checkpoint_minutes: float = 4.0
    eval_minutes: float = 8.0
    eval_images: int = 48
    seed: int = 0


@dataclass
class SceneBatch:
    """One image (3, S, S) preprocessed, its input size, and K prompts with their masks."""

    image: torch.Tensor
    input_size: tuple[int, int]
    masks: torch.Tensor  # (K, H, W) float32 at the frame's resolution
    boxes: torch.Tensor | None  # (K, 4) model-frame xyxy
    points: tuple[torch.Tensor, torch.Tensor] | None  # (K, n, 2) model frame, (K, n) labels


def _prompts(masks: list[np.ndarray], rng: np.random.Generator, mode: str, seg: SamSegmenter, hw):
    """Box (jittered by up to 10 % of its size) and/or 1-3 positive points per mask."""
    boxes, coords, labels = [], [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        w, h = x2 - x1, y2 - y1
        if mode == "box_eval":
            boxes.append([x1, y1, x2, y2])
        else:
            j = rng.uniform(-0.1, 0.1, 4) * np.array([w, h, w, h])
            boxes.append([x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3]])
        n = int(rng.integers(1, 4))
        pick = rng.integers(0, len(xs), n)
        pts = np.stack([xs[pick] + 0.5, ys[pick] + 0.5], 1)
        coords.append(np.concatenate([pts, np.zeros((3 - n, 2))], 0))
        labels.append(np.concatenate([np.ones(n), -np.ones(3 - n)]))  # -1 = padding point
    b = seg.model_boxes(torch.tensor(np.array(boxes), dtype=torch.float32), hw)
    c = seg.transform.apply_coords_torch(torch.tensor(np.array(coords), dtype=torch.float32), hw)
    lab = torch.tensor(np.array(labels), dtype=torch.int64)
    if mode in ("box", "box_eval"):
        return b, None
    if mode == "points":
        return None, (c, lab)
    return b, (c, lab)


def make_scene_batch(seed: int, split: str, seg: SamSegmenter, k: int, mode: str | None = None) -> SceneBatch:
    """Render one scene at SAM_FRAME_SIZE and pick up to k of its objects as prompts."""
    rng = _rng(seed, split)
    objs, _ = sample_scene(rng, split)
    frame = render_frame(objs, SAM_FRAME_SIZE, int(rng.integers(8)))
    masks = [o.mask for o in frame.objects if o.mask.sum() >= 12]
    order = rng.permutation(len(masks))[:k]
    masks = [masks[i] for i in order]
    mode = mode or str(rng.choice(["box", "points", "both"], p=[0.45, 0.3, 0.25]))
    hw = frame.image.shape[:2]
    boxes, points = _prompts(masks, rng, mode, seg, hw)
    image, input_size = seg.preprocess(frame.image)
    return SceneBatch(image, input_size, torch.tensor(np.stack(masks), dtype=torch.float32), boxes, points)


def decode(seg: SamSegmenter, feats: torch.Tensor, sb: SceneBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """-> mask logits (K, H, W) at the frame's resolution, predicted IoU (K,)."""
    pe = seg.sam.prompt_encoder
    sparse, dense = pe(points=sb.points, boxes=sb.boxes, masks=None)
    low, iou = seg.sam.mask_decoder(
        image_embeddings=feats[None],
        image_pe=pe.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    s = seg.image_size
    up = F.interpolate(low, (s, s), mode="bilinear", align_corners=False)
    h, w = sb.input_size
    logits = up[:, 0, :h, :w]
    if logits.shape[-2:] != sb.masks.shape[-2:]:
        logits = F.interpolate(logits[:, None], sb.masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return logits, iou[:, 0]


def mask_ious(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    gt = masks > 0.5
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float().clamp(min=1)
    return inter / union


@torch.no_grad()
def evaluate(seg: SamSegmenter, n: int) -> dict[str, float]:
    """Mean mask IoU on fresh val scenes, per prompt type (exact box, points)."""
    seg.eval()
    out = {}
    for mode in ("box_eval", "points"):
        ious = []
        for i in range(n):
            sb = make_scene_batch(10_000_000 + i, "val", seg, 4, mode)
            feats = seg.sam.image_encoder(sb.image[None])[0]
            logits, _ = decode(seg, feats, sb)
            ious.append(mask_ious(logits, sb.masks))
        out[f"miou_{mode.replace('_eval', '')}"] = float(torch.cat(ious).mean())
    seg.train()
    return out


def main(argv: list[str] | None = None) -> None:
    cfg = SamPretrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(cfg).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    cfg = SamPretrainConfig(**vars(parser.parse_args(argv)))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    log = setup_logging(out, "pretrain_sam")

    seg = SamSegmenter(TINY_SAM).train()
    opt = torch.optim.AdamW(seg.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = TimeBudgetSchedule(opt, cfg.minutes * 60, cfg.warmup_steps)
    sched.exclude_stopped_time()
    seeds = SeedStream(cfg.images_per_step, offset=cfg.seed * 1_000_000_000)
    ckpt_dir = out / "checkpoints"
    step = resume_if_possible(ckpt_dir, seg, opt, sched, seeds, cfg.minutes * 60, log)
    log.info(f"tiny SAM {sum(p.numel() for p in seg.parameters()) / 1e6:.2f} M params, config {cfg}")
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []
    last_ckpt = last_eval = time.monotonic()
    t_log, losses = time.monotonic(), []
    while not sched.done:
        batch = [make_scene_batch(s, "train", seg, cfg.prompts_per_image) for s in seeds.next()]
        sched.tick()
        feats = seg.sam.image_encoder(torch.stack([b.image for b in batch]))
        loss = 0.0
        for f, sb in zip(feats, batch, strict=False):
            logits, iou_pred = decode(seg, f, sb)
            bce = F.binary_cross_entropy_with_logits(logits, sb.masks)
            dice = torch.stack([dice_loss(lg, m) for lg, m in zip(logits, sb.masks, strict=False)]).mean()
            iou_mse = F.mse_loss(iou_pred, mask_ious(logits.detach(), sb.masks))
            loss = loss + (bce + dice + iou_mse) / len(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(seg.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        now = time.monotonic()
        if now - t_log > 60:
            log.info(
                f"step {step} loss {np.mean(losses):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"spent {sched.elapsed / 60:.1f}/{cfg.minutes:.0f} min"
            )
            t_log, losses = now, []
        if now - last_eval > cfg.eval_minutes * 60 or sched.done:
            metrics = evaluate(seg, cfg.eval_images)
            history.append({"step": step, "minutes": round(sched.elapsed / 60, 2), **metrics})
            (out / "history.json").write_text(json.dumps(history, indent=1))
            log.info(f"eval step {step}: {metrics}")
            last_eval = time.monotonic()
            sched.pause()
        if now - last_ckpt > cfg.checkpoint_minutes * 60 or sched.done:
            save_checkpoint(ckpt_dir, step, seg, opt, sched, seeds, asdict(cfg))
            save_file({k: v.contiguous() for k, v in seg.sam.state_dict().items()}, str(out / "sam.safetensors"))
            (out / "sam_config.json").write_text(json.dumps(TINY_SAM.to_dict(), indent=1))
            last_ckpt = time.monotonic()
            sched.pause()
    log.info(f"done at step {step}; weights in {out / 'sam.safetensors'}")


if __name__ == "__main__":
    main()
