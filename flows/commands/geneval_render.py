"""`sana15 geneval-render`: ground-truth renders of a GenEval-Shapes prompt file in GenEval's folder layout.

    sana15 geneval-render --prompts eval_iid.jsonl --out renders/ [--n 4] [--seed 0] [--size 64]
                          [--blur SIGMA] [--noise STD] [--color-jitter K] [--grid] [--overwrite]

Each prompt gets `--n` scenes from `prompts.scene_for_metadata` (seeded by (seed, prompt index, sample index)), so
every image satisfies its prompt exactly; the optional degradations (blur σ px, Gaussian noise std in 8-bit units,
per-object colour jitter ±K) produce the calibration images of geneval.md §6.6. All prompts are checked against the
world before anything is rendered; the output folder appears only when complete (built beside it, then renamed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Heavy project imports (torch, diffusers, MLflow, Prefect behind them) live inside the functions: `sana15` imports
# every command module to build its parser (import time is the reason).


def register(subparsers):
    p = subparsers.add_parser("geneval-render", help="render ground truth for a GenEval-Shapes prompt file",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", required=True, help="GenEval metadata JSONL (one object per line)")
    p.add_argument("--out", required=True, help="output folder (<out>/<%%05d>/metadata.jsonl, samples/*.png)")
    p.add_argument("--n", type=int, default=4, help="images per prompt (default 4, GenEval's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, choices=(64, 32), help="world: 64 (default) or 32 px")
    p.add_argument("--world", default=None, help="a data stage's world.json (e.g. data/shapes/world.json); "
                                                 "overrides --size; default the full world")
    p.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma in px")
    p.add_argument("--noise", type=float, default=0.0, help="additive Gaussian noise std (8-bit units)")
    p.add_argument("--color-jitter", type=int, default=0, help="per-object colour jitter ±K per channel")
    p.add_argument("--grid", action="store_true", help="also write grid.png per prompt")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=run)


def render_prompts(metas, out, n=4, seed=0, world=None, blur=0.0, noise=0.0, color_jitter=0, grid=False) -> int:
    """Render `metas` (validated, inside `world`) into GenEval layout under `out` (which must not exist)."""
    from sana_core.geneval.layout import write_prompt_folder
    from sana_core.geneval.prompts import scene_for_metadata
    from sana_core.geneval.render import degrade, jitter_colors, render

    for i, meta in enumerate(metas):
        imgs = []
        for k in range(n):
            rng = np.random.default_rng([seed, i, k])
            objs = jitter_colors(scene_for_metadata(meta, rng, world), rng, color_jitter)
            img = render(objs, world.image_size, supersample=world.supersample)
            imgs.append(degrade(img, rng, blur=blur, noise=noise) if (blur or noise) else img)
        write_prompt_folder(out, i, meta, imgs, grid=grid)
    return len(metas)


def run(args) -> int:
    from sana_core.atomic import atomic_dir
    from sana_core.geneval.layout import read_metadata_jsonl
    from sana_core.geneval.world import load_world, world_config

    if args.n < 1:
        raise ValueError(f"--n must be ≥ 1, got {args.n}")
    if args.blur < 0 or args.noise < 0 or args.color_jitter < 0:
        raise ValueError("--blur, --noise and --color-jitter must be ≥ 0")
    world = load_world(args.world) if args.world else world_config(args.size)
    path = Path(args.prompts)
    lines = read_metadata_jsonl(path, with_lines=True)
    for line, meta in lines:                       # every prompt must live in the world, before any rendering
        for req in meta["include"] + meta.get("exclude", []):
            if req["class"] not in world.shapes:
                raise ValueError(f"{path}:{line}: class {req['class']!r} is not a shape of the {args.size}px world "
                                 f"{list(world.shapes)}")
            if req.get("color", world.colors[0]) not in world.colors:
                raise ValueError(f"{path}:{line}: colour {req['color']!r} is not in the world {list(world.colors)}")
        if sum(r["count"] for r in meta["include"]) > world.max_objects:
            raise ValueError(f"{path}:{line}: prompt needs more than max_objects={world.max_objects} objects")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise ValueError(f"--out {out} exists and is not empty (use --overwrite to replace it)")
    n = 0

    def write(tmp: Path):
        nonlocal n
        n = render_prompts([m for _, m in lines], tmp, args.n, args.seed, world, args.blur, args.noise,
                           args.color_jitter, args.grid)

    atomic_dir(out, write)
    print(f"geneval-render: {n} prompts × {args.n} images → {out}")
    return 0
