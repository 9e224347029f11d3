"""``lens-train stage1|stage2 --config <yaml> [key=value ...]``

Single process:  lens-train stage1 --config config/training/stage1_tiny.yaml max_steps=50
Several GPUs:    torchrun --nproc_per_node 8 -m lens_training.cli stage2 --config config/training/stage2.yaml
3B, sharded:     ... --config config/training/stage2.yaml --config config/training/fsdp_3b.yaml
A run whose out_dir holds a checkpoint resumes from it (``resume=false`` starts over).
"""

from __future__ import annotations

import argparse
import json
import sys

from lens_training.config import Stage1Config, Stage2Config, config_to_dict, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lens-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["stage1", "stage2"])
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="YAML file of the stage's config (flat key: value); repeat to layer files",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=1e-4 max_steps=10")
    args = parser.parse_args(argv)

    cls = Stage1Config if args.stage == "stage1" else Stage2Config
    try:
        cfg = load_config(cls, args.config, args.overrides)
    except (KeyError, ValueError, OSError) as error:
        parser.error(str(error))
    if args.print_config:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    if args.stage == "stage1":
        from lens_training.stage1 import train_stage1

        result = train_stage1(cfg)
    else:
        from lens_training.stage2 import train_stage2

        result = train_stage2(cfg)
    print(
        f"{args.stage}: {result.steps} steps, {result.steps_per_second:.2f} steps/s, final weights in {result.final_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
