"""Decode steps on a preallocated KV cache, replayable as a CUDA graph (gpt-fast's recipe).

A decode step of the 3B model on a GPU is bound by kernel launches, not by memory: each of
its ~36 layers launches a dozen small kernels from Python, and the GPU waits for the host.
gpt-fast reaches most of the memory bandwidth at batch 1 by giving the step fixed shapes and
fixed addresses, so that the whole step can be recorded once and replayed as one CUDA graph:

- ``StaticCache``: every layer's keys and values in one preallocated (B, KV heads, capacity, D)
  buffer each, written in place at the new tokens' slots (``index_copy_``); the prefill's
  cache is copied in once (``StaticDecoder.begin``). ``valid`` (B, capacity) holds the
  prompt's padding mask followed by ones; a step attends over the whole buffer with
  ``valid & (slot <= slot of the query)``, so the shapes never change with the length and
  slots past the length (never written, or dropped by ``crop``) are never read.
- The rotary tables of every position the cache can hold are computed once per buffer
  (text tokens have equal positions on the three mRoPE axes): a step gathers its rows by
  position, on the device, from a tensor.
- ``StaticDecoder.step`` reads its inputs from tensors only (embeddings, positions, the
  cache length as a device scalar) and writes its output to one tensor; the layer
  arithmetic is ``fast_decode.LeanDecoder.layers_forward``, so it is the lean step's.
  With ``cuda_graph`` on a CUDA device, the step for each number of new tokens T (1, or
  1 + drafted tokens) is captured on first use and replayed after copying the inputs into
  the graph's buffers; without CUDA, or when a capture fails, it runs eagerly (the same
  kernels on the same buffers) and ``graph_status`` says why (logged once).

``finish`` hands the generation a transformers ``DynamicCache`` copy of the filled part, so the
context pass and everything else that continues a ``Generation``'s cache sees what the
dynamic path leaves. The static path gives the dynamic lean step's greedy tokens (tested on
tiny random models in test/model/test_static_decode.py); its speed is measured by
``bench/gpu_bench.py``.

Graphs record addresses: they are dropped when the buffers are reallocated (a longer prompt,
another batch size) or a weight tensor of the text model is replaced (in-place updates are
seen). The graph path does not use ``LeanDecoder``'s concatenated q/k/v weights, whose copies
are rebuilt in Python when a weight changes.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from lens_ros.model.fast_decode import LeanDecoder

log = logging.getLogger(__name__)

DECODE_MODES = ("auto", "dynamic", "static", "graph")
CAPACITY_STEP = 256  # buffers are sized in steps of this many tokens, so most prompts reuse them


def resolve_decode(decode: str, device: torch.device | str) -> str:
    """The decode mode to run: "dynamic", "static" or "graph"; "auto" is "dynamic" everywhere.

    On a CPU the static cache only adds the attention over the buffer's unused tail and the
    copies in and out; a CUDA graph needs a CUDA device. "auto" becomes "graph" on CUDA once
    bench/gpu_bench.py has measured it there (static_decode_check: same answers and masks,
    decode time against the bandwidth floor); until then the graph is opt-in.
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
    if decode == "auto":
        return "dynamic"
    return decode


class StaticCache:
    """Fixed key/value buffers of every layer, filled up to ``length`` (see the module docstring).

    keys, values: per layer (B, KV heads, capacity, D); valid: (B, capacity) bool;
    length_t: the length as a device scalar (what a captured step reads).
    """

    def __init__(self, layers: int, shape: tuple[int, int, int, int], dtype: torch.dtype, device) -> None:
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.valid = torch.ones(shape[0], shape[2], dtype=torch.bool, device=device)
        self.length_t = torch.zeros((), dtype=torch.long, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens: int) -> None:
        """Drop the last ``-tokens`` tokens (negative, as transformers' ``crop``); their slots are rewritten."""
        if tokens > 0 or -tokens > self.length:
            raise ValueError(f"crop takes a negative count of at most {self.length} tokens, got {tokens}")
        self.length += tokens

    def fill(self, dynamic, attention_mask: torch.Tensor) -> None:
        """Copy a transformers cache (the prefill's) in; ``attention_mask`` (B, L) marks real prompt tokens."""
        length = dynamic.get_seq_length()
        for idx, layer in enumerate(dynamic.layers):
            self.keys[idx][:, :, :length].copy_(layer.keys)
            self.values[idx][:, :, :length].copy_(layer.values)
        self.valid.fill_(True)
        self.valid[:, :length].copy_(attention_mask.bool())
        self.length = length

    def to_dynamic(self):
        """A transformers ``DynamicCache`` holding copies of the filled part."""
        from transformers import DynamicCache

        out = DynamicCache()
        for idx, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            out.update(keys[:, :, : self.length].clone(), values[:, :, : self.length].clone(), idx)
        return out


class _Graph:
    """A captured step for T new tokens: its input buffers, the graph and its output."""

    def __init__(self, embeds: torch.Tensor, positions: torch.Tensor) -> None:
        self.embeds = embeds
        self.positions = positions
        self.graph = torch.cuda.CUDAGraph()
        self.out: torch.Tensor | None = None


class StaticDecoder:
    """Decode steps on a ``StaticCache``; interchangeable with ``LeanDecoder`` in ``Decoder.generate``."""

    def __init__(self, lean: LeanDecoder, cuda_graph: bool = False) -> None:
        # A graph replays the weights' addresses: use the modules' own weights, not copies.
        self.source = lean  # the decoder's lean step this one was made from
        self.lean = LeanDecoder(lean.text_model, fuse_max_bytes=0) if cuda_graph else lean
        self.text_model = lean.text_model
        self.cuda_graph = cuda_graph
        self.graph_status = "off" if not cuda_graph else "not captured yet"
        self.captures = 0  # graphs captured since this decoder was made
        self._cache: StaticCache | None = None
        self._graphs: dict[int, _Graph] = {}
        self._weights_key: tuple = ()
        self._cos = self._sin = self._slots = None

    # -- one generation -------------------------------------------------------------------------
    def begin(self, cache, attention_mask: torch.Tensor, max_new_tokens: int) -> StaticCache:
        """The static cache for a generation, holding ``cache`` (the prefill's) and room for the new tokens."""
        length = cache.get_seq_length()
        need = length + max(max_new_tokens, 1)
        first = cache.layers[0].keys
        static = self._cache
        if (
            static is None
            or static.capacity < need
            or static.batch != first.shape[0]
            or static.keys[0].dtype != first.dtype
            or static.keys[0].device != first.device
        ):
            capacity = -(-need // CAPACITY_STEP) * CAPACITY_STEP
            self._graphs.clear()  # they recorded the old buffers' addresses
            self._cache = None
            static = StaticCache(
                len(self.lean.layers), (*first.shape[:2], capacity, first.shape[3]), first.dtype, first.device
            )
            self._rotary_tables(capacity, first)
            self._cache = static
        weights = tuple(p.data_ptr() for p in self.text_model.parameters())
        if weights != self._weights_key:
            self._graphs.clear()
            self._weights_key = weights
        static.fill(cache, attention_mask)
        return static

    def finish(self, cache: StaticCache):
        """The generation's cache as a transformers ``DynamicCache`` (copies: the buffers are reused)."""
        return cache.to_dynamic()

    def _rotary_tables(self, capacity: int, like: torch.Tensor) -> None:
        """cos, sin (capacity, D) of text positions 0..capacity-1, and the slot numbers.

        A text token's rotary position never exceeds its slot (image tokens advance the
        position by less than their count, padding shifts it down), so the tables cover
        every position a step can ask for.
        """
        positions = torch.arange(capacity, device=like.device)[None]
        cos, sin = self.lean.rotary(like.new_zeros(1, 1, 1), positions)  # (1, 1, capacity, D)
        self._cos, self._sin = cos[0, 0], sin[0, 0]
        self._slots = torch.arange(capacity, device=like.device)

    # -- the step -------------------------------------------------------------------------------
    @torch.no_grad()
    def step(
        self, embeds: torch.Tensor, positions: torch.Tensor, cache: StaticCache, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """T new tokens -> (B, T, C) normed last hidden states, written to ``cache`` at its length.

        embeds (B, T, C), positions (B, T) as ``LeanDecoder.step``; ``key_mask`` is not needed
        (the cache holds the prompt's padding since ``begin``) and is ignored.
        """
        t = embeds.shape[1]
        if cache.length + t > cache.capacity:
            raise ValueError(f"static cache holds {cache.capacity} tokens; {cache.length} + {t} do not fit")
        cache.length_t.fill_(cache.length)
        graph = self._graph(cache, embeds, positions) if self.cuda_graph else None
        if graph is None:
            out = self._forward(embeds, positions, cache)
        else:
            graph.embeds.copy_(embeds)
            graph.positions.copy_(positions)
            graph.graph.replay()
            out = graph.out.clone()  # the next replay overwrites the graph's output
        cache.length += t
        return out

    def _forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        """The step from tensors alone (no host reads, fixed shapes for a given T): what a graph records."""
        t = embeds.shape[1]
        cos = self._cos[positions].unsqueeze(1)  # (B, 1, T, D)
        sin = self._sin[positions].unsqueeze(1)
        slots = cache.length_t + self._slots[:t]  # (T,) where the new tokens go
        # (B, 1, T, capacity): a real prompt token or a generated one, not after the query
        mask = cache.valid[:, None, None, :] & (self._slots[None, :] <= slots[:, None])[None, None]
        lean = self.lean
        gqa = lean.num_heads != lean.num_kv_heads

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: int) -> torch.Tensor:
            keys, values = cache.keys[idx], cache.values[idx]
            keys.index_copy_(2, slots, k)
            values.index_copy_(2, slots, v)
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=lean.scaling, enable_gqa=gqa)

        return lean.layers_forward(embeds, cos, sin, attend)

    # -- CUDA graphs ----------------------------------------------------------------------------
    def _graph(self, cache: StaticCache, embeds: torch.Tensor, positions: torch.Tensor) -> _Graph | None:
        """The captured step for this T (captured now if new), or None where it runs eagerly."""
        t = embeds.shape[1]
        if t in self._graphs:
            return self._graphs[t]
        if embeds.device.type != "cuda" or not torch.cuda.is_available():
            self._eager(f"CUDA graphs need a CUDA device, the model is on {embeds.device}")
            return None
        if self.graph_status.startswith("eager"):
            return None  # a capture failed before: do not retry every step
        try:
            graph = self._capture(cache, embeds, positions)
        except Exception as exc:  # noqa: BLE001 - any capture failure leaves the eager step, which is correct
            self._graphs.clear()
            self._eager(f"capture failed ({type(exc).__name__}: {str(exc)[:200]})")
            return None
        self._graphs[t] = graph
        self.captures += 1
        self.graph_status = f"captured for T in {sorted(self._graphs)}"
        return graph

    def _capture(self, cache: StaticCache, embeds: torch.Tensor, positions: torch.Tensor) -> _Graph:
        graph = _Graph(embeds.clone(), positions.clone())
        # Warm-up on a side stream (lazy initialisation of kernels and workspaces happens outside the
        # capture). The warm-up and the capture write the slots this step writes anyway.
        stream = torch.cuda.Stream(device=embeds.device)
        stream.wait_stream(torch.cuda.current_stream(embeds.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._forward(graph.embeds, graph.positions, cache)
        torch.cuda.current_stream(embeds.device).wait_stream(stream)
        # Each graph keeps its own memory pool (a step's intermediates are small), so that
        # replaying them in any order never overwrites another graph's output.
        with torch.cuda.graph(graph.graph):
            graph.out = self._forward(graph.embeds, graph.positions, cache)
        return graph

    def _eager(self, reason: str) -> None:
        status = f"eager: {reason}"
        if status != self.graph_status:
            log.warning("static decode: no CUDA graph, running the step eagerly (%s)", reason)
        self.graph_status = status
