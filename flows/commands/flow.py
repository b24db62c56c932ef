"""`sana15 flow`: run dvc.yaml under Prefect (flows/pipeline.py) with MLflow parent/child runs.

Without PREFECT_API_URL Prefect starts a temporary local API (~15-25 s); with `prefect server start` running and
PREFECT_API_URL exported the run shows in the UI (docs/orchestration.md)."""
from __future__ import annotations

# Heavy project imports (torch, diffusers, MLflow, Prefect behind them) live inside the functions: `sana15` imports
# every command module to build its parser (import time is the reason).


def _run(args) -> int:
    from flows.pipeline import run_pipeline

    results = run_pipeline(args.root, jobs=args.jobs, retries=args.retries, retry_delay_seconds=args.retry_delay,
                           targets=args.targets or None, force=args.force, track=not args.no_track,
                           run_name=args.run_name)
    for r in results:
        print(f"{r['stage']:28s} {'skipped' if r['skipped'] else 'ran':8s} {r['seconds']:8.1f} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("flow", help="run the DVC pipeline as a Prefect flow (MLflow-tracked)", description=__doc__)
    p.add_argument("targets", nargs="*", help="stages (or foreach bases, e.g. prune) to run with their upstream; "
                                               "default: all")
    p.add_argument("--root", default=".", help="DVC repo root (default: .)")
    p.add_argument("--jobs", type=int, default=1, help="independent stages run concurrently (default 1)")
    p.add_argument("--retries", type=int, default=0, help="retries per stage (default 0)")
    p.add_argument("--retry-delay", type=float, default=10.0, help="seconds between retries")
    p.add_argument("--force", action="store_true", help="pass --force to dvc repro (re-run even if unchanged)")
    p.add_argument("--no-track", action="store_true", help="no MLflow runs")
    p.add_argument("--run-name", default=None, help="MLflow parent run name")
    p.set_defaults(func=_run)
