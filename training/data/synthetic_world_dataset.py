"""The synthetic world as a map-style data set of ``training.data.dataset.Sample``.

Sample i of a split is ``generate_sample(offset + i, split)``, so a data set is a fixed,
reproducible list that costs nothing to store; ``meta`` carries the expression kind,
template and whether the target's colour-shape pair or the phrasing is held out, which
the evaluation uses for its per-kind tables.
"""

from __future__ import annotations

from training.data.dataset import Sample
from training.data.synthetic_world import Sample as WorldSample
from training.data.synthetic_world import generate_sample
from training.data.synthetic_world_render import BASE_SIZE


def to_dataset_sample(s: WorldSample) -> Sample:
    """Convert a world sample (target mask/box, rationale, labels in meta)."""
    return Sample(
        image=s.image,
        expression=s.expression,
        mask=s.target_mask.copy(),
        box=s.target_box.copy(),
        rationale=s.rationale,
        meta={
            "source": "synthetic_world",
            "split": s.split,
            "seed": s.seed,
            "kind": s.kind,
            "template": s.template,
            "unseen_composition": s.unseen_composition,
            "heldout_template": s.heldout_template,
            "target": s.target_object.name,
            "depth": s.depth,
            "K": s.K,
        },
    )


class SyntheticWorldDataset:
    """``length`` samples of one split at one resolution, generated on access.

    size: (W, H) of the rendered frames; kind: fix the expression kind (None = mixed).
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 1000,
        size: tuple[int, int] = BASE_SIZE,
        offset: int = 0,
        kind: str | None = None,
    ):
        self.split, self.length, self.size, self.offset, self.kind = split, length, size, offset, kind

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return to_dataset_sample(generate_sample(self.offset + index, self.split, self.size, self.kind))
