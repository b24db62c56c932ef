"""`sana15 compare`: one row per model variant from MLflow (flows/tracking.py): depth, parameter count, training
FLOPs, GenEval overall + six tasks, best-of-N at each N — whatever the stage runs logged; missing values are NaN.

Rows: every `variant` tag that has a `depth` tag or was evaluated by a `geneval@<variant>` stage. For each
(variant, stage) the most recent FINISHED run counts (`--parent RUN_ID|latest` restricts to one pipeline run's
children). Metrics of a variant's stages are merged into one row (training stages give depth/FLOPs, geneval gives
scores). Written to `reports/compare.csv`.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from sana_core.geneval.evaluate import TASKS as GENEVAL_TASKS

# Heavy project imports (torch, diffusers, MLflow, Prefect behind them) live inside the functions: `sana15` imports
# every command module to build its parser (import time is the reason).

TASKS = ("overall", *GENEVAL_TASKS)
DROP = ("dvc_seconds",)


def _col_key(col: str):
    last = col.rsplit(".", 1)[-1]
    nums = [int(x) for x in re.findall(r"\d+", col)]
    if col == "depth":
        return (0, [], col, 0)
    if "param" in col:
        return (1, [], col, 0)
    if "flops" in col.lower():
        return (2, [], col, 0)
    if last in TASKS:
        best = "best_of" in col or re.search(r"(^|[._])n\d+", col) is not None
        prefix = re.sub(r"\d+", "", col.rsplit(".", 1)[0]) if "." in col else ""
        return (4 if best else 3, nums if best else [], prefix, TASKS.index(last))
    return (9, [], col, 0)


def compare_table(root: str | Path = ".", parent: str | None = None):
    """→ pandas.DataFrame indexed by variant (sorted by depth, then name)."""
    import mlflow
    import pandas as pd

    from flows.tracking import EXPERIMENT, PIPELINE_TAG, ensure_tracking

    ensure_tracking(root)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=50000)
    empty = pd.DataFrame(columns=["depth", "stages"]).rename_axis("variant")
    if runs.empty or "tags.variant" not in runs:
        return empty
    if parent:
        if parent == "latest":
            parents = runs[runs.get(f"tags.{PIPELINE_TAG}", pd.Series(dtype=object)) == "true"]
            if parents.empty:
                raise ValueError("compare: --parent latest: no pipeline (parent) runs in MLflow")
            parent = parents.iloc[0]["run_id"]
        runs = runs[runs.get("tags.mlflow.parentRunId", pd.Series(dtype=object)) == parent]
    runs = runs[runs["tags.variant"].notna()]
    runs = runs.drop_duplicates(subset=["tags.variant", "tags.stage"], keep="first")  # newest per stage
    base = runs.get("tags.stage_base", runs["tags.stage"].str.split("@").str[0])
    depth_tag = runs.get("tags.depth", pd.Series(index=runs.index, dtype=object))
    keep = set(runs.loc[depth_tag.notna(), "tags.variant"]) | set(runs.loc[base == "geneval", "tags.variant"])
    rows = {}
    metric_cols = [c for c in runs.columns if c.startswith("metrics.")]
    for variant, grp in runs[runs["tags.variant"].isin(keep)].groupby("tags.variant", sort=False):
        row: dict = {}
        for _, r in grp.iterrows():  # newest first: keep the first non-NaN value of each metric
            for c in metric_cols:
                v = r[c]
                name = c[len("metrics."):]
                if name in DROP or v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                row.setdefault(name, v)
            d = r.get("tags.depth")
            if isinstance(d, str) and d:
                row.setdefault("depth", float(d))
        row["stages"] = ",".join(sorted(grp["tags.stage"]))
        rows[variant] = row
    if not rows:
        return empty
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "variant"
    if "depth" not in df:
        df["depth"] = float("nan")
    metric_order = sorted([c for c in df.columns if c != "stages"], key=_col_key)
    df = df[metric_order + ["stages"]]
    df = df.sort_values(["depth"], kind="stable", na_position="last")
    return df


def _run(args) -> int:
    import pandas as pd

    df = compare_table(args.root, parent=args.parent)
    out = Path(args.root) / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    df.to_csv(tmp)
    tmp.replace(out)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format", "{:.4g}".format):
        print(df.drop(columns=["stages"]) if not args.stages else df)
    print(f"\n{len(df)} variants -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare model variants from MLflow (table + reports/compare.csv)",
                       description=__doc__)
    p.add_argument("--root", default=".", help="project root (MLflow store: <root>/mlflow.db unless MLFLOW_TRACKING_URI)")
    p.add_argument("--parent", default=None, help="restrict to one pipeline run: its MLflow run id, or 'latest'")
    p.add_argument("--out", default="reports/compare.csv")
    p.add_argument("--stages", action="store_true", help="also print which stages fed each row")
    p.set_defaults(func=_run)
