"""Where the time of one ``Pipeline.segment`` call goes (lens-tiny by default, CPU).

    python -m bench.profile_segment [--model lens-tiny] [--repeats 8] [--threads 0] [--no-write]

Frames: ``synthetic:val:8:640x480`` (its instructions too); the embedding cache is cleared
before every call, so each call runs the image encoder like a new frame does.

1. The split, from ``repeats`` timed calls (medians): preprocessing, MLLM prefill (vision
   tower + embeddings, rope index, decoder layers on the prompt), the decode loop (total and
   per decoder step), context pass, segmenter encoder and decoder, postprocessing (what is
   left of ``Timings.total_ms``: parsing, thresholding, the result). The MLLM phases are
   measured by wrapping the pieces ``MLLM.generate`` calls (this script only).
2. The top costs by self CPU time under ``torch.profiler`` over ``repeats`` calls: aten
   operators, and the wrapped regions, whose self time is the Python outside any operator
   (for "MLLM decode step (decoder layers)": the lean step's Python, or transformers'
   per-layer Python where the lean step does not apply).

Prints both tables and writes them with ``bench.results_io`` to
bench/results/<machine>-<date>-profile.{md,json}.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from lens_ros.model import decoding as decoding_module
from lens_ros.model.pipeline import Pipeline

DATA = "synthetic:val:8:640x480"


class Regions:
    """Wraps methods so each call is a ``record_function`` range; wall time, calls and the
    last call's end time are kept per region."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.generating = False

    def reset(self) -> None:
        self.ms.clear()
        self.calls.clear()
        self.started.clear()
        self.ended.clear()

    def wrap(self, owner, attr: str, name) -> None:
        """``name``: a string, or ``f(*args, **kwargs) -> str`` choosing the region per call."""
        original = getattr(owner, attr)

        @functools.wraps(original)
        def wrapped(*args, **kwargs):
            region = name(*args, **kwargs) if callable(name) else name
            start = time.perf_counter()
            self.started.setdefault(region, start)
            with record_function(region):
                out = original(*args, **kwargs)
            end = time.perf_counter()
            self.ms[region] += (end - start) * 1000
            self.calls[region] += 1
            self.ended[region] = end
            return out

        setattr(owner, attr, wrapped)


GENERATE = "Decoder.generate"
PREFILL = "MLLM prefill: decoder layers on the prompt"
DECODE = "MLLM decode step (decoder layers)"
CONTEXT_LAYERS = "context pass: decoder layers on the queries"


def instrument(pipe: Pipeline) -> Regions:
    regions = Regions()
    lens, mllm, decoder = pipe.model, pipe.model.mllm, pipe.model.decoder

    def language_model_region(*_, cache=None, **__) -> str:
        if cache is None:
            return PREFILL
        return DECODE if regions.generating else CONTEXT_LAYERS

    regions.wrap(lens, "prepare", "preprocess: LensModel.prepare (pack, tokenize, SAM resize)")
    regions.wrap(mllm, "embed", "MLLM prefill: vision tower + embeddings")
    regions.wrap(mllm, "position_ids", "MLLM rope index (get_rope_index)")
    regions.wrap(mllm, "run_language_model", language_model_region)
    regions.wrap(mllm.model.lm_head, "forward", "MLLM lm_head")
    regions.wrap(decoding_module, "sample_next_token", "MLLM next token (argmax)")
    regions.wrap(decoder, "_finish", "MLLM finish (cut at EOS, detokenize)")
    regions.wrap(lens, "query_hidden_after_generation", "context pass: queries on the KV cache")
    regions.wrap(lens, "prompt_tokens", "context: connector + projection")
    regions.wrap(pipe.segmenter, "encode", "segmenter image encoder")
    regions.wrap(pipe, "_decode", "segmenter decoder")
    regions.wrap(pipe, "_result", "postprocess: threshold, mask box, result")
    generate = decoder.generate

    @functools.wraps(generate)
    def generating(*args, **kwargs):
        regions.generating = True
        try:
            return generate(*args, **kwargs)
        finally:
            regions.generating = False

    decoder.generate = generating
    regions.wrap(decoder, "generate", GENERATE)
    lean = decoder.lean()  # decode steps (and the context pass) go through it where it applies
    if lean is not None:
        regions.wrap(lean, "step", lambda *_, **__: DECODE if regions.generating else CONTEXT_LAYERS)
    return regions


def drafts_after_answers(pipe: Pipeline, count: int = 20):
    """A callable that gives the pipeline's MLLM the drafter state of a node that has answered
    ``count`` other instructions (train-split scenes) on top of its bundle's n-grams: each
    profiled call then starts from it, not from the answers of the calls before it."""
    import copy

    from bench.model_bench import drafts_after_answers as answered

    history = answered(pipe, count)

    def reset() -> None:
        pipe.model.decoder.drafter = copy.deepcopy(history)

    return reset


def split(pipe: Pipeline, regions: Regions, samples, repeats: int, reset_drafts) -> list[dict]:
    """Median ms per phase over ``repeats`` calls."""
    per_call: dict[str, list[float]] = defaultdict(list)
    for i in range(repeats):
        s = samples[i % len(samples)]
        pipe.clear_cache()
        reset_drafts()
        regions.reset()
        t = pipe.segment(s.image, s.expression)[0].timings
        steps = regions.calls[DECODE]
        # prefill: generate() entered -> prompt through the decoder layers; decode: the rest of it
        prefill = (regions.ended[PREFILL] - regions.started[GENERATE]) * 1000
        decode = (regions.ended[GENERATE] - regions.ended[PREFILL]) * 1000
        post = t.total_ms - (t.preprocess_ms + t.generate_ms + t.context_ms + t.encoder_ms + t.decoder_ms)
        values = {
            "preprocessing": t.preprocess_ms,
            "MLLM prefill (vision tower, rope index, prompt through the decoder)": prefill,
            "MLLM decode loop (all tokens, incl. detokenize)": decode,
            "MLLM decode, per decoder step": decode / max(1, steps),
            "context pass (queries on the KV cache + connector)": t.context_ms,
            "segmenter image encoder": t.encoder_ms,
            "segmenter decoder": t.decoder_ms,
            "postprocessing (parse, threshold, result)": post,
            "total segment()": t.total_ms,
        }
        for k, v in values.items():
            per_call[k].append(v)
        per_call["generated tokens"].append(t.num_generated_tokens)
        per_call["decoder steps"].append(steps)
    total = statistics.median(per_call["total segment()"])
    rows = []
    for k, v in per_call.items():
        med = statistics.median(v)
        if k in ("generated tokens", "decoder steps"):
            rows.append({"part": k, "value": med})
        elif k == "MLLM decode, per decoder step":
            rows.append({"part": k, "ms": med})
        else:
            rows.append({"part": k, "ms": med, "share": f"{100 * med / total:.1f}%"})
    return rows


def top_costs(pipe: Pipeline, samples, repeats: int, top: int, reset_drafts) -> tuple[list[dict], float]:
    """Top ``top`` entries by self CPU time over ``repeats`` profiled calls (ms per call)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(repeats):
            s = samples[i % len(samples)]
            pipe.clear_cache()
            reset_drafts()
            with record_function("Pipeline.segment (outside the regions)"):
                pipe.segment(s.image, s.expression)
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    rows = [
        {
            "name": e.key,
            "kind": "region (Python)" if not e.key.startswith("aten::") else "operator",
            "calls_per_segment": e.count / repeats,
            "self_ms_per_segment": e.self_cpu_time_total / 1000 / repeats,
            "share": f"{100 * e.self_cpu_time_total / total_us:.1f}%",
        }
        for e in ranked
    ]
    return rows, total_us / 1000 / repeats


def main(argv: list[str] | None = None) -> int:
    from bench.results_io import write_results
    from lens_training.data.specs import build_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lens-tiny")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = build_dataset(DATA)
    samples = [data[i] for i in range(len(data))]
    pipe = Pipeline.from_pretrained(args.model)
    for s in samples[:2]:  # warm-up: lazy initialisation, first allocations
        pipe.clear_cache()
        pipe.segment(s.image, s.expression)
    reset_drafts = drafts_after_answers(pipe)
    regions = instrument(pipe)
    split_rows = split(pipe, regions, samples, args.repeats, reset_drafts)
    top_rows, profiled_ms = top_costs(pipe, samples, args.repeats, args.top, reset_drafts)
    result = {
        "note": (
            f"Model {args.model}, device {pipe.device} {str(pipe.dtype).replace('torch.', '')}, "
            f"torch threads {torch.get_num_threads()}; frames {DATA} (640x480); before each call the "
            f"embedding cache is cleared and the speculative decoder starts from the bundle's n-grams and 20 "
            f"earlier answers (other scenes); {args.repeats} calls per table. Self CPU under torch.profiler sums to "
            f"{profiled_ms:.0f} ms per call (profiler overhead included)."
        ),
        "sections": {
            "split (median ms per call)": {"columns": ["part", "ms", "share", "value"], "rows": split_rows},
            "top costs by self CPU time (torch.profiler)": {
                "columns": ["name", "kind", "calls_per_segment", "self_ms_per_segment", "share"],
                "rows": top_rows,
            },
        },
    }
    from bench.results_io import markdown_table

    print(result["note"])
    for title, table in result["sections"].items():
        print(f"\n## {title}\n\n{markdown_table(table['rows'], table['columns'])}")
    if not args.no_write:
        json_path, md_path = write_results({"segment profile": result}, "profile")
        print(f"\nresults: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
