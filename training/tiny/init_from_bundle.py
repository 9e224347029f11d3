"""Starting weights from a bundle: its MLLM and tokenizer as a pre-training start, its SAM.

    python -m lens_training.tiny.init_from_bundle --bundle lens_ros/weights/lens-tiny --work runs/tiny

writes <work>/init/qwen (``from_pretrained`` directory, float32), <work>/init/tokenizer and
<work>/sam/sam.safetensors, so ``pretrain_mllm --init-qwen <work>/init/qwen`` continues the
bundle's MLLM (its vocabulary remapped to the current tokenizer) and ``build_embedded --skip
pretrain`` assembles a base with the bundle's segmenter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def export_parts(bundle: str | Path, work: str | Path) -> Path:
    from safetensors.torch import save_file

    from lens_ros.model.bundle import load_bundle

    work = Path(work)
    model = load_bundle(bundle, dtype=torch.float32)
    init = work / "init"
    model.mllm.model.save_pretrained(str(init / "qwen"), safe_serialization=True)
    model.tokenizer.save_pretrained(str(init / "tokenizer"))
    (work / "sam").mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.segmenter.sam.state_dict().items()}
    save_file(state, str(work / "sam" / "sam.safetensors"))
    return init


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="lens_ros/weights/lens-tiny")
    parser.add_argument("--work", default="runs/tiny")
    args = parser.parse_args(argv)
    print(export_parts(args.bundle, args.work))


if __name__ == "__main__":
    main()
