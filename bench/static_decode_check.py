"""The static-cache and CUDA-graph decode steps against the dynamic cache on one device, with lens-tiny.

    python -m bench.static_decode_check --device cuda --out DIR   # on a GPU: graphs are captured
    python -m bench.static_decode_check --device cpu --out DIR    # graph requested, runs eagerly

Per precision (fp32, and bf16 on CUDA) and ``PipelineConfig.decode`` ("dynamic", "static",
"graph"): ``Pipeline.segment`` on fresh 640x480 val scenes of the synthetic world, each from
an empty speculative drafter, then again with the drafter that saw the answer (drafted tokens
checked in one multi-token step). Reports whether every answer and mask equals the dynamic
cache's, the graph's status, and the median ``generate`` and ``segment`` times. The test suite
proves the equality on the CPU (test/model/test_static_decode.py); this is the same check
where the graph is really captured. Exit status 1 when an answer differs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from lens_ros.model.decoding import GenerationSettings
from lens_ros.model.pipeline import Pipeline, PipelineConfig
from lens_ros.model.speculative import NgramDrafter

MODES = ("dynamic", "static", "graph")


def run(pipe: Pipeline, samples, decode: str) -> tuple[list[tuple[str, np.ndarray]], list[float], list[float]]:
    """(answer, mask) per scene and drafter state; generate ms and segment ms of each call."""
    pipe.config = pipe.config.replace(decode=decode)
    answers, generate_ms, total_ms = [], [], []
    for sample in samples:
        pipe.model.decoder.drafter = NgramDrafter()
        for _ in range(2):  # empty drafter, then the drafter that saw this answer
            pipe.clear_cache()
            result, _ = pipe.segment(sample.image, sample.expression)
            answers.append((result.answer, np.asarray(result.masks).astype(bool)))
            generate_ms.append(result.timings.generate_ms)
            total_ms.append(result.timings.total_ms)
    return answers, generate_ms, total_ms


def check(device: str, count: int) -> dict:
    from lens_training.data.specs import build_dataset

    data = build_dataset(f"synthetic:val:{count}:640x480")
    samples = [data[i] for i in range(count)]
    precisions = ("float32", "bfloat16") if torch.device(device).type == "cuda" else ("float32",)
    rows, differ = [], 0
    for dtype in precisions:
        pipe = Pipeline.from_pretrained("lens-tiny", device=device, dtype=dtype, config=PipelineConfig())
        run(pipe, samples[:1], "dynamic")  # warm-up
        reference = None
        for decode in MODES:
            run(pipe, samples[:1], decode)  # warm-up (captures the graphs)
            answers, generate_ms, total_ms = run(pipe, samples, decode)
            reference = answers if reference is None else reference
            same = sum(a == b and np.array_equal(m, n) for (a, m), (b, n) in zip(answers, reference, strict=True))
            differ += len(answers) - same
            status = ""
            if decode == "graph":
                status = pipe.model.decoder.decode_step(GenerationSettings(static_cache=True, cuda_graph=True))
                status = status.graph_status
            rows.append(
                {
                    "dtype": dtype,
                    "decode": decode,
                    "same_as_dynamic": f"{same}/{len(answers)}",
                    "generate_ms_median": statistics.median(generate_ms),
                    "segment_ms_median": statistics.median(total_ms),
                    "graph_status": status,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    note = (
        f"lens-tiny through Pipeline.segment on {device}, {count} synthetic val scenes at 640x480, each "
        "twice (empty drafter, then the drafter that saw the answer). same_as_dynamic: calls whose answer "
        "text and mask equal the dynamic cache's."
    )
    return {"note": note, "columns": list(rows[0]), "rows": rows, "differ": differ}


def main(argv: list[str] | None = None) -> int:
    from bench.results_io import RESULTS_DIR, write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--count", type=int, default=8, help="scenes")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    result = check(args.device, args.count)
    differ = result.pop("differ")
    _, md = write_results({"static decode vs dynamic": result}, f"static-decode-{args.device}", args.out)
    print(md.read_text(), flush=True)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
