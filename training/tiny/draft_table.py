"""Starting n-grams for speculative decoding: a bundle's own answers to training scenes.

    python -m lens_training.tiny.draft_table --bundle lens_ros/weights/lens-tiny [--scenes 40]

Runs the bundle's ``Pipeline`` (greedy, as the node does) on ``--scenes`` train-split scenes
of the synthetic world, every kind of expression in turn, and writes the n-grams of its
answers to ``<bundle>/draft_ngrams.json`` (``lens_ros.model.speculative``). The node loads
them with the bundle, so its first instructions are drafted as well as later ones (it keeps
learning from its own answers while it runs). Deterministic for a given bundle.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def write_draft_table(bundle: str | Path, scenes: int = 40, first_seed: int = 50_000) -> Path:
    from lens_ros.model.bundle import DRAFTS_FILE
    from lens_ros.model.pipeline import Pipeline
    from lens_ros.model.speculative import NgramDrafter
    from lens_ros.world.scene import KINDS, generate_sample

    bundle = Path(bundle)
    pipe = Pipeline.from_pretrained(str(bundle))
    drafter = pipe.model.decoder.drafter = NgramDrafter()  # from nothing, not from an older table
    for i in range(scenes):
        sample = generate_sample(first_seed + i, "train", kind=KINDS[i % len(KINDS)])
        pipe.segment(sample.image, sample.expression)  # each (greedy) answer teaches the drafter
    path = drafter.save(bundle / DRAFTS_FILE)
    print(f"{path}: n-grams of {drafter.learned_sequences} answers, {len(drafter.history)} contexts")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, help="model bundle directory (written into)")
    parser.add_argument("--scenes", type=int, default=40, help="training scenes answered")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    write_draft_table(args.bundle, args.scenes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
