"""Data specs: one string names the data of a run or an evaluation.

    synthetic:<split>[:<length>[:<W>x<H>]]     synthetic:train, synthetic:heldout:500:160x120
    refcoco:<root>:<split>                     refer layout under <root> (also refcoco+, refcocog)
    reasonseg:<root>:<split>                   ReasonSeg release under <root>

Several specs joined by "," form one training set (concatenated) or, for evaluation,
one table row per spec.
"""

from __future__ import annotations

from torch.utils.data import ConcatDataset

from lens_training.data.dataset import SegmentationDataset

REFER_SETS = ("refcoco", "refcoco+", "refcocog", "refclef")


def split_specs(spec: str) -> list[str]:
    return [part.strip() for part in spec.split(",") if part.strip()]


def build_one(spec: str) -> SegmentationDataset:
    kind, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    if kind == "synthetic":
        from lens_training.data.synthetic_dataset import SyntheticWorldDataset

        split = args[0] if args else "train"
        length = int(args[1]) if len(args) > 1 else (100_000 if split == "train" else 500)
        size = tuple(int(v) for v in args[2].lower().split("x")) if len(args) > 2 else (160, 120)
        return SyntheticWorldDataset(split, length, size)  # type: ignore[arg-type]
    if kind in REFER_SETS:
        from lens_training.data.refer import RefDataset

        if len(args) != 2:
            raise ValueError(f"{spec!r}: expected {kind}:<root>:<split>")
        return RefDataset(args[0], kind, split=args[1])
    if kind == "reasonseg":
        from lens_training.data.reasonseg import ReasonSegDataset

        if len(args) != 2:
            raise ValueError(f"{spec!r}: expected reasonseg:<root>:<split>")
        return ReasonSegDataset(args[0], args[1])
    raise ValueError(f"unknown data spec {spec!r}: kinds are synthetic, {', '.join(REFER_SETS)}, reasonseg")


def build_dataset(spec: str) -> SegmentationDataset:
    """A spec, or several joined by ",", as one data set."""
    parts = [build_one(s) for s in split_specs(spec)]
    if not parts:
        raise ValueError("empty data spec")
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)  # type: ignore[return-value]
