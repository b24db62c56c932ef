"""MLflow glue (stack-notes §10, §12): one absolute sqlite store per checkout, experiment `sana15`, one parent run per
pipeline run, one child run per DVC stage.

- Tracking URI: `MLFLOW_TRACKING_URI` if set, else `sqlite:///<abs root>/mlflow.db` (never MLflow's CWD-relative
  default: DVC and Prefect run commands from other directories). Artifacts: `<root>/mlartifacts`.
- `ensure_tracking(root)` creates the DB (migrations, ~8 s the first time) and the experiment once, in the calling
  process, before any fan-out: concurrent first-time creation races (`duplicate column name: step`).
- Child runs are created with an explicit `parent_run_id` through `MlflowClient` (the active-run stack is thread-local),
  and a stage subprocess resumes its child through `MLFLOW_RUN_ID`, which is set only in that subprocess's env.
- `log_stage_record` is the one place that turns a stage's metrics dict into tags/params/metrics; the stage process and
  the flow (for stages DVC skipped) both call it, so a child run looks the same whether the stage ran or not.
"""
from __future__ import annotations

import hashlib
import math
import os
import subprocess
from pathlib import Path
from typing import Any

EXPERIMENT = "sana15"
PIPELINE_TAG = "sana15.pipeline"  # on parent runs
RESERVED = ("variant", "depth", "model_dir", "sample_grid", "artifacts", "tags", "stage", "item")


# the user's override, read once: mlflow.set_tracking_uri() itself writes MLFLOW_TRACKING_URI into os.environ
_ENV_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(root: str | Path = ".") -> str:
    return _ENV_URI or f"sqlite:///{Path(root).resolve()}/mlflow.db"


def ensure_tracking(root: str | Path = ".", experiment: str | None = None) -> str:
    """Point MLflow at the project's store, create DB + experiment if missing; return the experiment id."""
    import mlflow

    root = Path(root).resolve()
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    mlflow.set_tracking_uri(tracking_uri(root))  # process-wide: every thread's MlflowClient() uses this store
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = mlflow.create_experiment(name, artifact_location=(root / "mlartifacts").as_uri())
        except Exception:  # created meanwhile by another process
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# ------------------------------------------------------------------------------------------------ small helpers
def git_commit(root: str | Path = ".") -> str:
    try:
        p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else "none"
    except (OSError, subprocess.TimeoutExpired):
        return "none"


def file_hash(path: str | Path) -> str:
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "none"


def numeric_metrics(d: dict, prefix: str = "") -> dict[str, float]:
    """Flatten a (nested) metrics dict to dotted keys, keeping finite-or-nan numbers (bools → 0/1)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if not prefix and k in RESERVED and k != "depth":
            continue
        if isinstance(v, dict):
            out.update(numeric_metrics(v, key))
        elif isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, (int, float)) and not (isinstance(v, float) and math.isinf(v)):
            out[key] = float(v)
    return out


def _params_for_mlflow(flat: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:6000] for k, v in flat.items()}


def log_params(client, run_id: str, flat: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in _params_for_mlflow(flat).items()]
    for i in range(0, len(items), 100):  # MLflow batch limit
        client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(client, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(k, v, ts, step) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i:i + 1000])


def stage_tags(stage: str, item: str | None, record: dict, params: dict | None) -> dict[str, str]:
    """Tags every child run carries: stage (DVC addressing), variant, depth, params_hash (+ the stage's own tags)."""
    from flows.params import params_hash, stage_section

    base = stage.split("@", 1)[0]
    tags = {"stage": stage, "stage_base": base, "variant": str(record.get("variant") or default_variant(base, item))}
    if item is not None:
        tags["item"] = str(item)
    if record.get("depth") is not None:
        tags["depth"] = str(record["depth"])
    if params is not None and base in params:
        tags["params_hash"] = params_hash(stage_section(params, base))
    tags.update({str(k): str(v) for k, v in (record.get("tags") or {}).items()})
    return tags


def default_variant(stage: str, item: str | None) -> str:
    """Model-variant name of a stage run: `geneval@<v>` → `<v>` (its items are model folders), `prune@8` → `prune_8`,
    `sft` → `sft` (= the folder under models/)."""
    from flows.params import variant_name

    return str(item) if stage == "geneval" and item is not None else variant_name(stage, item)


def log_stage_record(client, run_id: str, stage: str, item: str | None, record: dict, params: dict | None) -> None:
    """Tags + flattened params + numeric metrics of one stage on its run (idempotent: same values again are fine)."""
    from flows.params import flatten

    for k, v in stage_tags(stage, item, record, params).items():
        client.set_tag(run_id, k, v)
    if params is not None:
        log_params(client, run_id, flatten(params))
    log_metrics(client, run_id, numeric_metrics(record))


# ----------------------------------------------------------------------------------------------------- runs
def start_parent_run(root: str | Path, params: dict, run_name: str | None = None, tags: dict | None = None) -> str:
    """Create the pipeline's parent run (params.yaml flattened as params; git commit and dvc.lock hash as tags)."""
    from mlflow.tracking import MlflowClient

    from flows.params import flatten

    root = Path(root).resolve()
    exp_id = ensure_tracking(root)
    client = MlflowClient()
    t = {PIPELINE_TAG: "true", "git_commit": git_commit(root), "dvc_lock_hash": file_hash(root / "dvc.lock"),
         "params_hash": file_hash(root / "params.yaml"), "profile": str(params.get("profile", "")),
         "root": str(root)}
    t.update({k: str(v) for k, v in (tags or {}).items()})
    run = client.create_run(exp_id, run_name=run_name or f"pipeline-{params.get('profile', 'run')}", tags=t)
    log_params(client, run.info.run_id, flatten(params))
    return run.info.run_id


def create_child_run(parent_run_id: str, stage: str) -> str:
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name=stage,
                            tags={MLFLOW_PARENT_RUN_ID: parent_run_id, "stage": stage})
    return run.info.run_id


def end_run(run_id: str, ok: bool = True) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def finish_parent_run(root: str | Path, run_id: str, ok: bool, summary: dict | None = None) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, "dvc_lock_hash_end", file_hash(Path(root) / "dvc.lock"))
    if summary:
        log_metrics(client, run_id, numeric_metrics(summary))
    client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
