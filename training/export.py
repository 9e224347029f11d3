"""Final weights -> the model bundle that ``lens-predict`` and the node load.

    python -m training.export --run runs/stage2 --model <base bundle or tiny-random> --out weights/lens-tiny

A bundle is written by ``lens_ros.model.bundle.save_bundle`` (config JSON + safetensors +
tokenizer files). LoRA adapters are merged into their base weights first, on a copy.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

from torch import nn

from training.model_setup import has_lora, load_init_weights, load_lens_model, merge_lora


def export_bundle(model: nn.Module, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a LensModel, LoRA merged on a copy when present) as a bundle."""
    from lens_ros.model.bundle import save_bundle

    if has_lora(model):
        model = copy.deepcopy(model)
        merge_lora(model)
    return save_bundle(out_dir, model, extra=extra)


def export_run(run_dir: str | Path, base_model: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Bundle from a run's trained weights (<run>/final, or a checkpoint directory) on top of
    the base model the run started from (LoRA runs: export from the run's own final bundle)."""
    run_dir = Path(run_dir)
    source = run_dir / "final" if (run_dir / "final").is_dir() else run_dir
    model = load_lens_model(base_model, seed)
    load_init_weights(model, source)
    return export_bundle(model, out_dir, extra={"source": str(source)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run directory (its final/) or a checkpoint directory")
    parser.add_argument("--model", required=True, help="base model: bundle directory or tiny-random")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of a tiny-random base")
    args = parser.parse_args(argv)
    path = export_run(args.run, args.model, args.out, args.seed)
    print(f"bundle written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
