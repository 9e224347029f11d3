"""Run lens_node with an oracle in place of the model (node behaviour tests only).

The oracle knows the synthetic scene the sim camera renders when it is frozen
(speed 0): it returns the ground-truth mask of the object whose name ("large green
cup") or index ("object 2") the instruction contains. Scene from the environment:
LENS_ORACLE_SCENE="seed,t,width,height". Calls are counted in the result's answer
("segment #n" / "track #n") so tests can see which path ran. While reasoning it reports its
rationale word by word to ``on_rationale`` (as the MLLM does while decoding), so the node's
``~/rationale_stream`` can be tested without a model. The node runs it through its
``pipeline_factory`` argument: the same node code, another pipeline.
"""

from __future__ import annotations

import os
import time

import numpy as np

from lens_ros.model.pipeline import PipelineConfig
from lens_ros.model.types import BadInputError, SegmentationResult, Timings


class OraclePipeline:
    def __init__(self, seed: int, t: float, size: tuple[int, int]) -> None:
        from lens_ros.world.scene import SceneAnimator

        self.frame = SceneAnimator(seed, size=size).frame(t)
        self.calls = {"segment": 0, "track": 0}
        self.config = PipelineConfig()
        self.device, self.dtype = "cpu", "float32"
        self.draft_stats = None  # no speculative drafter

    @classmethod
    def from_pretrained(cls, model, device="cpu", dtype="float32", segmenter_backend="torch", **kwargs):
        seed, t, w, h = os.environ["LENS_ORACLE_SCENE"].split(",")
        return cls(int(seed), float(t), (int(w), int(h)))

    def _result(self, image: np.ndarray, index: int, kind: str) -> SegmentationResult:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BadInputError(f"expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        self.calls[kind] += 1
        if index < 0 or image.shape[:2] != self.frame.image.shape[:2]:
            masks, boxes, scores, labels = (
                np.zeros((0,) + image.shape[:2], bool),
                np.zeros((0, 4), np.float32),
                np.zeros(0, np.float32),
                [],
            )
        else:
            obj = self.frame.objects[index]
            masks, boxes, scores, labels = (obj.mask[None], obj.box[None], np.ones(1, np.float32), [obj.name])
        timings = Timings(total_ms=1.0, generate_ms=0.0 if kind == "track" else 0.5)
        return SegmentationResult(
            masks,
            boxes,
            scores,
            labels,
            rationale=f"oracle {kind}",
            answer=f"{kind} #{self.calls[kind]}",
            tracked=kind == "track",
            timings=timings,
        )

    def segment(self, image: np.ndarray, instruction: str, on_rationale=None):
        index = -1
        for i, obj in enumerate(self.frame.objects):
            if obj.name in instruction or f"object {i}" in instruction:
                index = i
        result = self._result(image, index, "segment")
        if on_rationale is not None:
            words = result.rationale.split()
            for n in range(1, len(words) + 1):
                on_rationale(" ".join(words[:n]))
                time.sleep(0.06)  # longer than the node's default stream period (0.05 s)
        return result, {"index": index}

    def track(self, image: np.ndarray, state):
        time.sleep(0.001)
        return self._result(image, state["index"], "track"), state


def main() -> int:
    from lens_ros.node import main as node_main

    return node_main(pipeline_factory=OraclePipeline.from_pretrained)


if __name__ == "__main__":
    raise SystemExit(main())
