"""`sana15 generate`: images from a model folder (any folder written by `sana_core.sample.save_pipeline`) as a grid PNG.

    sana15 generate --model models/<stage> --prompt "a photo of a red circle" --n 8 --out grid.png
                    [--steps 20] [--cfg 4.5] [--seed 0] [--solver dpm|euler] [--shift 3.0] [--uncond-mask prompt|null]

Image k uses seed `--seed + k` (the image depends only on (prompt, seed)). Defaults for steps/cfg/solver/shift come
from the folder's sana15.json. The model folder and output suffix are checked before anything is loaded; the PNG is
written to a temp file and renamed.
"""
from __future__ import annotations

from pathlib import Path

# Heavy project imports (torch, diffusers, MLflow, Prefect behind them) live inside the functions: `sana15` imports
# every command module to build its parser (import time is the reason).


def register(subparsers):
    p = subparsers.add_parser("generate", help="generate images from a model folder into a grid PNG",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder (SanaPipeline layout + sana15.json)")
    p.add_argument("--prompt", required=True, action="append",
                   help="prompt (repeat for several prompts: one grid row each)")
    p.add_argument("--n", type=int, default=8, help="images per prompt (default 8)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's, 20)")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (default: 4.5)")
    p.add_argument("--seed", type=int, default=0, help="first seed; image k uses seed+k")
    p.add_argument("--solver", choices=("dpm", "euler"), default=None, help="flow DPM-Solver (default) or flow Euler")
    p.add_argument("--shift", type=float, default=None, help="flow shift (default 3.0)")
    p.add_argument("--uncond-mask", choices=("prompt", "null"), default=None,
                   help="mask of the uncond branch: the prompt's (SANA, default) or the null caption's")
    p.set_defaults(func=run)


def run(args) -> int:
    from sana_core.sample import check_model_dir

    check_model_dir(args.model)                                   # clear error before loading anything
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {out}")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")

    from PIL import Image

    from sana_core.atomic import atomic_file
    from sana_core.geneval.layout import make_grid
    from sana_core.sample import load_sampler

    sampler = load_sampler(args.model, steps=args.steps, guidance_scale=args.cfg, solver=args.solver,
                           shift=args.shift, uncond_mask=args.uncond_mask)
    seeds = [args.seed + k for k in range(args.n)]
    imgs = sampler.generate_grid(args.prompt, seeds)                  # [P, n, H, W, 3]
    grid = make_grid(list(imgs.reshape(-1, *imgs.shape[2:])), cols=args.n)   # one row per prompt
    atomic_file(out, lambda tmp: Image.fromarray(grid).save(tmp))
    print(f"wrote {out} ({len(args.prompt)}×{args.n} images of {sampler.image_size} px, "
          f"{sampler.config.solver} {sampler.config.steps} steps, cfg {sampler.config.guidance_scale})")
    return 0
