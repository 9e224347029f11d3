"""The tiny Qwen2.5-VL of LENS-tiny and its training-only auxiliary heads.

Why auxiliary heads: the vision tower and the LM of Qwen2.5-VL only have rotary
positions, so a model trained from scratch gets almost no signal about *where* things
are from the handful of answer tokens per sample. Dense per-image-token targets fix that
(measured in the project notes): each image token that enters the LM classifies the
colour / shape / size of the object under it, regresses that object's box, and
classifies the box's four coordinates through a linear map followed by **the LM's own
``lm_head`` rows of the number tokens**, which ties image positions to the tokens the
model must later write. The heads are dropped after training; inference is plain
``generate``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lens_ros.model.tiny import tiny_qwen_config
from lens_ros.world.spec import COLORS, SHAPES, SIZES
from lens_training.tiny.config import MLLM_IMAGE_HW, TinyMLLMConfig


def build_tiny_qwen(tokenizer, cfg: TinyMLLMConfig | None = None):
    """Random-init Qwen2_5_VLForConditionalGeneration sized by ``cfg`` (5-channel vision input)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    cfg = cfg or TinyMLLMConfig()
    qcfg = tiny_qwen_config(
        tokenizer,
        text_hidden=cfg.text_hidden,
        text_layers=cfg.text_layers,
        heads=cfg.text_heads,
        kv_heads=cfg.text_kv_heads,
        vision_hidden=cfg.vision_hidden,
        vision_depth=cfg.vision_depth,
        coord_channels=True,
        patch_size=8,
    )
    return Qwen2_5_VLForConditionalGeneration(qcfg)


def number_token_ids(tokenizer, max_value: int) -> torch.Tensor:
    """(max_value + 1,) vocabulary ids of the number tokens "0".."max_value"."""
    ids = tokenizer.convert_tokens_to_ids([str(i) for i in range(max_value + 1)])
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"tokenizer lacks single-token numbers up to {max_value}")
    return torch.tensor(ids, dtype=torch.long)


def soft_number_targets(values: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """(K,) integer targets -> (K, n) Gaussian distributions over 0..n-1."""
    grid = torch.arange(n, dtype=torch.float32, device=values.device)
    logits = -0.5 * ((grid[None, :] - values[:, None].float()) / sigma) ** 2
    return torch.softmax(logits, dim=-1)


def number_ce(logits: torch.Tensor, target: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Half hard cross-entropy, half cross-entropy to a Gaussian over neighbouring values.

    logits: (K, n) over the numbers 0..n-1; target: (K,) ints.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    hard = F.nll_loss(logp, target)
    soft = -(soft_number_targets(target, logits.shape[-1], sigma) * logp).sum(-1).mean()
    return 0.5 * hard + 0.5 * soft


class AuxHeads(nn.Module):
    """Per-image-token heads on the vision features that enter the LM (training only).

    Input: (N, C) image-token features (C = text hidden size). Targets per token: colour /
    shape / size class (0 = no object), the object's box in the MLLM's pixel frame.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.color = nn.Linear(hidden, len(COLORS) + 1)
        self.shape = nn.Linear(hidden, len(SHAPES) + 1)
        self.size = nn.Linear(hidden, len(SIZES) + 1)
        self.box = nn.Linear(hidden, 4)
        self.coord = nn.Linear(hidden, 4 * hidden)  # then the lm_head's number rows

    def forward(
        self,
        feats: torch.Tensor,
        labels: dict[str, torch.Tensor],
        number_rows: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """feats (N, C); labels: color/shape/size (N,) long, box (N, 4) float pixels;
        number_rows: (n, C) lm_head rows of the numbers 0..n-1. Returns named losses."""
        feats = feats.float()
        losses = {
            "aux_color": F.cross_entropy(self.color(feats), labels["color"]),
            "aux_shape": F.cross_entropy(self.shape(feats), labels["shape"]),
            "aux_size": F.cross_entropy(self.size(feats), labels["size"]),
        }
        on = labels["color"] > 0
        if on.any():
            h, w = MLLM_IMAGE_HW
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=feats.device)
            box = labels["box"][on]
            losses["aux_box"] = F.l1_loss(torch.sigmoid(self.box(feats[on])), box / scale)
            proj = self.coord(feats[on]).view(-1, 4, feats.shape[-1])  # (K, 4, C)
            logits = proj @ number_rows.float().T  # (K, 4, n)
            target = box.round().long().clamp(0, number_rows.shape[0] - 1)
            losses["aux_coord"] = number_ce(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        return losses


# New words take the embedding of the world word they stand for (a mug starts as a cup).
WORD_INIT = {
    "mug": "cup",
    "mugs": "cups",
    "block": "cube",
    "blocks": "cubes",
    "box": "brick",
    "boxes": "bricks",
    "sphere": "ball",
    "spheres": "balls",
    "thing": "object",
    "things": "objects",
    "leftmost": "left",
    "rightmost": "right",
}


@torch.no_grad()
def remap_vocabulary(qwen, old_tokenizer, new_tokenizer, init_from: dict[str, str] | None = None) -> int:
    """Resize ``qwen``'s embeddings and LM head from ``old_tokenizer``'s ids to ``new_tokenizer``'s.

    Tokens present in both keep their rows (whatever their new id); a new token's input
    row is copied from ``init_from[token]`` when given, else the mean of the old rows; its
    LM-head row is the old [UNK] row (a token the model has learned never to write), so
    training starts from the old model's behaviour. Returns the number of new tokens.
    """
    init_from = WORD_INIT if init_from is None else init_from
    old_vocab, new_vocab = old_tokenizer.get_vocab(), new_tokenizer.get_vocab()
    emb_old = qwen.get_input_embeddings().weight.detach()
    head_old = qwen.get_output_embeddings().weight.detach()
    n = len(new_tokenizer)
    emb = torch.empty(n, emb_old.shape[1], dtype=emb_old.dtype)
    head = torch.empty(n, head_old.shape[1], dtype=head_old.dtype)
    unk = old_vocab[old_tokenizer.unk_token]
    added = 0
    for token, i in new_vocab.items():
        j = old_vocab.get(token)
        if j is None:
            added += 1
            src = old_vocab.get(init_from.get(token, ""))
            emb[i] = emb_old[src] if src is not None else emb_old.mean(0)
            head[i] = head_old[unk]
        else:
            emb[i], head[i] = emb_old[j], head_old[j]
    new_emb = nn.Embedding(n, emb.shape[1], padding_idx=qwen.get_input_embeddings().padding_idx)
    new_emb.weight.copy_(emb)
    new_head = nn.Linear(head.shape[1], n, bias=False)
    new_head.weight.copy_(head)
    qwen.set_input_embeddings(new_emb)
    qwen.set_output_embeddings(new_head)
    qwen.config.text_config.vocab_size = n
    if hasattr(qwen.config, "vocab_size"):
        qwen.config.vocab_size = n
    return added
