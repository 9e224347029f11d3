"""Vocabulary of the synthetic world: colours, shapes, sizes and the held-out compositions.

Kept apart from the renderer and the language generator so that both (and the
tokenizer of the embedded model) read one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lens_ros.world.render import Solid

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 80, 210),
    "yellow": (235, 205, 40),
    "orange": (245, 125, 25),
    "purple": (135, 55, 170),
    "white": (230, 230, 230),
}
SHAPES: tuple[str, ...] = ("cube", "brick", "cylinder", "ball", "cup", "bowl")
PLURALS: dict[str, str] = {
    "cube": "cubes",
    "brick": "bricks",
    "cylinder": "cylinders",
    "ball": "balls",
    "cup": "cups",
    "bowl": "bowls",
    "object": "objects",
}
SIZES: dict[str, float] = {"small": 0.78, "large": 1.18}

# Colour-shape pairs that never appear in the train/val splits: every colour and every
# shape is still seen in training, only these combinations are new.
HELDOUT_COMPOSITIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "cup"),
        ("blue", "ball"),
        ("green", "cube"),
        ("yellow", "cylinder"),
        ("purple", "bowl"),
        ("orange", "brick"),
        ("white", "cylinder"),
    }
)

CONTAINERS = frozenset({"cup", "bowl"})
FLAT_TOPPED = frozenset({"cube", "brick", "cylinder"})
ROLLING = frozenset({"ball"})

TABLE_COLORS: tuple[tuple[float, float, float], ...] = (
    (150, 112, 80),
    (128, 100, 78),
    (120, 120, 118),
    (165, 140, 105),
)


def base_solid(shape: str, scale: float) -> Solid:
    """The solid of a shape at a size scale (metres)."""
    if shape == "cube":
        s = 0.030 * scale
        return Solid("cube", (s, s, 2 * s))
    if shape == "brick":
        return Solid("brick", (0.055 * scale, 0.024 * scale, 0.042 * scale))
    if shape == "cylinder":
        r = 0.027 * scale
        return Solid("cylinder", (r, r, 0.095 * scale))
    if shape == "ball":
        r = 0.034 * scale
        return Solid("ball", (r, r, 2 * r))
    if shape == "cup":
        r = 0.036 * scale
        return Solid("cup", (r, r, 0.085 * scale), wall=0.006 * scale)
    if shape == "bowl":
        r = 0.060 * scale
        return Solid("bowl", (r, r, 0.040 * scale), wall=0.007 * scale)
    raise ValueError(f"unknown shape {shape!r}")


@dataclass
class ObjectSpec:
    """One object of a scene before rendering.

    position: (3,) world base centre on the table (metres); yaw: radians about z.
    rgb: the exact surface colour (a small per-object jitter of the named colour).
    """

    shape: str
    color: str
    size: str
    position: np.ndarray
    yaw: float
    rgb: tuple[float, float, float]

    @property
    def solid(self) -> Solid:
        return base_solid(self.shape, SIZES[self.size])

    @property
    def footprint_radius(self) -> float:
        hx, hy, _ = self.solid.dims
        return float(np.hypot(hx, hy)) if self.shape in ("cube", "brick") else float(hx)

    @property
    def height(self) -> float:
        return float(self.solid.dims[2])

    @property
    def volume(self) -> float:
        hx, hy, h = self.solid.dims
        if self.shape in ("cube", "brick"):
            return 4 * hx * hy * h
        if self.shape == "ball":
            return 4.0 / 3.0 * np.pi * hx**3
        if self.shape == "bowl":
            return 2.0 / 3.0 * np.pi * hx * hx * h
        return np.pi * hx * hx * h

    @property
    def center_world(self) -> np.ndarray:
        """Geometric centre (3,) in the world frame: the pose origin."""
        return self.position + np.array([0.0, 0.0, self.height / 2.0])

    @property
    def unseen(self) -> bool:
        return (self.color, self.shape) in HELDOUT_COMPOSITIONS

    def description(self, with_size: bool = True) -> str:
        return f"{self.size} {self.color} {self.shape}" if with_size else f"{self.color} {self.shape}"
