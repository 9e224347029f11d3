"""Domain randomisation of a rendered frame: background, shading, texture and lighting.

The world's renderer draws one kind of table with one lighting model; a model trained on it
alone ties "the red ball" to that look (on flat-coloured shapes drawn by another renderer it
boxes the wrong object). ``randomize`` redraws a frame's appearance while keeping every
object's pixels where they are, so masks, boxes, rationales and labels stay valid:

- background: the table replaced by a plain colour, a colour gradient or coloured noise;
- shading: objects flattened to their base colour (no light falloff), or kept;
- lighting: a global gain, a colour tint and a gamma curve;
- sensor noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lens_ros.world.spec import COLORS


def randomize(image: np.ndarray, objects: Sequence, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB with the same object pixels, another appearance. ``objects`` have
    ``.mask`` (H, W) bool and ``.color`` (a COLORS name)."""
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    covered = np.zeros((h, w), bool)
    for o in objects:
        covered |= o.mask
    style = rng.random()
    if style < 0.4:  # plain colour
        out[~covered] = rng.integers(0, 256, 3)
    elif style < 0.7:  # two-colour gradient in a random direction
        a, b = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (np.cos(angle) * xs / w + np.sin(angle) * ys / h + 1.0) / 2.0
        out[~covered] = (a + (b - a) * t[..., None])[~covered]
    elif style < 0.85:  # coloured noise texture at a coarse scale
        cell = int(rng.integers(4, 24))
        coarse = rng.integers(0, 256, (h // cell + 1, w // cell + 1, 3)).astype(np.float32)
        texture = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:h, :w]
        out[~covered] = texture[~covered]
    # else: the world's own table
    if rng.random() < 0.5:  # flat shading
        for o in objects:
            out[o.mask] = COLORS[o.color]
    gain = rng.uniform(0.6, 1.4)
    tint = rng.uniform(0.9, 1.1, 3)
    out = np.clip(out * gain * tint, 0, 255)
    gamma = rng.uniform(0.7, 1.4)
    out = 255.0 * (out / 255.0) ** gamma
    out += rng.normal(0.0, rng.uniform(0.0, 6.0), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)
