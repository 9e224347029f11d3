"""A lean decode step for the Qwen2.5-VL text model (one or a few new tokens).

transformers' text model runs each decode step through its general machinery (keyword
plumbing and deprecation wrappers on every layer, output-recording hooks, the attention
dispatch table, mask construction). For the embedded model on a CPU that machinery costs
more than the arithmetic: a decode step of lens-tiny took 4.5 ms of which ~2.5 ms was
Python around ~0.5 ms of matrix products (bench/results/cpu2-2026-11-26-profile.md).

``LeanDecoder.step`` does the same arithmetic with the same modules' weights and the same
KV cache object (``cache.update``), so the cache that generation leaves behind is the one
the context pass continues: per layer RMSNorm -> q/k/v projections -> rotary embedding ->
append to the cache -> SDPA over the cache (keys masked where the prompt was padded) ->
output projection -> residual -> RMSNorm -> SwiGLU MLP -> residual; then the final norm.
Text tokens have equal positions on the three rotary axes, so the step needs only one
position per token; the rotary tables come from the model's own ``rotary_emb``. Several
new tokens (drafted tokens being checked, ``speculative``; the context queries after
generation) attend causally to each other in the same step.

Fewer, larger operations: q/k/v are one matrix product and gate/up another, on weights
concatenated once and rebuilt when a weight changes (its storage or its in-place version
counter, e.g. after an optimizer step); q and k are rotated together; float32 RMSNorm is
``F.rms_norm``. The concatenated copies cost memory, so they are made only while a
model's copies stay under ``fuse_max_bytes`` (the embedded model: ~7 MB; not the 3B one).

``LeanDecoder.layers_forward`` is the layer arithmetic alone, with the cache update and the
attention handed in, so that ``static_decode.StaticDecoder`` runs the same arithmetic on a
preallocated cache; ``begin``/``finish`` are where a generation's cache is made and handed
back (here: the prefill's own, unchanged).

``LeanDecoder.unsupported`` names the first thing it does not handle (sliding-window
layers, another attention or MLP layout); ``MLLM.generate`` then keeps the transformers
step. Equality with the transformers step is tested on random tiny models
(test/model/test_fast_decode.py); the speed-up is measured by ``bench/run.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LINEARS = (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "up_proj", "down_proj")))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Fused:
    """Concatenated q/k/v and gate/up weights of one layer, rebuilt when a source changes."""

    def __init__(self, layer: nn.Module) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv_sources = [attn.q_proj, attn.k_proj, attn.v_proj]
        self.gu_sources = [mlp.gate_proj, mlp.up_proj]
        self._key: tuple = ()
        self.qkv_w = self.qkv_b = self.gu_w = self.gu_b = None

    def _params(self) -> list[torch.Tensor]:
        out = []
        for lin in (*self.qkv_sources, *self.gu_sources):
            out += [lin.weight] + ([lin.bias] if lin.bias is not None else [])
        return out

    def refresh(self) -> None:
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self._params())
        if key == self._key:
            return
        q, k, v = self.qkv_sources
        gate, up = self.gu_sources
        with torch.no_grad():  # biases are all present or all absent (``LeanDecoder.unsupported``)
            self.qkv_w = torch.cat([q.weight, k.weight, v.weight])
            self.qkv_b = None if q.bias is None else torch.cat([q.bias, k.bias, v.bias])
            self.gu_w = torch.cat([gate.weight, up.weight])
            self.gu_b = None if gate.bias is None else torch.cat([gate.bias, up.bias])
        self._key = key


class LeanDecoder:
    """Decode steps (one or a few new tokens) on a transformers Qwen2/Qwen2.5-VL text model (inference only)."""

    def __init__(self, text_model: nn.Module, fuse_max_bytes: int = 256 << 20) -> None:
        reason = self.unsupported(text_model)
        if reason:
            raise ValueError(f"lean decode step not applicable: {reason}")
        self.text_model = text_model
        self.layers = list(text_model.layers)
        attn = self.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scaling)
        cfg = text_model.config
        self.num_heads = int(cfg.num_attention_heads)
        self.num_kv_heads = int(cfg.num_key_value_heads)
        fused_bytes = sum(
            lin.weight.numel() * lin.weight.element_size()
            for layer in self.layers
            for lin in (
                layer.self_attn.q_proj,
                layer.self_attn.k_proj,
                layer.self_attn.v_proj,
                layer.mlp.gate_proj,
                layer.mlp.up_proj,
            )
        )
        self.fused = [_Fused(layer) for layer in self.layers] if fused_bytes <= fuse_max_bytes else None

    @staticmethod
    def unsupported(text_model: nn.Module) -> str:
        """'' when ``step`` reproduces this text model's decode step, else the reason it does not."""
        cfg = getattr(text_model, "config", None)
        layers = getattr(text_model, "layers", None)
        if cfg is None or layers is None or not hasattr(text_model, "rotary_emb") or not hasattr(text_model, "norm"):
            return "not a transformers decoder-only text model (config, layers, rotary_emb, norm)"
        types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
        if types != {"full_attention"} or getattr(cfg, "use_sliding_window", False):
            return f"layer types {sorted(types)} (only full attention)"
        if getattr(cfg, "hidden_act", "silu") != "silu":
            return f"hidden_act {cfg.hidden_act!r} (only silu)"
        if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager", None):
            return f"attention implementation {cfg._attn_implementation!r}"
        for i, layer in enumerate(layers):
            for part, names in _LINEARS:
                module = getattr(layer, part, None)
                for name in names:
                    if not isinstance(getattr(module, name, None), nn.Linear):
                        return f"layer {i} has no linear {part}.{name}"
            attn, mlp = layer.self_attn, layer.mlp
            for group in ((attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj)):
                if len({lin.bias is None for lin in group}) > 1:
                    return f"layer {i} mixes linears with and without bias"
            for norm in ("input_layernorm", "post_attention_layernorm"):
                if not hasattr(getattr(layer, norm, None), "variance_epsilon"):
                    return f"layer {i}.{norm} is not an RMSNorm"
        return ""

    def rotary(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, T, D) cos and sin for text positions (B, T)."""
        cos, sin = self.text_model.rotary_emb(hidden, positions[None].expand(3, -1, -1))
        return cos.unsqueeze(1), sin.unsqueeze(1)

    @staticmethod
    def _norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and module.weight.dtype == torch.float32:
            return F.rms_norm(x, module.weight.shape, module.weight, module.variance_epsilon)
        return module(x)

    @staticmethod
    def _attention_mask(key_mask: torch.Tensor | None, cached: int, t: int, device) -> torch.Tensor | None:
        """(B|1, 1, T, L + T) bool (True: may attend) for T new tokens after ``cached`` ones."""
        if t == 1:
            return None if key_mask is None else key_mask[:, None, None, :]
        key_pos = torch.arange(cached + t, device=device)
        causal = key_pos[None, :] <= (cached + torch.arange(t, device=device))[:, None]  # (T, L + T)
        if key_mask is None:
            return causal[None, None]
        return key_mask[:, None, None, :] & causal[None, None]

    def begin(self, cache, attention_mask: torch.Tensor, max_new_tokens: int):
        """The cache the steps of one generation write to: the prefill's own (it grows)."""
        return cache

    def finish(self, cache):
        """The cache a ``Generation`` keeps (the context pass continues it)."""
        return cache

    @torch.no_grad()
    def step(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        cache,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """T new tokens through the decoder -> (B, T, C) normed last hidden states; appends to ``cache``.

        embeds: (B, T, C) input embeddings of the new tokens (T = 1: a decode step; T > 1:
        e.g. verifying drafted tokens, each attending causally to the ones before it).
        positions: (B, T) their rotary positions (text: the same on all three axes).
        key_mask: None when every cached position and the new ones are real tokens, else
        (B, L + T) bool, True where a key may be attended (the prompt's attention mask
        followed by ones).
        """
        t = embeds.shape[1]
        cos, sin = self.rotary(embeds, positions)
        mask = self._attention_mask(key_mask, cache.get_seq_length() if t > 1 else 0, t, embeds.device)

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: int) -> torch.Tensor:
            keys, values = cache.update(k, v, idx)
            return F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, scale=self.scaling, enable_gqa=self.num_heads != self.num_kv_heads
            )

        return self.layers_forward(embeds, cos, sin, attend)

    def layers_forward(self, embeds: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend) -> torch.Tensor:
        """The decoder layers and the final norm on (B, T, C) ``embeds`` -> (B, T, C).

        cos, sin: (B, 1, T, D) rotary tables of the new tokens. ``attend(q, k, v, layer)``
        with q (B, H, T, D) and the new k, v (B, KV heads, T, D) stores k, v in the cache and
        returns the attention output (B, H, T, D): how the cache is kept (grown, or a fixed
        buffer written in place, ``static_decode``) is the caller's.
        """
        b, t = embeds.shape[:2]
        hd, nq, nkv = self.head_dim, self.num_heads, self.num_kv_heads
        x = embeds
        for idx, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = self._norm(layer.input_layernorm, x)
            if self.fused is not None:
                fused = self.fused[idx]
                fused.refresh()
                # (B, T, heads * hd) -> (B, heads, T, hd); for one token the transpose is a view
                qkv = F.linear(h, fused.qkv_w, fused.qkv_b).view(b, t, nq + 2 * nkv, hd).transpose(1, 2)
                qk = qkv[:, : nq + nkv]
                qk = qk * cos + _rotate_half(qk) * sin
                q, k, v = qk[:, :nq], qk[:, nq:], qkv[:, nq + nkv :]
            else:
                q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(b, t, nq, hd).transpose(1, 2)
                k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(b, t, nkv, hd).transpose(1, 2)
                v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(b, t, nkv, hd).transpose(1, 2)
                q = q * cos + _rotate_half(q) * sin
                k = k * cos + _rotate_half(k) * sin
            o = attend(q, k, v, idx)
            x = x + F.linear(o.transpose(1, 2).reshape(b, t, nq * hd), attn.o_proj.weight, attn.o_proj.bias)
            h = self._norm(layer.post_attention_layernorm, x)
            if self.fused is not None:
                gate, up = F.linear(h, fused.gu_w, fused.gu_b).chunk(2, dim=-1)
            else:
                gate = F.linear(h, mlp.gate_proj.weight, mlp.gate_proj.bias)
                up = F.linear(h, mlp.up_proj.weight, mlp.up_proj.bias)
            x = x + F.linear(F.silu(gate) * up, mlp.down_proj.weight, mlp.down_proj.bias)
        return self._norm(self.text_model.norm, x)
