"""Balanced, contrastive training data for a best-of-N judge: renders of the prompt and of its near misses.

A base model's own samples are mostly wrong (the tiny base: ~5 % of the judge's training images were correct), so
a judge trained on them alone learns "no" plus the prompt type's prior — the tiny judge's validation balanced accuracy
was 0.50 and its pooled AUC (0.66) came from ranking prompts, not the candidates of one prompt, which is all a knockout
uses. Here every training prompt also gets `per_prompt` renders (the world's own renderer, seeded): half of the
prompt itself, half of a **near miss** — the same tag with one slot changed (another colour, another shape, count ± 1,
the opposite relation or the two objects swapped) or one of its two objects missing (the base model's most frequent
failure, docs/results.md §8). Each render is labelled by the exact evaluator (`score_image` against the *original*
prompt), never by how it was made, so a near miss that happens to satisfy the prompt is a "yes". `roundtrip` (the
base model's codec encode → decode) gives the renders the texture of generated images.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..geneval.prompts import enumerate_prompts, meta_colors, meta_single, scene_for_metadata
from ..geneval.render import Obj, render
from ..geneval.score import score_image
from .tiny import parse_prompt


def _slots(meta: dict) -> tuple:
    p = parse_prompt(meta["prompt"])
    return tuple(x for g in p.groups for x in g) + (p.relation,)


def near_misses(meta: dict, world) -> list[dict]:
    """Prompts of meta's tag in `world` that differ from it in exactly one slot (shape, colour, count or relation) or
    by swapping its two objects, plus (two-object tags) each of its objects alone. Sorted by prompt (deterministic)."""
    me = _slots(meta)
    p = parse_prompt(meta["prompt"])
    out = []
    for m in enumerate_prompts(meta["tag"], world.shapes, world.colors):
        o = _slots(m)
        if len(o) != len(me) or m["prompt"] == meta["prompt"]:
            continue
        diff = sum(a != b for a, b in zip(o, me))
        swapped = len(p.groups) == 2 and parse_prompt(m["prompt"]).groups == p.groups[::-1] \
            and parse_prompt(m["prompt"]).relation == p.relation
        if diff == 1 or swapped:
            out.append(m)
    if len(meta["include"]) == 2:
        for req in meta["include"]:
            out.append(meta_colors(req["class"], req["color"]) if "color" in req else meta_single(req["class"]))
    return sorted(out, key=lambda m: m["prompt"])


def degrade_scene(objs: list[Obj], rng: np.random.Generator, world) -> list[Obj]:
    """The prompt's scene drawn badly, as the base model fails (docs/results.md §9.1): one object shrunk to
    0.3–0.6 of the smallest size (often too small to detect), or a second copy of one object overlapping it by
    half (a merged blob that is no longer the shape), or a copy elsewhere (one object too many)."""
    objs = list(objs)
    i = int(rng.integers(len(objs)))
    o, kind = objs[i], int(rng.integers(3))
    if kind == 0:
        objs[i] = replace(o, side=float(world.size_min * rng.uniform(0.3, 0.6)))
    elif kind == 1:
        a = rng.uniform(0, 2 * np.pi)
        d = o.side * rng.uniform(0.35, 0.6)
        lim = (o.side / 2, world.image_size - o.side / 2)
        objs.append(replace(o, cx=float(np.clip(o.cx + d * np.cos(a), *lim)), cy=float(np.clip(o.cy + d * np.sin(a), *lim))))
    else:
        lo, hi = o.side / 2, world.image_size - o.side / 2
        objs.append(replace(o, cx=float(rng.uniform(lo, hi)), cy=float(rng.uniform(lo, hi))))
    return objs


def contrast_set(metas: Sequence[dict], world, per_prompt: int, seed: int,
                 roundtrip: Callable[[np.ndarray], np.ndarray] | None = None, scenes: list | None = None,
                 degraded: float = 0.0) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """`per_prompt` renders for every prompt of `metas` (⌈half⌉ of the prompt, the rest of random near misses —
    each of those, with probability `degraded`, the prompt's own scene drawn badly instead: `degrade_scene`),
    optionally through `roundtrip` (uint8 [B, H, W, 3] → same), each labelled by the evaluator against its prompt:
    (images uint8 [P·per_prompt, H, W, 3], metadata per image, labels bool). `scenes`: a list that receives each
    image's objects (render.Obj; None for a degraded render, whose drawn objects the evaluator may not see), for
    dense supervision."""
    if per_prompt < 1 or not metas:
        raise ValueError(f"contrast_set: need prompts and per_prompt ≥ 1 (got {len(metas)}, {per_prompt})")
    rng = np.random.default_rng([seed, 17])
    imgs, rows = [], []
    for meta in metas:
        misses = near_misses(meta, world)
        n_pos = (per_prompt + 1) // 2 if misses else per_prompt
        for j in range(per_prompt):
            bad = j >= n_pos and degraded > 0 and rng.random() < degraded
            src = meta if j < n_pos or bad else misses[rng.integers(len(misses))]
            objs = scene_for_metadata(src, rng, world)
            if bad:
                objs = degrade_scene(objs, rng, world)
            imgs.append(render(objs, world.image_size))
            if scenes is not None:
                scenes.append(None if bad else objs)
            rows.append(meta)
    arr = np.stack(imgs)
    if roundtrip is not None:
        arr = np.asarray(roundtrip(arr), np.uint8)
    labels = np.array([score_image(im, m, world)[0] for im, m in zip(arr, rows)], bool)
    return arr, rows, labels
