"""`sana15 geneval-score <folder> [--size 64 | --world data/shapes/world.json] [--out summary.json]`: score a GenEval-layout image folder with the
GenEval-Shapes evaluator; writes results.jsonl (GenEval's keys) and the summary JSON, prints a task table."""
from __future__ import annotations

import argparse
from pathlib import Path

# Heavy project imports (torch, diffusers, MLflow, Prefect behind them) live inside the functions: `sana15` imports
# every command module to build its parser (import time is the reason).


def register(subparsers) -> None:
    p = subparsers.add_parser("geneval-score", help="score a GenEval-layout folder on GenEval-Shapes",
                              description=__doc__)
    p.add_argument("folder", help="image folder: <index:05d>/metadata.jsonl + samples/<digits>.png")
    p.add_argument("--size", type=int, default=64, choices=(64, 32), help="world size (images are BOX-resized)")
    p.add_argument("--world", default=None, help="a data stage's world.json (e.g. data/shapes/world.json: the tiny "
                                                 "profile's 4 x 4 world); overrides --size; default the full world")
    p.add_argument("--out", default=None,
                   help="summary JSON path (default <folder>/summary.json); results.jsonl is written beside it")
    p.set_defaults(func=run)


def format_table(summ: dict, counts: dict) -> str:
    from sana_core.geneval.evaluate import TASKS

    lines = [f"{'task':<14} {'score':>7} {'n':>6}"]
    for t in TASKS:
        v = summ.get(t)
        lines.append(f"{t:<14} {'-' if v is None else f'{v:.4f}':>7} {counts.get(t, 0):>6}")
    lines.append(f"{'overall':<14} {summ['overall']:>7.4f} {summ['n_images']:>6}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from sana_core.geneval.evaluate import task_counts
    from sana_core.geneval.score import score_folder
    from sana_core.geneval.world import load_world, world_config

    world = load_world(args.world) if args.world else world_config(args.size)
    folder = Path(args.folder)
    out_summary = Path(args.out) if args.out else folder / "summary.json"
    out_results = out_summary.parent / "results.jsonl"
    df, summ = score_folder(folder, world, out_results=out_results, out_summary=out_summary)
    print(format_table(summ, task_counts(df)))
    print(f"wrote {out_results} and {out_summary}")
    return 0
