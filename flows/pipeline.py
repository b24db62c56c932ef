"""Prefect 3 flow `sana15-pipeline`: drives dvc.yaml, stage by stage, and records it in MLflow (stack-notes §12).

- The DAG is read from dvc.yaml at run time (flows/dag.py): one task per DVC stage, task run named after the stage,
  `wait_for` = the stage's upstream stages. No second copy of the pipeline exists in Python.
- Each task runs `dvc --wait-for-lock repro --single-item <stage>` in a subprocess: DVC decides skips from dvc.lock
  (Prefect caching is off: `NO_CACHE`), `--single-item` checks only that stage because the flow already ordered its
  upstream. Stage stdout/stderr stream into the task log line by line as the stage writes them (progress lines
  included); a non-zero exit fails the task (retries re-run the idempotent `dvc repro -s`).
- Independent stages run concurrently (`jobs` threads) — safe because DVC guarantees disjoint outs per stage
  (checked again in dag.py) and releases the repo lock while a stage's cmd runs. With `jobs > 1` each stage gets
  `OMP_NUM_THREADS = cpus // jobs` unless set.
- MLflow: params are validated, then a parent run is created (params.yaml flattened, git commit + dvc.lock hash tags)
  before the fan-out; each task creates a child run and passes `MLFLOW_RUN_ID` / `MLFLOW_PARENT_RUN_ID` to the
  subprocess env only; stage_runner resumes it. For stages DVC skipped, the task logs the stage's metrics JSON into
  the child (tag `dvc_skipped=true`), so every pipeline run has one complete child per stage.
- Linked views: flow runs are named `<profile>@<commit>-<time>`; the MLflow parent run carries the Prefect flow-run
  id and name (tags `prefect.flow_run_id`, `prefect.flow_run_name`); the Prefect run gets a link artifact to the
  MLflow parent run (UI base: `SANA15_MLFLOW_UI`, default http://127.0.0.1:5000) and, when the flow ends, markdown
  artifacts of `reports/report.md` and the `sana15 compare` table (keys `sana15-report`, `sana15-compare`).

Offline-safe Prefect env (set before importing prefect when unset): analytics off, ephemeral-server startup timeout
90 s, `PREFECT_HOME=<checkout>/.prefect`. Without `PREFECT_API_URL` Prefect starts a temporary local server
(16–24 s per process); see docs/orchestration.md for `prefect server start`, `serve` and work pools.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_HOME", str(_CHECKOUT / ".prefect"))

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import wait  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from flows import params as P  # noqa: E402
from flows import tracking  # noqa: E402
from flows.dag import load_dag  # noqa: E402

FLOW_NAME = "sana15-pipeline"
LOG_TAIL = 20000
DEFAULT_JOBS = int(os.environ.get("SANA15_JOBS", "1"))  # concurrent stages of served runs (`sana15 serve --jobs`)


def stage_env(root: Path, child_run_id: str | None, parent_run_id: str | None, jobs: int) -> dict[str, str]:
    """Environment of one stage subprocess: venv first on PATH (dvc cmds say `python`), MLflow ids, thread count."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri(root)
    if child_run_id:
        env["MLFLOW_RUN_ID"] = child_run_id
    if parent_run_id:
        env["MLFLOW_PARENT_RUN_ID"] = parent_run_id
    else:  # flow run without tracking: stages make no runs of their own either
        env["SANA15_TRACKING"] = "0"
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _stream(cmd: list[str], cwd: Path, env: dict, log) -> tuple[int, str, str]:
    """Run `cmd`, sending each stdout/stderr line to the task log as it arrives; → (rc, stdout, stderr tail)."""
    import threading

    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    out: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(stream, name):
        for line in stream:
            out[name].append(line)
            log.info("%s", line.rstrip("\n"))
        stream.close()

    threads = [threading.Thread(target=pump, args=(p.stdout, "stdout"), daemon=True),
               threading.Thread(target=pump, args=(p.stderr, "stderr"), daemon=True)]
    for t in threads:
        t.start()
    rc = p.wait()
    for t in threads:
        t.join()
    return rc, "".join(out["stdout"]), "".join(out["stderr"])[-LOG_TAIL:]


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_dvc_stage(stage: str, root: str, metric_files: list[str], parent_run_id: str | None, jobs: int = 1,
                  force: bool = False) -> dict:
    """`dvc --wait-for-lock repro --single-item <stage>` in a subprocess, under an MLflow child run."""
    log = get_run_logger()
    root_p = Path(root)
    child = tracking.create_child_run(parent_run_id, stage) if parent_run_id else None
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage] + (["--force"] if force else [])
    started, t0 = time.time(), time.perf_counter()
    log.info("$ %s", " ".join(cmd[2:]))
    rc, stdout, stderr = _stream(cmd, root_p, stage_env(root_p, child, parent_run_id, jobs), log)
    seconds = time.perf_counter() - t0
    log.info("rc=%s, %.1f s", rc, seconds)
    if rc != 0:
        log.error("stage %s failed; stderr tail:\n%s", stage, stderr[-2000:])
        if child:
            tracking.end_run(child, ok=False)
        raise RuntimeError(f"dvc stage {stage} failed (rc={rc}): {stderr.strip()[-500:]}")
    skipped = f"Stage '{stage}' didn't change, skipping" in stdout
    if child:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        client.set_tag(child, "dvc_skipped", str(skipped).lower())
        if not client.get_run(child).data.metrics:  # skipped, or a cmd that does not use stage_runner
            params = P.load(root_p, validate_=False)
            item = stage.partition("@")[2] or None
            for mf in metric_files:
                path = root_p / mf
                if path.exists():
                    tracking.log_stage_record(client, child, stage, item, json.loads(path.read_text()), params)
        client.log_metric(child, "dvc_seconds", seconds)
        tracking.end_run(child, ok=True)
    return {"stage": stage, "skipped": skipped, "seconds": round(seconds, 2), "started": started,
            "finished": started + seconds, "run_id": child}


def flow_run_name() -> str:
    """`<profile>@<short commit>-<UTC time>` of the flow run's root (Prefect calls it when the run starts)."""
    from prefect.runtime import flow_run

    root = Path(flow_run.parameters.get("root", ".")).resolve()
    try:
        profile = P.read_yaml(root / P.PARAMS_FILE).get("profile", "params")
    except (OSError, ValueError):
        profile = "params"
    return f"{profile}@{tracking.git_commit(root)[:8]}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def mlflow_run_url(run_id: str, experiment_id: str) -> str:
    """The run in the MLflow UI's model-training view (MLflow 3.17's UI picks GenAI vs model training from its
    global `workflowType` switch, default GenAI, not from the experiment's kind tag)."""
    base = os.environ.get("SANA15_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def publish_artifacts(root: Path, parent: str | None) -> list[str]:
    """Prefect artifacts of this flow run: reports/report.md and the `sana15 compare` table (markdown), when they
    exist / can be built. Returns the keys created."""
    from prefect.artifacts import create_markdown_artifact

    keys = []
    report = root / "reports" / "report.md"
    if report.is_file():
        create_markdown_artifact(markdown=report.read_text(), key="sana15-report",
                                 description=f"reports/report.md of {root}")
        keys.append("sana15-report")
    if parent:
        try:
            from flows.commands.compare import compact_table, compare_table

            df = compare_table(root, parent=parent)
            if not df.empty:
                table = compact_table(df, P.load(root, validate_=False), width=10_000)
                create_markdown_artifact(markdown=table.to_markdown(), key="sana15-compare",
                                         description="sana15 compare (this flow run's stages)")
                keys.append("sana15-compare")
        except Exception as e:  # a report view never fails the flow
            get_run_logger().warning("compare artifact not published: %s: %s", type(e).__name__, e)
    return keys


@flow(name=FLOW_NAME, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=DEFAULT_JOBS),
      flow_run_name=flow_run_name)
def sana15_pipeline(root: str = ".", jobs: int = DEFAULT_JOBS, retries: int = 0, retry_delay_seconds: float = 10.0,
                    targets: list[str] | None = None, force: bool = False, track: bool = True,
                    run_name: str | None = None) -> list[dict]:
    """Run dvc.yaml (or `targets` + their upstream) as Prefect tasks; returns one result per stage."""
    root_p = Path(root).resolve()
    params = P.load(root_p)  # bad params fail here, before any stage starts
    dag = load_dag(root_p)
    names = dag.closure(targets) if targets else dag.order
    if any(dag.stages[n].base in ("judge", "geneval") for n in names):
        P.check_brought_eval(params)   # a brought dataset's evaluation setup, before training runs for hours
    print(f"{FLOW_NAME}: {len(names)} stages in {root_p} (jobs={jobs}): {', '.join(names)}")
    parent = None
    if track:
        from prefect.artifacts import create_link_artifact
        from prefect.runtime import flow_run

        parent = tracking.start_parent_run(root_p, params, run_name=run_name or flow_run.name,
                                           tags={"prefect.flow_run_id": str(flow_run.id),
                                                 "prefect.flow_run_name": str(flow_run.name)})
        from mlflow.tracking import MlflowClient
        exp_id = MlflowClient().get_run(parent).info.experiment_id
        create_link_artifact(link=mlflow_run_url(parent, exp_id), link_text=f"MLflow parent run {parent}",
                             key="mlflow-parent-run", description="this flow run's MLflow parent run")
    task_fn = run_dvc_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    ok = False
    try:
        futs = {}
        for n in names:
            futs[n] = task_fn.submit(n, str(root_p), dag.stages[n].metrics, parent, jobs, force,
                                     wait_for=[futs[u] for u in dag.stages[n].upstream if u in futs])
        wait(list(futs.values()))
        results = [f.result() for f in futs.values()]
        ok = True
        return results
    finally:
        if parent:
            n_skip = sum(1 for f in futs.values() if f.state.is_completed() and f.result().get("skipped"))
            tracking.finish_parent_run(root_p, parent, ok, {"stages": len(names), "stages_skipped": n_skip})
        if ok:
            publish_artifacts(root_p, parent)


def run_pipeline(root: str | Path = ".", jobs: int = 1, retries: int = 0, **kw) -> list[dict]:
    """Run the flow with `jobs` concurrent stages (Prefect ThreadPoolTaskRunner)."""
    f = sana15_pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(1, jobs)))
    return f(root=str(Path(root).resolve()), jobs=jobs, retries=retries, **kw)
