"""Referring expressions and template rationales for synthetic scenes.

Three kinds, each with several templates:
- simple: attribute look-up ("the red cylinder", "the small blue cube", "the bowl").
- relational: spatial relations to an anchor ("the cube left of the green cup"),
  ordinals ("the second cube from the right"), proximity ("the ball closest to the red cup").
- reasoning: affordances and comparisons ("something you could pour water into",
  "the object closest to the camera", "the tallest object").

Every generator returns None unless its expression picks out exactly one object with a
clear margin (left/right is judged in the image, front/behind and distances in 3D), so
an accepted expression is never ambiguous. Each template has train phrasings and
held-out phrasings (same vocabulary, new word order) for the generalisation split.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lens_ros.world.render import CAMERA_POSITION, R_CW
from lens_ros.world.spec import (
    COLORS,
    CONTAINERS,
    FLAT_TOPPED,
    PLURALS,
    ROLLING,
    SHAPES,
    SIZES,
    ObjectSpec,
)

KINDS: tuple[str, ...] = ("simple", "relational", "reasoning")
LR_MARGIN = 0.05  # in normalised image x (x_c / z_c): about 26 px at 640x480
DEPTH_MARGIN = 0.04  # metres along the table's y axis
ORDINALS = ("first", "second", "third")


@dataclass
class Expression:
    """A referring expression resolved to one object of its scene.

    template: "<kind>/<name>" of the template; heldout_template: the phrasing is one of
    the held-out ones. rationale: the chain of thought without boxes; grounded: the same
    with ``{box:K}`` placeholders where object K's box belongs (``ground`` fills them once
    the scene is rendered).
    """

    text: str
    kind: str
    template: str
    rationale: str
    target: int
    heldout_template: bool = False
    grounded: str = ""


def azimuth(obj: ObjectSpec) -> float:
    """Normalised image x of the object's centre (negative = left)."""
    pc = R_CW @ (obj.center_world - CAMERA_POSITION)
    return float(pc[0] / pc[2])


def camera_distance(obj: ObjectSpec) -> float:
    return float(np.linalg.norm(obj.center_world - CAMERA_POSITION))


def _noun_matches(obj: ObjectSpec, noun: str) -> bool:
    return noun == "object" or obj.shape == noun


def unique_name(objs: list[ObjectSpec], i: int) -> str | None:
    """Shortest 'colour shape' or 'size colour shape' phrase that picks out object i."""
    o = objs[i]
    same = [j for j, p in enumerate(objs) if p.color == o.color and p.shape == o.shape]
    if len(same) == 1:
        return o.description(with_size=False)
    if sum(objs[j].size == o.size for j in same) == 1:
        return o.description(with_size=True)
    return None


def _final(o: ObjectSpec) -> str:
    return f"the target is the {o.description()} ."


_BOX_SLOT = re.compile(r" ?\{box:(\d+)\}")
_BOX_TEXT = re.compile(r"\[ (\d+) , (\d+) , (\d+) , (\d+) \]")


def _at(k: int) -> str:
    """Placeholder for object k's box in a grounded rationale."""
    return f" {{box:{k}}}"


def strip_boxes(grounded: str) -> str:
    """The rationale without its box placeholders."""
    return _BOX_SLOT.sub("", grounded)


def format_box(box) -> str:
    """An integer xyxy box as rationale text (spaced like the word-level tokenizer decodes it)."""
    return "[ " + " , ".join(str(int(round(float(v)))) for v in box) + " ]"


def ground(grounded: str, boxes) -> str:
    """Fill ``{box:K}`` placeholders with boxes[K] (pixels of the rendered frame)."""
    return _BOX_SLOT.sub(lambda m: " " + format_box(boxes[int(m.group(1))]), grounded)


def rescale_boxes(rationale: str, sx: float, sy: float, limit: tuple[int, int] | None = None) -> str:
    """The rationale with every box scaled by (sx, sy) (to the frame a resized image is seen in).

    limit: (W, H) to clip the scaled coordinates to.
    """

    def scale(m: re.Match) -> str:
        v = [float(g) for g in m.groups()]
        out = [v[0] * sx, v[1] * sy, v[2] * sx, v[3] * sy]
        if limit is not None:
            out = [min(max(c, 0.0), float(limit[k % 2])) for k, c in enumerate(out)]
        return format_box(out)

    return _BOX_TEXT.sub(scale, rationale)


# --------------------------------------------------------------------------- simple
def simple_color_shape(objs, i, rng, heldout):
    o = objs[i]
    if sum(p.color == o.color and p.shape == o.shape for p in objs) != 1:
        return None
    text = f"the {o.shape} that is {o.color}" if heldout else f"the {o.color} {o.shape}"
    return text, f"there is one {o.color} {o.shape} . {_final(o)}"


def simple_size_color_shape(objs, i, rng, heldout):
    o = objs[i]
    same = [p for p in objs if p.color == o.color and p.shape == o.shape]
    if len(same) < 2 or sum(p.size == o.size for p in same) != 1:
        return None
    text = f"the {o.color} {o.shape} that is {o.size}" if heldout else f"the {o.size} {o.color} {o.shape}"
    return text, f"there are {len(same)} {o.color} {PLURALS[o.shape]} , only one is {o.size} . {_final(o)}"


def simple_shape(objs, i, rng, heldout):
    o = objs[i]
    if sum(p.shape == o.shape for p in objs) != 1:
        return None
    text = f"the only {o.shape}" if heldout else f"the {o.shape}"
    return text, f"there is one {o.shape} . {_final(o)}"


def simple_color(objs, i, rng, heldout):
    o = objs[i]
    if sum(p.color == o.color for p in objs) != 1:
        return None
    text = f"the object that is {o.color}" if heldout else f"the {o.color} object"
    return text, f"there is one {o.color} object . {_final(o)}"


# --------------------------------------------------------------------------- relational
RELATIONS = {
    # name: (train phrase, held-out phrase)
    "left": ("left of", "to the left of"),
    "right": ("right of", "to the right of"),
    "behind": ("behind", "further back than"),
    "front": ("in front of", "closer to us than"),
}


# How rationales state a relation: the words of the held-out phrasings occur in training
# text (rationales), while the held-out instructions' word order stays unseen.
RATIONALE_RELATIONS = {
    "left": "left of",
    "right": "right of",
    "behind": "further back than",
    "front": "closer to us than",
}


def _relation_holds(rel: str, t: ObjectSpec, a: ObjectSpec) -> int:
    """1 if it holds with margin, 0 if it clearly does not, -1 if too close to call."""
    if rel in ("left", "right"):
        diff = azimuth(t) - azimuth(a)
        diff = -diff if rel == "left" else diff
        margin = LR_MARGIN
    else:
        diff = t.position[1] - a.position[1]
        diff = -diff if rel == "front" else diff
        margin = DEPTH_MARGIN
    if diff > margin:
        return 1
    return 0 if diff < margin / 2 else -1


def relational_spatial(objs, i, rng, heldout):
    o = objs[i]
    anchors = [j for j in range(len(objs)) if j != i and unique_name(objs, j)]
    if not anchors:
        return None
    a = int(rng.choice(anchors))
    rel = str(rng.choice(list(RELATIONS)))
    noun = o.shape if rng.random() < 0.7 else "object"
    verdicts = [_relation_holds(rel, p, objs[a]) for j, p in enumerate(objs) if j != a and _noun_matches(p, noun)]
    if _relation_holds(rel, o, objs[a]) != 1 or sorted(verdicts) != sorted([1] + [0] * (len(verdicts) - 1)):
        return None
    anchor = unique_name(objs, a)
    phrase = RELATIONS[rel][1 if heldout else 0]
    text = f"the {noun} {phrase} the {anchor}"
    plural = PLURALS[noun]
    rel_words = RATIONALE_RELATIONS[rel]
    return text, (
        f"the reference is the {anchor}{_at(a)} . {plural} {rel_words} it : the {o.description()}{_at(i)} . {_final(o)}"
    )


def relational_ordinal(objs, i, rng, heldout):
    o = objs[i]
    noun = o.shape if rng.random() < 0.6 else "object"
    side = str(rng.choice(["left", "right"]))
    group = [j for j, p in enumerate(objs) if _noun_matches(p, noun)]
    if len(group) < 2:
        return None
    az = np.array([azimuth(objs[j]) for j in group])
    if side == "right":
        az = -az
    order = [group[k] for k in np.argsort(az)]
    if np.any(np.diff(np.sort(az)) < LR_MARGIN):
        return None
    rank = order.index(i)
    if rank >= len(ORDINALS):
        return None
    ordinal = ORDINALS[rank]
    text = f"the {noun} that is {ordinal} from the {side}" if heldout else f"the {ordinal} {noun} from the {side}"
    listing = " , ".join(f"{objs[j].description(with_size=False)}{_at(j)}" for j in order[: rank + 1])
    return text, f"from the {side} the {PLURALS[noun]} are : {listing} . {_final(o)}"


def relational_closest_to(objs, i, rng, heldout):
    o = objs[i]
    anchors = [j for j in range(len(objs)) if j != i and unique_name(objs, j)]
    if not anchors:
        return None
    a = int(rng.choice(anchors))
    noun = o.shape if rng.random() < 0.5 else "object"
    cands = [j for j, p in enumerate(objs) if j != a and _noun_matches(p, noun)]
    dist = {j: float(np.linalg.norm(objs[j].position[:2] - objs[a].position[:2])) for j in cands}
    best = sorted(cands, key=dist.get)
    if best[0] != i or (len(best) > 1 and dist[best[1]] < 1.35 * dist[best[0]]):
        return None
    anchor = unique_name(objs, a)
    word = "nearest to" if heldout else "closest to"
    text = f"the {noun} {word} the {anchor}"
    return text, (
        f"the reference is the {anchor}{_at(a)} . the {o.description()}{_at(i)} is nearest to it . {_final(o)}"
    )


# --------------------------------------------------------------------------- reasoning
AFFORDANCES = {
    # name: (train phrase, held-out phrase, shapes that afford it, reason)
    "pour": (
        "something you could pour water into",
        "something that can hold water",
        CONTAINERS,
        "pouring water needs a container that can hold water like a cup or a bowl",
    ),
    "drink": ("something you could drink from", "a thing to drink from", frozenset({"cup"}), "you drink from a cup"),
    "roll": ("something that could roll away", "a thing that can roll", ROLLING, "a ball is round so it can roll"),
    "stack": (
        "something you could stack a block on",
        "a thing with a flat top to stack on",
        FLAT_TOPPED,
        "stacking needs a thing with a flat top like a cube a brick or a cylinder",
    ),
}


def reasoning_affordance(objs, i, rng, heldout):
    o = objs[i]
    options = [k for k, v in AFFORDANCES.items() if o.shape in v[2]]
    if not options:
        return None
    name = str(rng.choice(options))
    train_text, heldout_text, shapes, reason = AFFORDANCES[name]
    able = [p for p in objs if p.shape in shapes]
    if len(able) == 1:
        text = heldout_text if heldout else train_text
        return text, f"{reason} . the only one here is the {o.description()} . {_final(o)}"
    same_color = [p for p in able if p.color == o.color]
    if len(same_color) == 1:  # colour-qualified: "the red thing you could ..."
        text = f"the {o.color} " + (heldout_text if heldout else train_text).replace("something", "thing", 1).replace(
            "a thing", "thing", 1
        )
        return text, f"{reason} . the only {o.color} one is the {o.description()} . {_final(o)}"
    return None


# the superlative a comparative rationale states (the held-out phrasings' words)
SUPERLATIVES = {
    "closest": "nearest",
    "farthest": "furthest",
    "tallest": "highest",
    "biggest": "largest",
    "smallest": "tiniest",
}

COMPARATIVES = {
    # name: (train phrase, held-out phrase, key, largest?, ratio margin, reason)
    "closest": (
        "the object closest to the camera",
        "the object nearest to the camera",
        camera_distance,
        False,
        1.08,
        "comparing distances to the camera",
    ),
    "farthest": (
        "the object farthest from the camera",
        "the object furthest from the camera",
        camera_distance,
        True,
        1.08,
        "comparing distances to the camera",
    ),
    "tallest": ("the tallest object", "the highest object", lambda p: p.height, True, 1.25, "comparing heights"),
    "biggest": ("the biggest object", "the largest object", lambda p: p.volume, True, 1.5, "comparing sizes"),
    "smallest": ("the smallest object", "the tiniest object", lambda p: p.volume, False, 1.5, "comparing sizes"),
}


def reasoning_comparative(objs, i, rng, heldout):
    o = objs[i]
    name = str(rng.choice(list(COMPARATIVES)))
    train_text, heldout_text, key, largest, margin, reason = COMPARATIVES[name]
    vals = np.array([key(p) for p in objs], dtype=np.float64)
    order = np.argsort(-vals if largest else vals)
    if order[0] != i:
        return None
    first, second = vals[order[0]], vals[order[1]]
    ratio = first / second if largest else second / first
    if ratio < margin:
        return None
    text = heldout_text if heldout else train_text
    return text, f"{reason} , the {SUPERLATIVES[name]} is the {o.description()} . {_final(o)}"


Generator = Callable[[list[ObjectSpec], int, np.random.Generator, bool], tuple[str, str] | None]
TEMPLATES: dict[str, dict[str, Generator]] = {
    "simple": {
        "color_shape": simple_color_shape,
        "size_color_shape": simple_size_color_shape,
        "shape": simple_shape,
        "color": simple_color,
    },
    "relational": {
        "spatial": relational_spatial,
        "ordinal": relational_ordinal,
        "closest_to": relational_closest_to,
    },
    "reasoning": {
        "affordance": reasoning_affordance,
        "comparative": reasoning_comparative,
    },
}


def make_expression(
    objs: list[ObjectSpec],
    rng: np.random.Generator,
    kind: str,
    candidates: list[int],
    heldout_template: bool = False,
    attempts: int = 40,
) -> Expression | None:
    """Try random (template, target) pairs of a kind until one resolves uniquely.

    candidates: the object indices allowed as targets (visible enough, right split).
    """
    if not candidates:
        return None
    names = list(TEMPLATES[kind])
    for _ in range(attempts):
        name = names[int(rng.integers(len(names)))]
        i = int(candidates[int(rng.integers(len(candidates)))])
        out = TEMPLATES[kind][name](objs, i, rng, heldout_template)
        if out is not None:
            text, grounded = out
            return Expression(text, kind, f"{kind}/{name}", strip_boxes(grounded), i, heldout_template, grounded)
    return None


# --------------------------------------------------------------------------- paraphrases
# Instructions as people type them to a robot: a command around the expression, everyday
# synonyms, "leftmost", "the red one", "please". Rationales keep the world's own names, so
# a model trained on both learns that a mug is a cup.
COMMANDS = (
    "pick up",
    "grab",
    "hand me",
    "give me",
    "bring me",
    "get",
    "take",
    "fetch",
    "point at",
    "show me",
    "find",
    "can you pick up",
    "could you grab",
    "i want",
    "i need",
)
SYNONYMS = {
    "cup": "mug",
    "cups": "mugs",
    "cube": "block",
    "cubes": "blocks",
    "brick": "box",
    "bricks": "boxes",
    "ball": "sphere",
    "balls": "spheres",
    "object": "thing",
    "objects": "things",
}


def paraphrase(text: str, rng: np.random.Generator) -> str:
    """A typed-instruction variant of a world expression with the same referent.

    Ordinals become "leftmost" / "rightmost", "the red object" may become "the red one",
    shape nouns may take a synonym (mug, block, box, sphere, thing), and a command
    ("pick up", "grab", "hand me", ...) and "please" may wrap it.
    """
    words = text.split()
    out = " ".join(words)
    for side in ("left", "right"):  # "the first cube from the left" -> "the leftmost cube"
        prefix, suffix = "the first ", f" from the {side}"
        if out.startswith(prefix) and out.endswith(suffix) and rng.random() < 0.7:
            out = f"the {side}most " + out[len(prefix) : -len(suffix)]
    words = out.split()
    if len(words) == 3 and words[0] == "the" and words[2] == "object" and rng.random() < 0.5:
        words[2] = "one"  # "the red object" -> "the red one"
    if rng.random() < 0.6:
        words = [SYNONYMS.get(w, w) if rng.random() < 0.7 else w for w in words]
    if words[0] == "the" and rng.random() < 0.12:
        words = words[1:]  # typed without the article
    out = " ".join(words)
    if rng.random() < 0.8:
        out = f"{COMMANDS[int(rng.integers(len(COMMANDS)))]} {out}"
    r = rng.random()
    if r < 0.2:
        out = f"please {out}"
    elif r < 0.3:
        out = f"{out} please"
    return out


def vocabulary() -> list[str]:
    """Every word any expression or rationale can contain (for the tokenizer)."""
    words: set[str] = set()
    parts = [
        " ".join(COLORS),
        " ".join(SHAPES),
        " ".join(PLURALS.values()),
        " ".join(SIZES),
        " ".join(ORDINALS),
        "left right object objects the that is only there are one other",
        "reference it : , . target from wins thing a",
        " ".join(p for v in RELATIONS.values() for p in v),
        "closest to nearest is",
        " ".join(v[0] + " " + v[1] + " " + v[3] for v in AFFORDANCES.values()),
        " ".join(v[0] + " " + v[1] + " " + v[5] for v in COMPARATIVES.values()),
        "here",
        " ".join(RATIONALE_RELATIONS.values()),
        " ".join(SUPERLATIVES.values()),
        " ".join(COMMANDS),
        " ".join(SYNONYMS.values()),
        "leftmost rightmost one please",
    ]
    for p in parts:
        words.update(p.split())
    return sorted(words)
