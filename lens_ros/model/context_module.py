"""LENS context module: learned context queries -> one sparse prompt token for the segmenter.

The queries (1, Q, C) are appended after prompt + completion and run through the MLLM
(see ``lens.py``); their last-layer hidden states (B, Q, C) come back here:

    + learned position embedding -> 4 ViT blocks (LayerNorm, multi-head attention,
    MLP ratio 4) -> Conv1d(C, C, kernel=Q) collapsing Q tokens to 1 -> Linear(C, C),
    GELU, Linear(C, D) -> (B, 1, D) sparse prompt token (D = segmenter prompt width).

``normalize_collapsed`` (off for the released LENS weights) puts a parameter-free
LayerNorm between the Conv1d and the projection. Why: the Conv1d sums C*Q inputs, and the
64 query states are strongly correlated, so its output is tens of times larger than its
input; Adam then moves every pre-activation of the first projection by (input size x lr x
C) per step, which drove all of them below zero in a small model (a dead GELU: the
prompt token becomes the last bias, whatever the image and instruction). Normalised, the
first projection sees unit-scale inputs at any width.

Parameter names follow the official LENS modules (``learnable_query``, ``connector``,
``conv_1d``, ``proj_to_sam``) so the released weights map one to one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ContextModuleConfig:
    """hidden_size: the MLLM's width C; out_dim: the segmenter's prompt width D."""

    hidden_size: int = 2048
    num_queries: int = 64
    out_dim: int = 256
    connector_depth: int = 4
    connector_heads: int = 16
    mlp_ratio: float = 4.0
    query_init_std: float = 0.02
    normalize_collapsed: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.connector_heads:
            raise ValueError(f"connector_heads={self.connector_heads} must divide hidden_size={self.hidden_size}")

    def to_dict(self) -> dict:
        return asdict(self)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the activation of the Qwen2-VL vision MLP the connector reuses."""
    return x * torch.sigmoid(1.702 * x)


class ConnectorAttention(nn.Module):
    """Full self-attention over the Q query tokens; fused qkv like the Qwen vision blocks."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, q, c = x.shape
        qkv = self.qkv(x).reshape(b, q, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, q, c))


class ConnectorMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class ConnectorBlock(nn.Module):
    """Pre-norm ViT block (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ConnectorAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConnectorMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Connector(nn.Module):
    """Learned position embedding (zeros at init) + ``depth`` ViT blocks over the queries."""

    def __init__(self, dim: int, seq_len: int, depth: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, seq_len, dim))
        self.blocks = nn.ModuleList(ConnectorBlock(dim, num_heads, mlp_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return x


class ContextModule(nn.Module):
    """Context queries + connector + Conv1d collapse + projection to the segmenter prompt."""

    def __init__(self, config: ContextModuleConfig) -> None:
        super().__init__()
        self.config = config
        c, q = config.hidden_size, config.num_queries
        self.learnable_query = nn.Parameter(torch.empty(1, q, c))
        self.connector = Connector(c, q, config.connector_depth, config.connector_heads, config.mlp_ratio)
        self.conv_1d = nn.Conv1d(c, c, kernel_size=q)
        self.proj_to_sam = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, config.out_dim))
        self.reset_context_parameters()

    def reset_context_parameters(self) -> None:
        """LENS's init: queries and Conv1d weight N(0, 0.02), Conv1d bias 0."""
        nn.init.normal_(self.learnable_query, mean=0.0, std=self.config.query_init_std)
        nn.init.normal_(self.conv_1d.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.conv_1d.bias)

    @property
    def num_queries(self) -> int:
        return self.config.num_queries

    def queries(self, batch: int) -> torch.Tensor:
        """(B, Q, C) query embeddings to append to the MLLM's input embeddings."""
        return self.learnable_query.expand(batch, -1, -1)

    def forward(self, query_hidden: torch.Tensor) -> torch.Tensor:
        """(B, Q, C) last-layer hidden states of the queries -> (B, 1, D) prompt token."""
        if query_hidden.ndim != 3 or query_hidden.shape[1:] != self.learnable_query.shape[1:]:
            raise ValueError(
                f"expected query hidden states (B, {self.num_queries}, {self.config.hidden_size}), "
                f"got {tuple(query_hidden.shape)}"
            )
        x = self.connector(query_hidden)
        x = self.conv_1d(x.transpose(1, 2)).transpose(1, 2)  # (B, 1, C)
        if self.config.normalize_collapsed:
            x = F.layer_norm(x, x.shape[-1:])
        return self.proj_to_sam(x)
