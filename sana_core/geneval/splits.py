"""Compositional held-out splits (geneval.md §6.7): hold out combinations, never primitives.

Indices are positions in the *full* `COLORS` / `SHAPES` orders (c = 0..9, s = 0..7), also when a world uses a
sub-vocabulary (the rules are then restricted to it):
- bindings   H = {(c, s) : (c + s) mod 5 == 0}          16 of 80 (colors, color_attr)
- pairs      P = {{s, (s + 3) mod 8}}                     8 of 28 unordered pairs (two_object, position)
- counting   (s, N) with N ∈ {2, 3, 4} and (s + N) mod 3 == 0    8 of 24
Strict exclusion: no training scene contains a held-out combination anywhere, mentioned or not (`HeldOut` is the
`rules` object of `prompts.TrainingSampler` / `prompts.scene_ok`).

Evaluation sets (GenEval metadata, scored with the unchanged summary):
- `eval_iid`: seen combinations only: single_object, counting, colors enumerated over the allowed combinations,
  two_object / position / color_attr up to n sampled from the allowed ones (pair allowed and, for color_attr, both
  bindings allowed).
- `eval_comp`: only held-out combinations: 16 two_object (8 pairs × 2 orders), 8 counting, 16 colors, 64 position
  (16 ordered pairs × 4 relations), color_attr = two held-out bindings with distinct shapes and colours (212
  possible, n = 100 sampled); single_object has nothing to hold out and is the same prompts as in eval_iid.
- `calibration_prompts`: 100 training-split prompts, round-robin over the six tags (used for block importance).
A tag with no candidates (small sub-vocabulary) simply contributes no prompts. The sets are defined by the rules
alone: in a sub-vocabulary where a shape keeps no allowed colour (e.g. circle with only red/purple), that shape never
appears in training (`TrainingSampler` drops it) yet its non-held-out prompts still count as "IID".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .prompts import COUNTS, TAGS, enumerate_prompts, shapes_suite
from .world import COLORS, SHAPES, WorldConfig, world_config

N_SHAPES = len(SHAPES)


def binding_held_out(color: str, shape: str) -> bool:
    return (COLORS.index(color) + SHAPES.index(shape)) % 5 == 0


def pair_held_out(a: str, b: str) -> bool:
    i, j = SHAPES.index(a), SHAPES.index(b)
    return i != j and ((i + 3) % N_SHAPES == j or (j + 3) % N_SHAPES == i)


def count_held_out(shape: str, n: int) -> bool:
    return n in COUNTS and (SHAPES.index(shape) + n) % 3 == 0


@dataclass(frozen=True)
class HeldOut:
    """Training rules: everything except the held-out combinations (`enabled=False` allows everything)."""

    enabled: bool = True

    def binding_ok(self, color: str, shape: str) -> bool:
        return not (self.enabled and binding_held_out(color, shape))

    def pair_ok(self, a: str, b: str) -> bool:
        return not (self.enabled and pair_held_out(a, b))

    def count_ok(self, shape: str, n: int) -> bool:
        return not (self.enabled and count_held_out(shape, n))


def held_out_parts(meta: dict) -> dict[str, list]:
    """The held-out combinations a prompt mentions: {"bindings": [(c, s)], "pairs": [(a, b)], "counts": [(s, n)]}."""
    inc = meta["include"]
    out = {"bindings": [], "pairs": [], "counts": []}
    for r in inc:
        if "color" in r and binding_held_out(r["color"], r["class"]):
            out["bindings"].append((r["color"], r["class"]))
    classes = [r["class"] for r in inc]
    for i, a in enumerate(classes):
        for b in classes[i + 1:]:
            if pair_held_out(a, b):
                out["pairs"].append((a, b))
    if meta["tag"] == "counting":
        for r in inc:
            if count_held_out(r["class"], int(r["count"])):
                out["counts"].append((r["class"], int(r["count"])))
    return out


def is_iid(meta: dict) -> bool:
    """Every combination the prompt mentions is allowed in training."""
    return not any(held_out_parts(meta).values())


def is_comp(meta: dict) -> bool:
    """Only held-out combinations: the tag's combination is held out (both bindings for color_attr)."""
    tag, inc = meta["tag"], meta["include"]
    if tag == "single_object":
        return True
    if tag in ("two_object", "position"):
        return pair_held_out(inc[0]["class"], inc[1]["class"])
    if tag == "counting":
        return count_held_out(inc[0]["class"], int(inc[0]["count"]))
    if tag == "colors":
        return binding_held_out(inc[0]["color"], inc[0]["class"])
    if tag == "color_attr":
        return all(binding_held_out(r["color"], r["class"]) for r in inc)
    raise ValueError(f"unknown tag {tag!r}")


def _vocab(world: WorldConfig | None):
    w = world or world_config()
    return w.shapes, w.colors


def eval_iid(world: WorldConfig | None = None, seed: int = 43, n: int = 100) -> list[dict]:
    shapes, colors = _vocab(world)
    return shapes_suite(shapes, colors, seed=seed, n=n, keep=is_iid)


def eval_comp(world: WorldConfig | None = None, seed: int = 43, n: int = 100) -> list[dict]:
    shapes, colors = _vocab(world)
    return shapes_suite(shapes, colors, seed=seed, n=n, keep=is_comp)


def calibration_prompts(world: WorldConfig | None = None, seed: int = 0, n: int = 100) -> list[dict]:
    """n distinct training-split (all combinations allowed) prompts, diverse over the six tags: each tag's allowed
    prompts are shuffled and taken round-robin over the tags until n (or all candidates) are drawn."""
    shapes, colors = _vocab(world)
    rng = np.random.default_rng(seed)
    pools = []
    for tag in TAGS:
        c = [m for m in enumerate_prompts(tag, shapes, colors) if is_iid(m)]
        pools.append([c[i] for i in rng.permutation(len(c))])
    return round_robin(pools, n)


def round_robin(pools, n: int) -> list:
    """Up to n items: the k-th item of every pool in turn, k = 0, 1, … (pools in the given order)."""
    out, k = [], 0
    while len(out) < n and any(k < len(p) for p in pools):
        for p in pools:
            if k < len(p) and len(out) < n:
                out.append(p[k])
        k += 1
    return out


def describe_rules(world: WorldConfig | None = None) -> dict:
    """The held-out combinations inside a world's vocabulary (for world.json)."""
    shapes, colors = _vocab(world)
    return {
        "bindings": [[c, s] for s in shapes for c in colors if binding_held_out(c, s)],
        "pairs": [[a, b] for i, a in enumerate(shapes) for b in shapes[i + 1:] if pair_held_out(a, b)],
        "counts": [[s, n] for s in shapes for n in COUNTS if count_held_out(s, n)],
        "rule": {"bindings": "(c + s) % 5 == 0", "pairs": "{s, (s + 3) % 8}", "counts": "(s + N) % 3 == 0, N in 2..4",
                 "indices": "full COLORS / SHAPES orders"},
    }


def stratified(metas: list[dict], n: int) -> list[dict]:
    """The first n prompts taken round-robin over tags (in file order within a tag); n ≤ 0 → all."""
    if n <= 0 or n >= len(metas):
        return list(metas)
    by_tag: dict[str, list[dict]] = {}
    for m in metas:
        by_tag.setdefault(m["tag"], []).append(m)
    return round_robin(list(by_tag.values()), n)


def judge_training_prompts(world: WorldConfig | None, seed: int, n: int, eval_iid: list[dict],
                           eval_comp: list[dict]) -> tuple[list[dict], list[dict]]:
    """(outside, reserved): the prompts a best-of-N judge is trained on, none of them scored by GenEval-Shapes as a
    prompt the judge has seen. `outside` = up to n training-split prompts (`calibration_prompts`, `seed`) that no
    eval set holds. `reserved` = eval_iid prompts given to the judge (and so removed from every eval split) when
    `outside` has fewer than n — the tiny 4 × 4 world's IID prompts are all in eval_iid: per tag at most half of its
    eval_iid prompts (a seeded shuffle), taken round-robin over the tags; empty when the space outside suffices."""
    banned = {m["prompt"] for m in (*eval_iid, *eval_comp)}
    outside = [m for m in calibration_prompts(world, seed, n + len(banned)) if m["prompt"] not in banned][:n]
    need = n - len(outside)
    if need <= 0:
        return outside, []
    rng = np.random.default_rng([seed, 7])
    by_tag: dict[str, list[dict]] = {}
    for m in eval_iid:
        by_tag.setdefault(m["tag"], []).append(m)
    pools = []
    for tag in sorted(by_tag):
        lst = by_tag[tag]
        pools.append([lst[i] for i in rng.permutation(len(lst))][:len(lst) // 2])
    return outside, round_robin(pools, need)
