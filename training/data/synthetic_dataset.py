"""The synthetic tabletop world (lens_ros/world/scene.py) as a ``Sample`` data set.

Sample i of a split is ``generate_sample(seed_offset + i, split, size)``: a pure function
of its index, so any order, any number of workers and any resume point see the same data.
"""

from __future__ import annotations

from lens_training.data.dataset import Sample


class SyntheticWorldDataset:
    """``length`` samples of one split ("train", "val", "heldout") at ``size`` = (W, H)."""

    def __init__(
        self,
        split: str = "train",
        length: int = 100_000,
        size: tuple[int, int] = (160, 120),
        seed_offset: int = 0,
        kind: str | None = None,
        paraphrase_share: float | None = None,
    ):
        self.split, self.length, self.size = split, length, (int(size[0]), int(size[1]))
        self.seed_offset, self.kind, self.paraphrase_share = seed_offset, kind, paraphrase_share

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        from lens_ros.world.scene import generate_sample

        if not 0 <= index < self.length:
            raise IndexError(index)
        s = generate_sample(
            self.seed_offset + index, self.split, self.size, kind=self.kind, paraphrase_share=self.paraphrase_share
        )
        target = s.target_object
        return Sample(
            image=s.image,
            expression=s.expression,
            mask=target.mask.astype(bool),
            box=target.box.astype("float32"),
            rationale=s.rationale,
            meta={
                "source": "synthetic",
                "split": s.split,
                "seed": s.seed,
                "kind": s.kind,
                "unseen_composition": bool(target.unseen_composition),
                "paraphrased": bool(s.extra.get("paraphrased", False)),
                "objects": [(o.name, [float(v) for v in o.box]) for o in s.objects],
            },
        )
