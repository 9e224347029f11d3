"""Final weights -> the model bundle that ``lens-predict`` and the node load.

    python -m lens_training.export --run runs/stage2 --model <base bundle or tiny-random> --out weights/lens-tiny

A bundle is written by ``lens_ros.model.bundle.save_bundle`` (config JSON + safetensors +
tokenizer files). LoRA adapters are merged into their base weights first, on a copy.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from lens_training.model_setup import apply_lora, has_lora, load_lens_model, load_partial_weights, merge_lora


def export_bundle(model: nn.Module, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a LensModel, LoRA merged on a copy when present) as a bundle."""
    from lens_ros.model.bundle import save_bundle

    if has_lora(model):
        model = copy.deepcopy(model)
        merge_lora(model)
    return save_bundle(out_dir, model, extra=extra)


def export_run(run_dir: str | Path, base_model: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Bundle from a run's trained weights (<run>/final, or a checkpoint directory) on top of
    the model the run started from (``base_model``; a stage-2 run's stage-1 bundle).

    LoRA runs (their train_config.json / config.json says lora) get the adapters inserted,
    loaded and merged."""
    run_dir = Path(run_dir)
    source = run_dir / "final" if (run_dir / "final").is_dir() else run_dir
    model = load_lens_model(base_model, seed)
    weights = source / "trainable.safetensors"
    if not weights.is_file():
        weights = source / "model.safetensors"
    run_config = {}
    for name in ("train_config.json", "config.json"):
        if (source / name).is_file():
            run_config = json.loads((source / name).read_text())
            break
    if run_config.get("lora") and run_config.get("train_mllm", True):
        apply_lora(model, run_config["lora_r"], run_config["lora_alpha"], run_config.get("lora_dropout", 0.0))
    load_partial_weights(model, load_file(str(weights)), str(weights))
    return export_bundle(model, out_dir, extra={"source": str(source)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lens_training.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
