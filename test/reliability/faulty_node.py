"""Run lens_node on a real Pipeline whose MLLM fails with CUDA out-of-memory on chosen calls.

The allocator failure is injected (a CPU machine cannot run out of CUDA memory):
LENS_FAULT_OOM_CALLS="2,3" makes the 2nd and 3rd ``generate`` calls raise
torch.cuda.OutOfMemoryError, exactly what a CUDA allocator raises.
"""

from __future__ import annotations

import os
import sys

import torch


def install() -> None:
    import lens_ros.model.pipeline as pipeline_module

    failing = {int(c) for c in os.environ.get("LENS_FAULT_OOM_CALLS", "").split(",") if c}
    real_from_pretrained = pipeline_module.Pipeline.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        pipe = real_from_pretrained(cls, *args, **kwargs)
        generate = pipe.model.decoder.generate
        calls = {"n": 0}

        def faulty_generate(*a, **k):
            calls["n"] += 1
            if calls["n"] in failing:
                raise torch.cuda.OutOfMemoryError(f"injected allocator failure on generate call {calls['n']}")
            return generate(*a, **k)

        pipe.model.decoder.generate = faulty_generate
        return pipe

    pipeline_module.Pipeline.from_pretrained = classmethod(from_pretrained)


def main() -> int:
    install()
    from lens_ros.node import main as node_main

    return node_main()


if __name__ == "__main__":
    sys.exit(main())
