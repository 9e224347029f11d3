"""Procedural RGB-D tabletop world with exact labels and referring expressions.

A scene is 3-6 objects (cube, brick, cylinder, ball, cup, bowl; seven colours; two
sizes) on a table, seen by a fixed pinhole camera (640x480 reference, any size renders
directly with scaled intrinsics). Everything is a pure function of (seed, split):

    sample = generate_sample(seed, split="train", size=(160, 120))
    sample.image (H, W, 3) uint8 RGB, sample.depth (H, W) float32 metres (camera z),
    sample.K (3, 3), sample.objects[i].mask / .box / .pose, sample.expression,
    sample.kind, sample.rationale, sample.target

Splits: "train" and "val" never contain the colour-shape pairs of
``HELDOUT_COMPOSITIONS``; in "heldout" the target is always such an unseen pair and half
of the expressions use held-out phrasings. ``SceneAnimator`` renders a slowly moving
scene for the simulated camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from lens_ros.regions import mask_box
from lens_ros.world.language import KINDS, Expression, ground, make_expression, paraphrase
from lens_ros.world.render import (
    BASE_SIZE,
    CAMERA_POSITION,
    R_CW,
    cast_object,
    intrinsics,
    project_rect,
    rotation_z,
    shadow_factor,
    table_geometry,
    table_image,
)
from lens_ros.world.spec import (
    COLORS,
    HELDOUT_COMPOSITIONS,
    SHAPES,
    SIZES,
    TABLE_COLORS,
    ObjectSpec,
)

SPLITS = {"train": 0, "val": 1, "heldout": 2}
TABLE_X = (-0.19, 0.19)  # metres, where object bases may stand
TABLE_Y = (0.25, 0.56)
CHECK_SIZE = (160, 120)  # resolution of the visibility check (so labels do not depend on size)
MIN_VISIBLE = 0.3  # objects hidden more than this are removed from the scene
MIN_TARGET_VISIBLE = 0.55
GRAINS = (0.04, 0.07)
# Share of train scenes drawn from 2-3 colours and 2-3 shapes: the target's colour and its
# shape are then each shared by other objects, so only their combination identifies it
# (what unseen compositions need). val / held-out scenes keep the uniform draw.
BINDING_SCENES = 0.6
# Share of train instructions rewritten as typed commands (``language.paraphrase``).
TRAIN_PARAPHRASES = 0.3


@dataclass
class SceneObject:
    """One rendered object.

    mask: (H, W) bool visible pixels; box: (4,) float32 xyxy pixels, end-exclusive
    (x2 = last column + 1); pose: (4, 4) float32 T_camera_object, origin at the object's
    geometric centre, z along the table normal; visible_fraction: visible / unoccluded pixels.
    """

    shape: str
    color: str
    size: str
    mask: np.ndarray
    box: np.ndarray
    pose: np.ndarray
    visible_fraction: float
    unseen_composition: bool

    @property
    def name(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    @property
    def center(self) -> np.ndarray:
        """(3,) camera-frame centre (metres)."""
        return self.pose[:3, 3]


@dataclass
class Frame:
    """A rendered view: image (H, W, 3) uint8, depth (H, W) float32 m, K (3, 3) float32."""

    image: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    objects: list[SceneObject]


@dataclass
class Sample(Frame):
    """A frame plus one referring expression resolved to objects[target]."""

    expression: str = ""
    kind: str = ""
    template: str = ""
    rationale: str = ""
    target: int = -1
    split: str = "train"
    seed: int = 0
    heldout_template: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def target_object(self) -> SceneObject:
        return self.objects[self.target]

    @property
    def target_mask(self) -> np.ndarray:
        return self.objects[self.target].mask

    @property
    def target_box(self) -> np.ndarray:
        return self.objects[self.target].box

    @property
    def unseen_composition(self) -> bool:
        return self.objects[self.target].unseen_composition


# --------------------------------------------------------------------------- scene sampling
def _rng(seed: int, split: str) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], 7411]))


def _sample_attributes(
    rng: np.random.Generator, unseen: bool | None, palette: tuple[list[str], list[str]] | None = None
) -> tuple[str, str, str]:
    """(shape, colour, size); unseen True forces a held-out pair, False forbids one.

    palette: (colours, shapes) to draw from (default: all)."""
    colors, shapes = palette if palette is not None else (list(COLORS), list(SHAPES))
    while True:
        shape = shapes[int(rng.integers(len(shapes)))]
        color = colors[int(rng.integers(len(colors)))]
        is_unseen = (color, shape) in HELDOUT_COMPOSITIONS
        if unseen is None or unseen == is_unseen:
            return shape, color, list(SIZES)[int(rng.integers(len(SIZES)))]


def sample_objects(
    rng: np.random.Generator, split: str, clearance: float = 0.012, n: int | None = None
) -> list[ObjectSpec]:
    """Random non-intersecting objects on the table for one split."""
    n = int(rng.integers(3, 7)) if n is None else n
    palette = None
    if split == "train" and rng.random() < BINDING_SCENES:
        colors = [str(c) for c in rng.choice(list(COLORS), size=int(rng.integers(2, 4)), replace=False)]
        shapes = [str(c) for c in rng.choice(list(SHAPES), size=int(rng.integers(2, 4)), replace=False)]
        palette = (colors, shapes)
    objs: list[ObjectSpec] = []
    for k in range(n):
        force = True if (split == "heldout" and k == 0) else (None if split == "heldout" else False)
        shape, color, size = _sample_attributes(rng, force, palette)
        rgb = tuple(float(np.clip(c + rng.uniform(-12, 12), 0, 255)) for c in COLORS[color])
        spec = ObjectSpec(shape, color, size, np.zeros(3), float(rng.uniform(0, np.pi)), rgb)
        for _ in range(60):
            spec.position = np.array([rng.uniform(*TABLE_X), rng.uniform(*TABLE_Y), 0.0])
            if all(
                np.linalg.norm(spec.position[:2] - o.position[:2])
                > spec.footprint_radius + o.footprint_radius + clearance
                for o in objs
            ):
                objs.append(spec)
                break
    return objs


# --------------------------------------------------------------------------- rendering
@lru_cache(maxsize=32)
def _table(size: tuple[int, int], table: int) -> np.ndarray:
    rgb = table_image(size, TABLE_COLORS[table % len(TABLE_COLORS)], GRAINS[table // len(TABLE_COLORS) % 2])
    return np.clip(rgb, 0, 255).astype(np.uint8)


@dataclass
class Rendering:
    """Output of ``render_objects``.

    image (H, W, 3) uint8; depth (H, W) float32; ids (H, W) int16 (-1 = table);
    rects: per object (x0, y0, x1, y1) or None; own: (N,) unoccluded pixel counts.
    """

    image: np.ndarray
    depth: np.ndarray
    ids: np.ndarray
    rects: list[tuple[int, int, int, int] | None]
    own: np.ndarray


def render_objects(objs: list[ObjectSpec], size: tuple[int, int], table: int = 0) -> Rendering:
    """Z-buffer render of the objects on the cached table (work stays inside object rectangles)."""
    size = (int(size[0]), int(size[1]))
    table_depth, table_xy = table_geometry(size)
    image = _table(size, table).copy()
    depth = table_depth.copy()
    ids = np.full(depth.shape, -1, np.int16)
    own = np.zeros(len(objs), np.int64)
    rects: list[tuple[int, int, int, int] | None] = []
    for o in objs:  # contact shadows darken the table only
        r = o.footprint_radius * 1.9
        ring = o.position + np.array([[dx, dy, 0.0] for dx in (-r, r) for dy in (-r, r)])
        rect = project_rect(ring, size)
        if rect is not None:
            x0, y0, x1, y1 = rect
            f = shadow_factor(table_xy[y0:y1, x0:x1], o.position, o.footprint_radius, o.height)
            image[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * f[..., None].astype(np.float32)).astype(np.uint8)
    for i, o in enumerate(objs):
        hits = cast_object(o.solid, o.position, o.yaw, size)
        rects.append(None if hits is None else hits.rect)
        if hits is None:
            continue
        x0, y0, x1, y1 = hits.rect
        hit = np.isfinite(hits.depth)
        own[i] = int(hit.sum())
        closer = hit & (hits.depth < depth[y0:y1, x0:x1])
        depth[y0:y1, x0:x1][closer] = hits.depth[closer]
        ids[y0:y1, x0:x1][closer] = i
        color = np.asarray(o.rgb, np.float32)[None, :] * hits.shade[closer][:, None].astype(np.float32)
        image[y0:y1, x0:x1][closer] = np.clip(color, 0, 255).astype(np.uint8)
    return Rendering(image, depth, ids, rects, own)


def object_pose(o: ObjectSpec) -> np.ndarray:
    """(4, 4) float32 T_camera_object."""
    pose = np.eye(4)
    pose[:3, :3] = R_CW @ rotation_z(o.yaw)
    pose[:3, 3] = R_CW @ (o.center_world - CAMERA_POSITION)
    return pose.astype(np.float32)


def render_frame(objs: list[ObjectSpec], size: tuple[int, int], table: int = 0) -> Frame:
    """Render the objects and package exact per-object labels."""
    r = render_objects(objs, size, table)
    objects = []
    for i, o in enumerate(objs):
        mask = np.zeros(r.ids.shape, bool)
        box = np.zeros(4, np.float32)
        if r.rects[i] is not None:
            x0, y0, x1, y1 = r.rects[i]
            local = r.ids[y0:y1, x0:x1] == i
            mask[y0:y1, x0:x1] = local
            if local.any():
                box = mask_box(local) + np.array([x0, y0, x0, y0], np.float32)
        vis = int(mask[y0:y1, x0:x1].sum()) if r.rects[i] is not None else 0
        objects.append(
            SceneObject(
                o.shape,
                o.color,
                o.size,
                mask,
                box,
                object_pose(o),
                vis / r.own[i] if r.own[i] else 0.0,
                o.unseen,
            )
        )
    return Frame(r.image, r.depth, intrinsics(size).astype(np.float32), objects)


def visible_fractions(objs: list[ObjectSpec]) -> np.ndarray:
    """Visible / unoccluded pixel fraction per object at CHECK_SIZE."""
    r = render_objects(objs, CHECK_SIZE)
    counts = np.bincount(r.ids[r.ids >= 0].ravel(), minlength=len(objs))[: len(objs)]
    return np.where(r.own > 0, counts / np.maximum(r.own, 1), 0.0)


def sample_scene(rng: np.random.Generator, split: str, clearance: float = 0.012) -> tuple[list[ObjectSpec], np.ndarray]:
    """Objects that are all visible enough, and their visible fractions."""
    while True:
        objs = sample_objects(rng, split, clearance)
        vis = visible_fractions(objs)
        keep = [i for i in range(len(objs)) if vis[i] >= MIN_VISIBLE]
        objs = [objs[i] for i in keep]
        if len(keep) < len(vis):
            vis = visible_fractions(objs)  # removing an occluder changes the others
        if len(objs) >= 2 and np.all(vis >= MIN_VISIBLE):
            if split != "heldout" or any(o.unseen for o in objs):
                return objs, vis


def generate_sample(
    seed: int,
    split: str = "train",
    size: tuple[int, int] = BASE_SIZE,
    kind: str | None = None,
    paraphrase_share: float | None = None,
) -> Sample:
    """One labelled sample, a pure function of (seed, split, kind); size only sets the resolution.

    The rationale names its candidates with their boxes in this frame's pixels
    (``language.rescale_boxes`` maps them to a resized frame). paraphrase_share: chance that
    the instruction is rewritten as a typed command (default TRAIN_PARAPHRASES for "train",
    0 otherwise); ``extra["template_expression"]`` keeps the template's own text.
    """
    rng = _rng(seed, split)
    if paraphrase_share is None:
        paraphrase_share = TRAIN_PARAPHRASES if split == "train" else 0.0
    kind = KINDS[int(rng.integers(len(KINDS)))] if kind is None else kind
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    while True:
        objs, vis = sample_scene(rng, split)
        table = int(rng.integers(len(TABLE_COLORS) * len(GRAINS)))
        heldout_template = split == "heldout" and bool(rng.random() < 0.5)
        cands = [i for i, o in enumerate(objs) if vis[i] >= MIN_TARGET_VISIBLE and (split != "heldout" or o.unseen)]
        expr: Expression | None = make_expression(objs, rng, kind, cands, heldout_template)
        if expr is None:
            continue
        frame = render_frame(objs, size, table)
        if frame.objects[expr.target].mask.sum() == 0:  # too small at a tiny resolution
            continue
        text, extra = expr.text, {"template_expression": expr.text}
        prng = np.random.default_rng([int(seed), SPLITS[split], 5151])
        if paraphrase_share > 0 and prng.random() < paraphrase_share:
            text = paraphrase(expr.text, prng)
            extra["paraphrased"] = True
        return Sample(
            frame.image,
            frame.depth,
            frame.K,
            frame.objects,
            expression=text,
            kind=expr.kind,
            template=expr.template,
            rationale=ground(expr.grounded, [o.box for o in frame.objects]),
            target=expr.target,
            split=split,
            seed=int(seed),
            heldout_template=expr.heldout_template,
            extra=extra,
        )


# --------------------------------------------------------------------------- animation
class SceneAnimator:
    """A scene whose objects slide slowly back and forth (for the simulated camera).

    frame(t) renders time t (seconds); the table image, rays and table depth are cached
    per size, so a 640x480 frame costs only the rays inside the objects' rectangles.
    """

    AMPLITUDE = 0.025  # metres

    def __init__(self, seed: int = 0, size: tuple[int, int] = BASE_SIZE, split: str = "val"):
        rng = _rng(seed, split)
        self.size = (int(size[0]), int(size[1]))
        self.objects, _ = sample_scene(rng, split, clearance=0.012 + 2 * self.AMPLITUDE)
        self.table = int(rng.integers(len(TABLE_COLORS) * len(GRAINS)))
        n = len(self.objects)
        self._base = np.stack([o.position for o in self.objects])
        ang = rng.uniform(0, 2 * np.pi, n)
        self._dir = np.stack([np.cos(ang), np.sin(ang), np.zeros(n)], axis=1)
        self._omega = 2 * np.pi / rng.uniform(8.0, 16.0, n)
        self._phase = rng.uniform(0, 2 * np.pi, n)
        self._rng_seed = int(seed)

    def specs_at(self, t: float) -> list[ObjectSpec]:
        off = self.AMPLITUDE * np.sin(self._omega * t + self._phase)[:, None] * self._dir
        return [
            ObjectSpec(o.shape, o.color, o.size, self._base[i] + off[i], o.yaw, o.rgb)
            for i, o in enumerate(self.objects)
        ]

    def frame(self, t: float, size: tuple[int, int] | None = None) -> Frame:
        return render_frame(self.specs_at(t), size or self.size, self.table)

    def expression(self, t: float, kind: str, seed: int = 0) -> Expression | None:
        """A referring expression valid for the scene at time t (None if none was found)."""
        specs = self.specs_at(t)
        rng = np.random.default_rng([self._rng_seed, seed, 99])
        return make_expression(specs, rng, kind, list(range(len(specs))), attempts=80)
