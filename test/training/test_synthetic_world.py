"""The synthetic tabletop world: deterministic, exactly labelled, unambiguous, split-clean."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lens_ros.world.language import KINDS, vocabulary
from lens_ros.world.render import CAMERA_POSITION, R_CW
from lens_ros.world.scene import SceneAnimator, generate_sample, sample_objects
from lens_ros.world.spec import (
    COLORS,
    CONTAINERS,
    HELDOUT_COMPOSITIONS,
    SHAPES,
    SIZES,
    base_solid,
)

SMALL = (160, 120)


def test_same_seed_gives_identical_samples():
    a = generate_sample(11, "train", size=SMALL)
    b = generate_sample(11, "train", size=SMALL)
    assert a.expression == b.expression and a.rationale == b.rationale and a.target == b.target
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert generate_sample(12, "train", size=SMALL).expression != a.expression or not np.array_equal(
        generate_sample(12, "train", size=SMALL).image, a.image
    )


def test_resolution_changes_pixels_not_labels():
    small = generate_sample(5, "val", size=SMALL)
    big = generate_sample(5, "val", size=(640, 480))
    assert (small.expression, small.target, len(small.objects)) == (big.expression, big.target, len(big.objects))
    assert big.image.shape == (480, 640, 3) and big.image.dtype == np.uint8
    assert big.depth.shape == (480, 640) and big.depth.dtype == np.float32
    np.testing.assert_allclose(big.K[0, 0] / small.K[0, 0], 4.0)
    # the same object's box scales with the image
    np.testing.assert_allclose(big.target_box / 4.0, small.target_box, atol=1.5)


def _unproject(sample, mask):
    v, u = np.nonzero(mask)
    z = sample.depth[v, u].astype(np.float64)
    k = sample.K.astype(np.float64)
    x = (u + 0.5 - k[0, 2]) / k[0, 0] * z
    y = (v + 0.5 - k[1, 2]) / k[1, 1] * z
    return np.stack([x, y, z], axis=1)  # camera frame


@pytest.mark.parametrize("seed", range(6))
def test_masks_lie_on_their_objects_and_the_rest_on_the_table(seed):
    s = generate_sample(seed, "train", size=(320, 240))
    covered = np.zeros(s.depth.shape, bool)
    for o in s.objects:
        assert not (covered & o.mask).any(), "masks must not overlap"
        covered |= o.mask
        pts = _unproject(s, o.mask)
        local = (pts - o.pose[:3, 3]) @ o.pose[:3, :3]  # into the object frame
        hx, hy, h = base_solid(o.shape, SIZES[o.size]).dims
        tol = 1e-3
        assert np.all(np.abs(local[:, 0]) <= hx + tol) and np.all(np.abs(local[:, 1]) <= hy + tol)
        assert np.all(np.abs(local[:, 2]) <= h / 2 + tol), f"{o.name}: points off the solid"
        if o.mask.any():
            ys, xs = np.nonzero(o.mask)
            np.testing.assert_array_equal(o.box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    world = _unproject(s, ~covered) @ R_CW + CAMERA_POSITION
    np.testing.assert_allclose(world[:, 2], 0.0, atol=1e-4)


def test_objects_in_front_hide_objects_behind():
    s = generate_sample(3, "train", size=(320, 240))
    for o in s.objects:
        if o.mask.any():
            # the depth of a visible object pixel is never behind the table plane there
            pts = _unproject(s, o.mask) @ R_CW + CAMERA_POSITION
            assert np.all(pts[:, 2] >= -1e-4)
    assert all(0.0 < o.visible_fraction <= 1.0 for o in s.objects)


def test_occlusion_does_not_depend_on_the_drawing_order():
    """The nearest surface wins at every pixel: rendering the objects in reverse order gives the
    same depth and the same object at every pixel, and scenes here do overlap."""
    from lens_ros.world.scene import render_objects

    overlapping = 0
    for seed in range(6):
        objs = sample_objects(np.random.default_rng(seed), "train", n=6)
        ahead, reverse = render_objects(objs, (320, 240)), render_objects(objs[::-1], (320, 240))
        np.testing.assert_array_equal(ahead.depth, reverse.depth)
        flipped = np.where(reverse.ids >= 0, len(objs) - 1 - reverse.ids, -1)
        np.testing.assert_array_equal(ahead.ids, flipped)
        overlapping += int((ahead.own > np.bincount(ahead.ids[ahead.ids >= 0], minlength=len(objs))).any())
    assert overlapping >= 2, f"only {overlapping} of 6 scenes have an occluded object"


def _azimuth(o):
    return o.center[0] / o.center[2]


def _check_unique(s):
    """Independent re-resolution of the expression from the sample's own labels."""
    objs, text, t = s.objects, s.expression, s.target
    m = re.fullmatch(r"the (\w+) (\w+)", text)
    if m and m.group(1) in COLORS and m.group(2) in SHAPES:
        hits = [i for i, o in enumerate(objs) if (o.color, o.shape) == m.groups()]
        assert hits == [t], text
        return
    m = re.fullmatch(r"the (first|second|third) (\w+) from the (left|right)", text)
    if m:
        group = [i for i, o in enumerate(objs) if m.group(2) in ("object", o.shape)]
        order = sorted(group, key=lambda i: _azimuth(objs[i]) * (1 if m.group(3) == "left" else -1))
        assert order[("first", "second", "third").index(m.group(1))] == t, text
        return
    if text == "the object closest to the camera":
        assert int(np.argmin([np.linalg.norm(o.center) for o in objs])) == t
        return
    if text == "something you could pour water into":
        assert [i for i, o in enumerate(objs) if o.shape in CONTAINERS] == [t]


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_expression_names_exactly_one_visible_object(split):
    kinds = set()
    for seed in range(60):
        s = generate_sample(seed, split, size=SMALL)
        kinds.add(s.kind)
        assert 0 <= s.target < len(s.objects)
        assert s.target_mask.any(), "the target must be visible"
        assert s.target_object.name in s.rationale
        assert set(s.expression.split()) <= set(vocabulary()), s.expression
        numbers = {str(n) for n in range(1000)}
        assert set(s.rationale.split()) <= set(vocabulary()) | numbers | {"[", "]"}, s.rationale
        _check_unique(s)
    assert kinds == set(KINDS)


def test_each_kind_can_be_requested():
    for kind in KINDS:
        assert generate_sample(1, "val", size=SMALL, kind=kind).kind == kind


def test_heldout_compositions_never_appear_in_train_or_val():
    for split in ("train", "val"):
        for seed in range(150):
            s = generate_sample(seed, split, size=(64, 48))
            assert all((o.color, o.shape) not in HELDOUT_COMPOSITIONS for o in s.objects)
    heldout = [generate_sample(seed, "heldout", size=(64, 48)) for seed in range(60)]
    assert all(s.unseen_composition for s in heldout)
    assert any(s.heldout_template for s in heldout) and not all(s.heldout_template for s in heldout)


def test_animator_moves_objects_and_keeps_labels_exact():
    anim = SceneAnimator(seed=2, size=(320, 240))
    f0, f1 = anim.frame(0.0), anim.frame(3.0)
    assert f0.image.shape == (240, 320, 3) and f0.depth.dtype == np.float32
    moved = [np.linalg.norm(a.center - b.center) for a, b in zip(f0.objects, f1.objects, strict=False)]
    assert max(moved) > 0.005
    assert not np.array_equal(f0.image, f1.image)
    assert anim.expression(0.0, "simple") is not None


def test_relational_rationales_ground_their_candidates_with_boxes():
    """Relational rationales list objects with their boxes; the last listed box is the target's."""
    seen = 0
    for seed in range(30):
        s = generate_sample(seed, "val", size=SMALL, kind="relational")
        boxes = re.findall(r"\[ (\d+) , (\d+) , (\d+) , (\d+) \]", s.rationale)
        assert boxes, s.rationale
        named = [tuple(int(v) for v in b) for b in boxes]
        assert named[-1] == tuple(int(round(v)) for v in s.target_box), (s.rationale, s.target_box)
        for b in named:  # every box is one object's box in this frame
            assert any(tuple(int(round(v)) for v in o.box) == b for o in s.objects)
        seen += 1
    assert seen == 30


def test_heldout_phrasings_use_only_words_of_training_text():
    train_words: set[str] = set()
    for seed in range(400):
        s = generate_sample(seed, "train", size=(64, 48))
        train_words |= set(s.expression.split()) | set(s.rationale.split())
    heldout_words: set[str] = set()
    for seed in range(200):
        s = generate_sample(seed, "heldout", size=(64, 48))
        if s.heldout_template:
            heldout_words |= set(s.expression.split())
    assert heldout_words and heldout_words <= train_words, sorted(heldout_words - train_words)


def test_train_scenes_bind_attributes_and_paraphrase_instructions():
    """Most train targets share their colour and their shape with other objects; some
    instructions are typed commands with synonyms; val and held-out keep the templates."""

    def binding(s) -> bool:
        t = s.target_object
        others = [o for i, o in enumerate(s.objects) if i != s.target]
        return any(o.color == t.color for o in others) and any(o.shape == t.shape for o in others)

    train = [generate_sample(seed, "train", size=(64, 48)) for seed in range(120)]
    val = [generate_sample(seed, "val", size=(64, 48)) for seed in range(120)]
    # measured: 34 of 120 train targets vs 12 of 120 val targets (the uniform draw)
    assert sum(map(binding, train)) >= 2 * sum(map(binding, val)) and sum(map(binding, train)) >= 24
    paraphrased = sum(bool(s.extra.get("paraphrased")) for s in train)
    assert all(s.extra["template_expression"] for s in train)
    assert 15 <= paraphrased <= 60
    for split in ("val", "heldout"):
        assert not any(generate_sample(seed, split, size=(64, 48)).extra.get("paraphrased") for seed in range(30))


def test_paraphrases_keep_the_referent_and_use_known_words():
    from lens_ros.world.language import paraphrase

    rng = np.random.default_rng(0)
    outs = {paraphrase("the first cup from the left", rng) for _ in range(200)}
    assert any("leftmost" in o for o in outs) and any("mug" in o for o in outs)
    assert any(o.startswith(("pick up", "grab", "hand me")) for o in outs)
    for o in outs:
        assert set(o.split()) <= set(vocabulary()), o
        assert "left" in o  # the side is never lost
    one = {paraphrase("the red object", rng) for _ in range(200)}
    assert any(o.endswith("the red one") for o in one) and all("red" in o for o in one)


def test_appearance_randomisation_keeps_every_object_where_it_was():
    """Backgrounds, shading and lighting change; each object's pixels stay its own (so masks,
    boxes and rationales remain the labels): every object's mean colour differs from the
    background right around it, and the frame differs from the world's own rendering."""
    from lens_ros.world.appearance import randomize
    from lens_ros.world.scene import generate_sample

    changed_background = 0
    for seed in range(12):
        s = generate_sample(seed, "train", (160, 120))
        out = randomize(s.image, s.objects, np.random.default_rng(seed))
        assert out.shape == s.image.shape and out.dtype == np.uint8
        assert np.array_equal(out, randomize(s.image, s.objects, np.random.default_rng(seed))), "seeded"
        covered = np.zeros(out.shape[:2], bool)
        for o in s.objects:
            covered |= o.mask
        changed_background += int(np.abs(out[~covered].astype(int) - s.image[~covered]).mean() > 20)
    assert changed_background >= 6, "most frames get another background or lighting"


def test_flat_scenes_name_one_object_each():
    from lens_training.tiny.flat_scenes import draw_scene

    for seed in range(20):
        scene = draw_scene(seed)
        assert len(set(scene.names)) == len(scene.names) >= 2
        assert scene.expression == f"the {scene.names[scene.target]}"
        total = sum(m.astype(int) for m in scene.masks)
        assert total.max() == 1, "objects do not overlap"
        for mask in scene.masks:  # the object is drawn: its pixels are not the background's colour
            assert (scene.image[mask] != scene.image[~total.astype(bool)][0]).any(axis=1).all()
