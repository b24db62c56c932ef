"""`sana15 serve`: serve the `sana15-pipeline` flow as a deployment (long-lived process; each run in a subprocess).

Needs a Prefect API: `prefect server start` + `export PREFECT_API_URL=http://127.0.0.1:4200/api`
(docs/orchestration.md). Trigger runs from the UI or `prefect deployment run 'sana15-pipeline/<name>'`."""
from __future__ import annotations

import os
from pathlib import Path

# Heavy project imports (torch, diffusers, MLflow, Prefect behind them) live inside the functions: `sana15` imports
# every command module to build its parser (import time is the reason).


def _serve(args) -> int:
    os.environ["SANA15_JOBS"] = str(args.jobs)  # served runs re-import flows.pipeline in a subprocess
    from flows.pipeline import sana15_pipeline

    sana15_pipeline.serve(name=args.name, parameters={"root": str(Path(args.root).resolve()), "jobs": args.jobs,
                                                       "retries": args.retries},
                          cron=args.cron, limit=1)  # one flow per checkout: a DVC workspace is stateful
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the Prefect flow as a deployment", description=__doc__)
    p.add_argument("--name", default="sana15", help="deployment name (default sana15)")
    p.add_argument("--root", default=".", help="DVC repo root (default: .)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--cron", default=None, help="optional schedule, e.g. '0 3 * * *'")
    p.set_defaults(func=_serve)
