"""`sana15 compare`: one row per model variant from MLflow (flows/tracking.py): depth, training FLOPs, GenEval-Shapes
on eval_iid and eval_comp, best-of-N per judge — whatever the stage runs logged; missing values are blank.

Rows: every `variant` tag that has a `depth` tag or was evaluated by a `geneval@<variant>` stage. For each
(variant, stage) the most recent FINISHED run counts (`--parent RUN_ID|latest` restricts to one pipeline run's
children). Metrics of a variant's stages are merged into one row (training stages give depth/FLOPs, geneval gives
scores). The full frame is written to `reports/compare.csv`.

Printed (fits 120 columns): variant, depth, training FLOPs of the variant's whole lineage (`flows.params.lineage`;
the geneval run logs it as `train_flops`), IID and comp = GenEval overall at N = 1 ± the half-width of a 95 % normal
interval over its images (n = images scored; approximate: overall is a mean of task means), and one column per N of
`geneval.best_of` above 1 holding the eval_iid overall of each judge ("tiny/oracle"). `--wide` prints every column instead.
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


def _num(row, col) -> float | None:
    v = row.get(col) if hasattr(row, "get") else None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _score(p: float | None, n: float | None) -> str:
    if p is None:
        return ""
    if not n:
        return f"{p:.3f}"
    return f"{p:.3f}±{1.96 * math.sqrt(max(p * (1 - p), 0.0) / n):.3f}"


def _train_flops(df, variant: str, params: dict | None) -> float | None:
    """The geneval run's `train_flops` (lineage sum), else the sum of the lineage's `flops` rows in this table."""
    from flows.params import lineage

    own = _num(df.loc[variant], "train_flops")
    if own is not None or params is None:
        return own
    try:
        parts = [_num(df.loc[v], "flops") if v in df.index else None for v in lineage(variant, params)]
    except ValueError:
        return _num(df.loc[variant], "flops")
    return float(sum(parts)) if parts and None not in parts else None


def compact_table(df, params: dict | None = None, width: int = 120):
    """The readable view: strings, one column per N of best-of (judges joined by "/"), at most `width` characters
    (rightmost best-of columns dropped first; the caller says so)."""
    import pandas as pd

    bo = {}
    for c in df.columns:
        m = re.fullmatch(r"best_of\.(\d+)\.([^.]+)\.iid\.overall", c)
        if m and int(m.group(1)) > 1:          # N = 1 is the IID column (no judge picks among one image)
            bo.setdefault(int(m.group(1)), []).append(m.group(2))
    judges = sorted({j for js in bo.values() for j in js}, key=lambda j: (j == "oracle", j))
    rows = {}
    for v, r in df.iterrows():
        d, f = _num(r, "depth"), _train_flops(df, v, params)
        row = {"depth": "" if d is None else f"{d:.0f}", "train FLOPs": "" if f is None else f"{f:.2e}",
               "IID": _score(_num(r, "overall"), _num(r, "n_images")),
               "comp": _score(_num(r, "comp.overall"), _num(r, "n_prompts.comp"))}
        for n in sorted(bo):
            vals = [_num(r, f"best_of.{n}.{j}.iid.overall") for j in judges]
            row[f"N={n}"] = "" if all(x is None for x in vals) else "/".join("-" if x is None else f"{x:.3f}" for x in vals)
        rows[v] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "variant"
    dropped = []
    while len(out.columns) > 4 and max(map(len, out.to_string().splitlines() or [""])) > width:
        dropped.append(out.columns[-1])
        out = out.drop(columns=out.columns[-1])
    out.attrs.update(judges=judges, dropped=dropped)
    return out


def _run(args) -> int:
    import pandas as pd

    df = compare_table(args.root, parent=args.parent)
    out = Path(args.root) / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    df.to_csv(tmp)
    tmp.replace(out)
    if args.wide:
        with pd.option_context("display.max_columns", None, "display.width", None, "display.float_format",
                               "{:.4g}".format):
            print((df.drop(columns=["stages"]) if not args.stages else df).to_string())
    elif not df.empty:
        try:
            from flows.params import load
            params = load(args.root, validate_=False)
        except (OSError, ValueError):
            params = None
        table = compact_table(df, params)
        print(table.to_string())
        notes = []
        if table.attrs["judges"]:
            notes.append(f"N=<n>: eval_iid overall of the best {int(_num(df.iloc[0], 'k') or 0) or 'k'} of n "
                         f"candidates per judge ({'/'.join(table.attrs['judges'])})")
        if table.attrs["dropped"]:
            notes.append(f"not shown (width): {', '.join(table.attrs['dropped'])} — `--wide` for every column")
        print("\n".join(notes))
    print(f"\n{len(df)} variants -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare model variants from MLflow (table + reports/compare.csv)",
                       description=__doc__)
    p.add_argument("--root", default=".", help="project root (MLflow store: <root>/mlflow.db unless MLFLOW_TRACKING_URI)")
    p.add_argument("--parent", default=None, help="restrict to one pipeline run: its MLflow run id, or 'latest'")
    p.add_argument("--out", default="reports/compare.csv")
    p.add_argument("--stages", action="store_true", help="with --wide: also print which stages fed each row")
    p.add_argument("--wide", action="store_true", help="print every logged column (the CSV's view)")
    p.set_defaults(func=_run)
