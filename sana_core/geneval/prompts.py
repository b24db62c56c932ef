"""GenEval prompt grammar and metadata for GenEval-Shapes (geneval.md §2, §6.2, §6.7).

Three parts:
1. `generate_suite` — a line-for-line port of GenEval's `prompts/create_prompts.py` (djghosh13/geneval @ af4902f):
   `with_article` ("an" iff the first letter is in "aeiou" → "an orange orange"), `make_plural` ("es" after a final
   "s", else "s" → "crosses", "sheeps"), `NUMBERS`, the six templates, 100 draws per task, dedup, seed 43. Called with
   the 80 COCO names and `person="person"` it reproduces the shipped 553-line `evaluation_metadata.jsonl` byte for byte
   (tested). With `person=None` (the shapes world, no class needs GenEval's "no coloured person" rule) the colour tasks
   draw the class with `rng.choice(len(classnames))` — the only change to the random stream.
   `shapes_suite` is the GenEval-Shapes suite of §6.2: `single_object`, `counting`, `colors` enumerated exhaustively,
   the other tags sampled (up to n unique); an optional `keep` predicate restricts it (used by the held-out splits).
2. `scene_for_metadata(meta, rng, world)` — a ground-truth scene that satisfies a prompt exactly: the include
   requirements and nothing else (so excludes hold: counting gets exactly N); free colours are drawn uniformly
   (restricted to training-allowed bindings when `rules` is given); position scenes are rejection-sampled until
   GenEval's `relative_position(A_core_box, B_core_box)` returns exactly {rel}, where a core box is the
   [x0, y0, x_last+1, y_last+1] box of the pixels with coverage ≥ 0.5 (the box the detector reports). Proposals are
   first screened on the nominal (square) boxes, which must also give exactly {rel} (a cheap filter; it only drops
   rare borderline layouts where nominal and core boxes disagree).
3. Training captions (`TrainingSampler`): seven families, each caption describing its scene completely (no undescribed
   object; colour is named where the family names it, otherwise free):
     single_object  "a photo of a circle"
     two_object     "a photo of a circle and a square"
     counting       "a photo of three circles"                  (N ∈ {2, 3, 4}, free colours per object)
     colors         "a photo of a red circle"
     position       "a photo of a circle left of a square"      (exactly {rel} holds on the core boxes)
     color_attr     "a photo of a red circle and a blue square"
     multi_object   "a photo of two red circles, a star and a blue square"
                    (2–3 groups of distinct shapes, 3..max_objects objects, counts 1–4, each group named with one
                    colour or uncoloured)
   The first six use GenEval's templates verbatim; multi_object is our extension ("counts 1–4, up to 4 objects").
   A `rules` object (see `splits.HeldOut`) restricts every scene — mentioned or not — to allowed combinations.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import permutations
from typing import Callable, Iterable, Sequence

import numpy as np

from .evaluate import TASKS, relative_position  # GenEval's tasks and position rule, shared with the evaluator
from .render import Obj, core_box, place_boxes
from .world import COLORS, NUMBERS, RELATIONS, SHAPES, WorldConfig, world_config

TAGS: tuple[str, ...] = TASKS                 # the prompt tags are the six GenEval tasks
TRAIN_FAMILIES: tuple[str, ...] = TAGS + ("multi_object",)
COUNTS: tuple[int, ...] = (2, 3, 4)          # GenEval counting: integers(2, max_count=4, endpoint=True)


# ----------------------------------------------------------------------------------------------------------- grammar
def with_article(name: str) -> str:
    """GenEval's a/an rule (create_prompts.py L19-22): "an" iff the first letter is in "aeiou"."""
    if name[0] in "aeiou":
        return f"an {name}"
    return f"a {name}"


def make_plural(name: str) -> str:
    """GenEval's plural rule (L26-29): "es" after a final "s", else "s"."""
    if name[-1] in "s":
        return f"{name}es"
    return f"{name}s"


# ---------------------------------------------------------------------------------------------- metadata constructors
def meta_single(x: str) -> dict:
    return dict(tag="single_object", include=[{"class": x, "count": 1}], prompt=f"a photo of {with_article(x)}")


def meta_two(x: str, y: str) -> dict:
    return dict(tag="two_object", include=[{"class": x, "count": 1}, {"class": y, "count": 1}],
                prompt=f"a photo of {with_article(x)} and {with_article(y)}")


def meta_counting(x: str, n: int) -> dict:
    return dict(tag="counting", include=[{"class": x, "count": n}], exclude=[{"class": x, "count": n + 1}],
                prompt=f"a photo of {NUMBERS[n]} {make_plural(x)}")


def meta_colors(x: str, c: str) -> dict:
    return dict(tag="colors", include=[{"class": x, "count": 1, "color": c}],
                prompt=f"a photo of {with_article(c)} {x}")


def meta_position(a: str, rel: str, b: str) -> dict:
    """"a photo of {a(A)} {rel} {a(B)}": include lists B first, then A with position [rel, 0]."""
    return dict(tag="position", include=[{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
                prompt=f"a photo of {with_article(a)} {rel} {with_article(b)}")


def meta_color_attr(x: str, c1: str, y: str, c2: str) -> dict:
    return dict(tag="color_attr", include=[{"class": x, "count": 1, "color": c1}, {"class": y, "count": 1, "color": c2}],
                prompt=f"a photo of {with_article(c1)} {x} and {with_article(c2)} {y}")


def _key(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)


# --------------------------------------------------------------------------------------- create_prompts.py, ported
def generate_suite(classnames: Sequence[str], rng: np.random.Generator, n: int = 100,
                   colors: Sequence[str] = COLORS, person: str | None = "person", max_count: int = 4) -> list[dict]:
    """GenEval's `generate_suite` (create_prompts.py L139-163): every class once (single_object, random order), then
    n draws per task, deduplicated in order. Same numpy calls in the same order as the original."""
    names, cols = list(classnames), list(colors)
    L = len(names)
    off = names.index(person) if person is not None else None
    positions = list(RELATIONS)

    def pick_colored_class(size=None):
        if off is None:
            return rng.choice(L, size=size, replace=False) if size else rng.choice(L)
        if size:
            return (rng.choice(L - 1, size=size, replace=False) + 1 + off) % L
        return (rng.choice(L - 1) + 1 + off) % L

    samples = []
    for idx in rng.choice(L, size=L, replace=False):
        samples.append(meta_single(names[idx]))
    for _ in range(n):
        a, b = rng.choice(L, size=2, replace=False)
        samples.append(meta_two(names[a], names[b]))
    for _ in range(n):
        idx = rng.choice(L)
        num = int(rng.integers(2, max_count, endpoint=True))
        samples.append(meta_counting(names[idx], num))
    for _ in range(n):
        idx = pick_colored_class()
        color = cols[rng.choice(len(cols))]
        samples.append(meta_colors(names[idx], color))
    for _ in range(n):
        a, b = rng.choice(L, size=2, replace=False)
        rel = positions[rng.choice(len(positions))]
        samples.append(meta_position(names[a], rel, names[b]))
    for _ in range(n):
        a, b = pick_colored_class(size=2)
        ca, cb = rng.choice(len(cols), size=2, replace=False)
        samples.append(meta_color_attr(names[a], cols[ca], names[b], cols[cb]))
    out, seen = [], set()
    for s in samples:
        k = _key(s)
        if k not in seen:
            seen.add(k)
            out.append(s)
    return out


# ------------------------------------------------------------------------------------------- GenEval-Shapes suites
def enumerate_prompts(tag: str, shapes: Sequence[str] = SHAPES, colors: Sequence[str] = COLORS,
                      counts: Sequence[int] = COUNTS) -> list[dict]:
    """Every distinct prompt of a tag over a vocabulary (8 shapes × 10 colours: 8, 56, 24, 80, 224, 5040)."""
    if tag == "single_object":
        return [meta_single(x) for x in shapes]
    if tag == "two_object":
        return [meta_two(x, y) for x, y in permutations(shapes, 2)]
    if tag == "counting":
        return [meta_counting(x, n) for x in shapes for n in counts]
    if tag == "colors":
        return [meta_colors(x, c) for x in shapes for c in colors]
    if tag == "position":
        return [meta_position(a, r, b) for a, b in permutations(shapes, 2) for r in RELATIONS]
    if tag == "color_attr":
        return [meta_color_attr(x, c1, y, c2) for x, y in permutations(shapes, 2)
                for c1, c2 in permutations(colors, 2)]
    raise ValueError(f"unknown tag {tag!r}; choose from {list(TAGS)}")


EXHAUSTIVE_TAGS = ("single_object", "counting", "colors")


def shapes_suite(shapes: Sequence[str] = SHAPES, colors: Sequence[str] = COLORS, seed: int = 43, n: int = 100,
                 keep: Callable[[dict], bool] | None = None, counts: Sequence[int] = COUNTS) -> list[dict]:
    """GenEval-Shapes prompt set (§6.2) in GenEval's tag order: single_object, counting, colors enumerated
    exhaustively; two_object, position, color_attr: all candidates if ≤ n, else n sampled without replacement
    (kept in enumeration order). `keep` filters candidates first (held-out splits). Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for tag in TAGS:
        cands = enumerate_prompts(tag, shapes, colors, counts)
        if keep is not None:
            cands = [m for m in cands if keep(m)]
        if tag not in EXHAUSTIVE_TAGS and len(cands) > n:
            idx = np.sort(rng.choice(len(cands), size=n, replace=False))
            cands = [cands[i] for i in idx]
        out.extend(cands)
    return out


# -------------------------------------------------------------------------------------------------- training rules
class AllowAll:
    """Rules object accepting everything (no held-out split). `splits.HeldOut` has the same three methods."""

    def binding_ok(self, color: str, shape: str) -> bool:
        return True

    def pair_ok(self, a: str, b: str) -> bool:
        return True

    def count_ok(self, shape: str, n: int) -> bool:
        return True


def scene_ok(objs: Iterable[Obj], rules) -> bool:
    """No disallowed binding, shape pair or (shape, count) anywhere in the scene (mentioned or not)."""
    objs = list(objs)
    if not all(rules.binding_ok(o.color, o.shape) for o in objs):
        return False
    shapes = sorted({o.shape for o in objs})
    if not all(rules.pair_ok(a, b) for i, a in enumerate(shapes) for b in shapes[i + 1:]):
        return False
    return all(rules.count_ok(s, sum(o.shape == s for o in objs)) for s in shapes)


def _free_colors(shape: str, world: WorldConfig, rules) -> list[str]:
    return [c for c in world.colors if rules.binding_ok(c, shape)]


# ------------------------------------------------------------------------------------------------ ground-truth scenes
def _check_meta_world(meta: dict, world: WorldConfig):
    for req in list(meta.get("include", [])) + list(meta.get("exclude", [])):
        if req["class"] not in world.shapes:
            raise ValueError(f"class {req['class']!r} is not a shape of the world {list(world.shapes)}")
        if "color" in req and req["color"] not in world.colors:
            raise ValueError(f"colour {req['color']!r} is not a colour of the world {list(world.colors)}")
    n = sum(int(r["count"]) for r in meta.get("include", []))
    if n > world.max_objects:
        raise ValueError(f"prompt {meta.get('prompt')!r} needs {n} objects > max_objects={world.max_objects}")


def _positions_exact(objs: list[Obj], groups: list[list[int]], meta: dict, world: WorldConfig, cache: dict) -> bool:
    for gi, req in enumerate(meta["include"]):
        if "position" not in req:
            continue
        rel, tgt = req["position"][0], int(req["position"][1])
        for i in groups[gi]:
            for j in groups[tgt]:
                if relative_position(objs[i].box, objs[j].box) != {rel}:   # cheap pre-filter on nominal boxes
                    return False
                for k in (i, j):
                    if k not in cache:
                        cache[k] = core_box(objs[k], world.image_size, world.supersample)
                if cache[i] is None or cache[j] is None or relative_position(cache[i], cache[j]) != {rel}:
                    return False
    return True


def scene_for_metadata(meta: dict, rng: np.random.Generator, world: WorldConfig | None = None, rules=None,
                       max_tries: int = 5000) -> list[Obj]:
    """A scene that satisfies `meta` exactly (see module docstring). Raises ValueError for a prompt outside the
    world (unknown class/colour, too many objects) and RuntimeError if no position layout is found."""
    world = world or world_config()
    rules = rules or AllowAll()
    _check_meta_world(meta, world)
    specs, groups = [], []
    for req in meta["include"]:
        groups.append(list(range(len(specs), len(specs) + int(req["count"]))))
        for _ in range(int(req["count"])):
            if "color" in req:
                color = req["color"]
            else:
                opts = _free_colors(req["class"], world, rules)
                if not opts:
                    raise ValueError(f"no allowed colour for shape {req['class']!r} in this world/split")
                color = opts[rng.choice(len(opts))]
            specs.append((req["class"], color))
    has_pos = any("position" in r for r in meta["include"])
    for _ in range(max_tries if has_pos else 1):
        boxes = place_boxes(len(specs), rng, world)
        objs = [Obj(s, c, cx, cy, side) for (s, c), (cx, cy, side) in zip(specs, boxes)]
        if not has_pos or _positions_exact(objs, groups, meta, world, {}):
            return objs
    raise RuntimeError(f"scene_for_metadata: no layout with exactly the required relation after {max_tries} "
                       f"tries for {meta.get('prompt')!r}")


# ---------------------------------------------------------------------------------------------- training captions
Group = tuple  # (shape, count, colour or None)


def phrase(shape: str, count: int, color: str | None) -> str:
    """"a red circle", "an orange square", "three circles", "two blue stars"."""
    if count == 1:
        return with_article(f"{color} {shape}" if color else shape)
    return f"{NUMBERS[count]} {color + ' ' if color else ''}{make_plural(shape)}"


def caption_from_groups(groups: Sequence[Group]) -> str:
    """GenEval wording for a list of groups: "a photo of P", "… P1 and P2", "… P1, P2 and P3"."""
    parts = [phrase(*g) for g in groups]
    if not parts:
        raise ValueError("caption_from_groups: no groups")
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"a photo of {body}"


def position_caption(a: str, rel: str, b: str) -> str:
    return f"a photo of {with_article(a)} {rel} {with_article(b)}"


@dataclass
class Example:
    """A training pair: caption, family tag, scene, and the described content (`groups`, `relation` (A, rel, B))."""

    caption: str
    tag: str
    objs: list[Obj]
    groups: list[Group]
    relation: tuple | None = None


@dataclass
class TrainingSampler:
    """Draws training examples from the seven caption families (module docstring) over `world`'s vocabulary,
    every scene restricted by `rules` (held-out combinations never appear). Families with no allowed content
    (possible with a small sub-vocabulary) are dropped; `weights` (family → weight) default to uniform."""

    world: WorldConfig = field(default_factory=world_config)
    rules: object = field(default_factory=AllowAll)
    weights: dict | None = None

    def __post_init__(self):
        w, r = self.world, self.rules
        shapes = [s for s in w.shapes if _free_colors(s, w, r)]
        self.shapes = shapes
        pairs = [(a, b) for a, b in permutations(shapes, 2) if r.pair_ok(a, b)]
        counts = [n for n in COUNTS if n <= w.max_objects]
        self.options = {
            "single_object": [(s,) for s in shapes],
            "two_object": pairs if w.max_objects >= 2 else [],
            "counting": [(s, n) for s in shapes for n in counts if r.count_ok(s, n)],
            "colors": [(s, c) for s in shapes for c in w.colors if r.binding_ok(c, s)],
            "position": [(a, rel, b) for a, b in pairs for rel in RELATIONS] if w.max_objects >= 2 else [],
            "color_attr": [(a, b) for a, b in pairs
                           if len({(c1, c2) for c1 in _free_colors(a, w, r) for c2 in _free_colors(b, w, r)
                                   if c1 != c2}) > 0] if w.max_objects >= 2 else [],
            "multi_object": self._multi_structures(shapes),
        }
        weights = dict(self.weights or {f: 1.0 for f in TRAIN_FAMILIES})
        bad = [k for k in weights if k not in TRAIN_FAMILIES]
        if bad:
            raise ValueError(f"families: unknown family {bad}; choose from {list(TRAIN_FAMILIES)}")
        if any(float(v) < 0 for v in weights.values()):
            raise ValueError(f"families: negative weight in {weights}")
        self.families = [f for f in TRAIN_FAMILIES if weights.get(f, 0) > 0 and self.options[f]]
        if not self.families:
            raise ValueError("training vocabulary/split leaves no caption family with allowed content")
        p = np.array([float(weights[f]) for f in self.families])
        self.p = p / p.sum()

    def _multi_structures(self, shapes):
        w, r = self.world, self.rules
        out = []
        for k in (2, 3):
            for combo in permutations(shapes, k):
                if not all(r.pair_ok(a, b) for i, a in enumerate(combo) for b in combo[i + 1:]):
                    continue
                for cnts in np.ndindex(*([4] * k)):
                    cnts = tuple(c + 1 for c in cnts)
                    if 3 <= sum(cnts) <= w.max_objects and all(r.count_ok(s, n) for s, n in zip(combo, cnts)):
                        out.append(tuple(zip(combo, cnts)))
        return out

    def _color(self, shape, rng):
        opts = _free_colors(shape, self.world, self.rules)
        return opts[rng.choice(len(opts))]

    def sample(self, rng: np.random.Generator, family: str | None = None) -> Example:
        fam = family or self.families[rng.choice(len(self.families), p=self.p)]
        opts = self.options[fam]
        if not opts:
            raise ValueError(f"family {fam!r} has no allowed content in this world/split")
        o = opts[rng.choice(len(opts))]
        relation = None
        if fam == "single_object":
            groups = [(o[0], 1, None)]
        elif fam == "two_object":
            groups = [(o[0], 1, None), (o[1], 1, None)]
        elif fam == "counting":
            groups = [(o[0], o[1], None)]
        elif fam == "colors":
            groups = [(o[0], 1, o[1])]
        elif fam == "position":
            a, rel, b = o
            relation = (a, rel, b)
            groups = [(b, 1, None), (a, 1, None)]
        elif fam == "color_attr":
            a, b = o
            while True:
                ca, cb = self._color(a, rng), self._color(b, rng)
                if ca != cb:
                    break
            groups = [(a, 1, ca), (b, 1, cb)]
        else:  # multi_object
            groups = [(s, n, self._color(s, rng) if rng.random() < 0.5 else None) for s, n in o]
        if fam == "position":
            meta = meta_position(relation[0], relation[1], relation[2])
            caption = position_caption(*relation)
        else:
            meta = {"include": [dict({"class": s, "count": n}, **({"color": c} if c else {})) for s, n, c in groups]}
            caption = caption_from_groups(groups)
        objs = scene_for_metadata(meta, rng, self.world, self.rules)
        if fam != "position":
            order = rng.permutation(len(objs))           # don't tie list order to caption order
            objs = [objs[i] for i in order]
        if not scene_ok(objs, self.rules):               # constructive sampling must never leak a held-out combo
            raise AssertionError(f"training scene violates the split rules: {caption} {objs}")
        return Example(caption, fam, objs, groups, relation)


# ------------------------------------------------------------------------------------------ training captions
def caption_phrases(world) -> dict[str, tuple]:
    """Every object phrase of the world (shape, count, colour or none) → (shape, count, colour)."""
    return {phrase(s, n, c): (s, n, c) for s in world.shapes for n in range(1, world.max_objects + 1)
            for c in (None, *world.colors)}


def caption_metadata(caption: str, tag: str, world, table: dict | None = None) -> dict:
    """GenEval metadata (tag, include, exclude, prompt) of a training caption; ValueError if it does not parse.
    The six GenEval templates + the multi_object family are read back, and the metadata is made completeness-aware
    (training captions describe their scene completely): every named shape gets an exclude at its count + 1 and every
    unnamed world shape an exclude at 1 (GenEval's own exclude rule). `table` = `caption_phrases(world)`, reused."""
    table = table or caption_phrases(world)
    head = "a photo of "
    if not caption.startswith(head):
        raise ValueError(f"caption {caption!r}: does not start with {head!r}")
    body = caption[len(head):]
    meta = None
    for rel in RELATIONS:
        for a in world.shapes:
            for b in world.shapes:
                if body == f"{with_article(a)} {rel} {with_article(b)}":
                    meta = meta_position(a, rel, b)
    if meta is None:
        parts = body.rsplit(" and ", 1)
        parts = parts[0].split(", ") + parts[1:]
        if not all(p in table for p in parts):
            raise ValueError(f"caption {caption!r}: unparsed phrase(s) {[p for p in parts if p not in table]}")
        groups = [table[p] for p in parts]
        meta = {"include": [dict({"class": s, "count": n}, **({"color": c} if c else {})) for s, n, c in groups]}
    total = Counter()
    for req in meta["include"]:
        total[req["class"]] += int(req["count"])
    meta["exclude"] = [{"class": s, "count": total[s] + 1} for s in world.shapes if s in total] + \
                      [{"class": s, "count": 1} for s in world.shapes if s not in total]
    meta["tag"], meta["prompt"] = tag, caption
    return meta
