"""The wrapper every DVC stage runs through: `python -m flows.stages.<stage> [item]` ends in `run_stage(name, fn)`.

Contract of a stage function: `fn(params: dict, root: Path, item: str | None) -> dict`.
- `params` is the whole params.yaml, already validated (flows/params.py) — bad params fail here, before any compute.
- `root` is the DVC working directory (the repo root, or a `dvc exp` temp copy); write only the stage's declared outs.
- `item` is the foreach item (`prune@8` → "8"), else None.
- The returned dict is written to `metrics/<stage>[_<item>].json` (atomically; DVC metrics; `report` →
  `reports/report.json`, since report depends on metrics/). Numbers (nested dicts
  allowed → dotted keys) become MLflow metrics. Reserved keys: `variant` (default: see tracking.default_variant),
  `depth` (tag + metric), `model_dir` (folder logged as artifact `model/`), `sample_grid` (PNG logged as
  artifact), `artifacts` ({name: path} extra artifacts), `tags` ({k: v} extra MLflow tags). Paths relative to root.
- Step metrics: call `callback()` inside the stage and hand it to the training loop; each call `cb(step, loss=...,
  lr=..., grad_norm=..., samples_per_s=...)` (or `cb(step, {"loss": ...})`) logs to MLflow with the step and is kept
  for `plots/<stage>[_<item>].json` (DVC plots, x=step), written when the stage succeeds.

Multi-process stages: a training stage (`params.TRAINING_STAGES`) whose train config has `num_processes > 1` (or
`num_machines > 1`, or an `accelerate_config` file), and a geneval stage with `geneval.num_processes > 1`, re-launch
themselves under `accelerate launch` (`relaunch`), so the `dvc.yaml` command and the Prefect task stay `python -m
flows.stages.<stage>`; every process computes (trains, or generates and judges its share of the candidates), only
rank 0 writes metrics, plots, model folders and MLflow records (docs/orchestration.md).

MLflow: `MLFLOW_RUN_ID` set (the Prefect flow created the child run) → resume it; `MLFLOW_PARENT_RUN_ID` only → a new
child of that parent; neither → a run of its own (plain `dvc repro`). `SANA15_TRACKING=0` turns MLflow off; tracking
errors are reported on stderr and never fail a stage (the metrics JSON is the record DVC versions).
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from flows import params as P

StageFn = Callable[[dict, Path, "str | None"], dict]
MAX_ARTIFACT_MB = float(os.environ.get("SANA15_MAX_ARTIFACT_MB", "500"))

_current: "StageContext | None" = None


class StageInputError(ValueError):
    """params.yaml missing/invalid for this stage (raised before any compute)."""


def output_stem(name: str, item: str | None) -> str:
    return f"{name}_{item}" if item is not None else name


# stages whose metrics cannot live under metrics/ (report depends on that folder)
METRICS_FILE = {"report": Path("reports") / "report.json"}


def metrics_path(name: str, item: str | None) -> Path:
    if name in METRICS_FILE:
        return METRICS_FILE[name]
    return Path("metrics") / f"{output_stem(name, item)}.json"


def plots_path(name: str, item: str | None) -> Path:
    return Path("plots") / f"{output_stem(name, item)}.json"


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    from sana_core.atomic import write_text_atomic
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _warn(msg: str) -> None:
    print(f"[sana15 tracking] {msg}", file=sys.stderr)


class StageContext:
    """State of the running stage: MLflow run (if any) and step-metric history."""

    def __init__(self, name: str, item: str | None, root: Path):
        self.name, self.item, self.root = name, item, root
        self.history: list[dict] = []
        self.run_id: str | None = None
        self.client = None

    def start_tracking(self) -> None:
        if os.environ.get("SANA15_TRACKING", "1") == "0":
            return
        try:
            from mlflow.tracking import MlflowClient

            from flows.tracking import create_child_run, ensure_tracking

            exp_id = ensure_tracking(self.root)
            self.client = MlflowClient()
            stage = self.name if self.item is None else f"{self.name}@{self.item}"
            run_id = os.environ.get("MLFLOW_RUN_ID")
            if not run_id and os.environ.get("MLFLOW_PARENT_RUN_ID"):
                run_id = create_child_run(os.environ["MLFLOW_PARENT_RUN_ID"], stage)
            if not run_id:
                run_id = self.client.create_run(exp_id, run_name=stage, tags={"stage": stage}).info.run_id
            import mlflow

            # the fluent run of this process: MLflow samples CPU/memory/disk (system/* metrics) while the stage runs
            mlflow.start_run(run_id=run_id, log_system_metrics=True)
            self.run_id = run_id
        except Exception as e:  # tracking never fails a stage
            _warn(f"MLflow disabled for this stage: {type(e).__name__}: {e}")
            self.run_id = self.client = None

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        row = {"step": int(step)}
        for k, v in values.items():
            if hasattr(v, "item"):  # numpy / 0-d torch
                v = v.item()
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = float(v)
        self.history.append(row)
        if self.client is not None:
            try:
                from flows.tracking import log_metrics

                log_metrics(self.client, self.run_id, {k: v for k, v in row.items()
                                                       if k != "step" and math.isfinite(v)}, step=int(step),
                            synchronous=False)
            except Exception as e:
                _warn(f"step metrics not logged: {e}")

    def finish(self, record: dict, params: dict, ok: bool) -> None:
        if self.client is None:
            return
        import mlflow

        try:
            from flows.tracking import log_datasets, log_stage_record

            mlflow.flush_async_logging()
            if ok:
                stage = self.name if self.item is None else f"{self.name}@{self.item}"
                if self.name == "geneval":   # the variant's training compute beside its score (MLflow compare view)
                    record = {**record, **self._lineage_flops(params)}
                log_stage_record(self.client, self.run_id, stage, self.item, record, params)
                log_datasets(self.run_id, self.root, data_deps(self.root, self.name))
                self._log_artifacts(record)
        except Exception as e:
            _warn(f"run not completed in MLflow: {type(e).__name__}: {e}")
        finally:
            try:
                mlflow.end_run("FINISHED" if ok else "FAILED")
            except Exception as e:
                _warn(f"run not ended in MLflow: {type(e).__name__}: {e}")

    def _lineage_flops(self, params: dict) -> dict:
        """{"train_flops": Σ `flops` of metrics/<stage>.json over the variant's lineage} when all of them exist."""
        try:
            parts = [json.loads((self.root / metrics_path(s, None)).read_text()).get("flops")
                     for s in P.lineage(str(self.item), params)]
        except (OSError, ValueError):
            return {}
        return {"train_flops": float(sum(parts))} if parts and all(isinstance(x, (int, float)) for x in parts) else {}

    def _log_artifacts(self, record: dict) -> None:
        arts = dict(record.get("artifacts") or {})
        if record.get("model_dir"):
            arts["model"] = record["model_dir"]
        if record.get("sample_grid"):
            arts["samples"] = record["sample_grid"]
        from sana_core.components import shared_components
        for name, rel in arts.items():
            p = (self.root / rel) if not Path(rel).is_absolute() else Path(rel)
            if not p.exists():
                _warn(f"artifact {name}: {p} does not exist")
                continue
            # a model folder's shared components (text encoder, tokenizer, codec) are not copied into every run:
            # a tag records their digest and the folder that holds them (sana_core/components.py)
            shared = shared_components(p) if p.is_dir() else {}
            for comp, digest in shared.items():
                self.client.set_tag(self.run_id, f"artifact.{name}.{comp}", f"sha256:{digest} {p / comp}")
            parts = [c for c in p.iterdir() if c.name not in shared] if p.is_dir() else [p]
            size = sum(f.stat().st_size for c in parts for f in ([c] if c.is_file() else c.rglob("*")) if f.is_file())
            if size > MAX_ARTIFACT_MB * 2**20:
                self.client.set_tag(self.run_id, f"artifact.{name}", str(p))  # too big to copy: record the path
                continue
            if p.is_dir() and shared:
                for c in parts:
                    if c.is_dir():
                        self.client.log_artifacts(self.run_id, str(c), f"{name}/{c.name}")
                    else:
                        self.client.log_artifact(self.run_id, str(c), name)
            elif p.is_dir():
                self.client.log_artifacts(self.run_id, str(p), name)
            else:
                self.client.log_artifact(self.run_id, str(p), name if name != "samples" else None)


def _dvc_stage(root: Path, name: str) -> dict:
    """The stage's entry in `<root>/dvc.yaml` (a foreach stage's `do`); {} without one."""
    import yaml

    try:
        st = (yaml.safe_load((Path(root) / "dvc.yaml").read_text()) or {}).get("stages", {}).get(name) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return st.get("do") or st


def data_deps(root: Path, name: str) -> list[str]:
    """The stage's dvc.yaml deps under data/ (what it reads as data: logged as MLflow dataset inputs)."""
    deps = _dvc_stage(root, name).get("deps") or []
    return [str(d) for d in deps if isinstance(d, str) and d.startswith("data/") and "${" not in d]


def declared_plots(root: Path, name: str, item: str | None) -> set[str]:
    """Plots files the stage declares in dvc.yaml (`${item}` filled in)."""
    out = set()
    for entry in _dvc_stage(root, name).get("plots") or []:
        for path in (entry if isinstance(entry, dict) else {entry: None}):
            out.add(str(path).replace("${item}", str(item)))
    return out


def callback(prefix: str = ""):
    """Step-metric callback for the running stage: `cb(step, logs: dict | None = None, **values)`.

    Logs every numeric value (loss, lr, grad_norm, samples_per_s, …) to MLflow at `step` (names get `prefix`), and
    keeps it for the stage's plots JSON. Outside `run_stage` (plain library use) calling it does nothing."""
    ctx = _current

    def cb(step: int, logs: dict | None = None, **values) -> None:
        if ctx is None:
            return
        vals = dict(logs or {})
        vals.update(values)
        ctx.log_step(step, {f"{prefix}{k}": v for k, v in vals.items()})

    return cb


def _rank() -> int:
    """This process's rank in a multi-process stage (RANK is set by accelerate launch / torchrun), else 0."""
    return int(os.environ.get("RANK", "0"))


def launch_command(name: str, item: str | None, cfg: dict) -> list[str] | None:
    """`accelerate launch ... -m flows.stages.<name> [item]` for launch keys (`launch_config`) that ask for more than
    one process, else None. Without `accelerate_config` the keys give the launch: `--multi_gpu` (on a CPU-only machine
    accelerate starts the processes with torchrun and train.py runs them as MULTI_CPU over gloo), processes in all,
    machines, this machine's rank, the main machine's address and port (a free port when one machine and none is
    set)."""
    if cfg["num_processes"] <= 1 and cfg["num_machines"] <= 1 and not cfg["accelerate_config"]:
        return None
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if cfg["accelerate_config"]:
        cmd += ["--config_file", str(cfg["accelerate_config"])]
    else:
        port = cfg["main_process_port"]
        if port is None and cfg["num_machines"] == 1:
            import socket
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        cmd += ["--multi_gpu", "--num_processes", str(cfg["num_processes"]), "--num_machines",
                str(cfg["num_machines"]), "--machine_rank", str(cfg["machine_rank"]), "--dynamo_backend", "no",
                "--mixed_precision", cfg["mixed_precision"]]
        if cfg["main_process_ip"]:
            cmd += ["--main_process_ip", cfg["main_process_ip"]]
        if port is not None:
            cmd += ["--main_process_port", str(port)]
    return cmd + ["-m", f"flows.stages.{name}"] + ([item] if item is not None else [])


# stages that split their inference between processes (sana_core/parallel.py) when their section's num_processes > 1
SPLIT_STAGES = ("geneval",)


def launch_config(params: dict, name: str) -> dict | None:
    """The launch keys of stage `name` (launch_command's input): a training stage's validated train config; a split
    stage's `<section>.num_processes` on this machine (free port, no autocast: the device keys set dtypes); None
    for a stage that always runs as one process."""
    if name in P.TRAINING_STAGES:
        from sana_core.train import validate_config
        return validate_config(P.train_cfg(params, name))
    if name in SPLIT_STAGES:
        return {"num_processes": int(params[name]["num_processes"]), "num_machines": 1, "machine_rank": 0,
                "main_process_ip": None, "main_process_port": None, "accelerate_config": None,
                "mixed_precision": "no"}
    return None


def relaunch(name: str, argv: list[str] | None = None, root: str | Path | None = None) -> int | None:
    """Run a multi-process stage (a training stage, or a split stage: SPLIT_STAGES) under `accelerate launch` and
    return its exit code; None when this stage runs here as it is (one process, or already a launched process). Bad
    params raise StageInputError before anything starts."""
    if name not in (*P.TRAINING_STAGES, *SPLIT_STAGES) or "LOCAL_RANK" in os.environ:
        return None
    argv = sys.argv[1:] if argv is None else list(argv)
    root = Path(root or os.getcwd()).resolve()
    try:
        cfg = launch_config(P.load(root), name)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise StageInputError(e.args[0] if e.args else str(e)) from None
    cmd = launch_command(name, argv[0] if argv else None, cfg)
    if cmd is None:
        return None
    import subprocess
    print(f"stage {name}: {cfg['num_processes']} processes: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=root).returncode


def run_stage(name: str, fn: StageFn, argv: list[str] | None = None, root: str | Path | None = None,
              metrics_file: str | Path | None = None) -> dict:
    """Validate params, run `fn`, write metrics (+ plots) atomically, record in MLflow. Returns the record."""
    global _current
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) > 1:
        raise SystemExit(f"usage: python -m flows.stages.{name} [item]  (got {argv})")
    item = argv[0] if argv else None
    root = Path(root or os.getcwd()).resolve()
    try:  # validation before any compute: the error names the key or file
        params = P.load(root)
        P.stage_section(params, name)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise StageInputError(e.args[0] if e.args else str(e)) from None
    mpath = root / (metrics_file or metrics_path(name, item))

    ctx = StageContext(name, item, root)
    if _rank() != 0:  # a non-zero rank of a multi-process stage computes with the others and writes nothing
        _current = ctx
        try:
            return _call(fn, params, root, item)
        finally:
            _current = None
    ctx.start_tracking()
    _current = ctx
    try:
        record = _call(fn, params, root, item)
        if not isinstance(record, dict):
            raise TypeError(f"stage {name}: function must return a dict of metrics, got {type(record).__name__}")
        record = {"stage": name if item is None else f"{name}@{item}", **record}
        record.setdefault("variant", _variant(name, item))
        if ctx.history or str(plots_path(name, item)) in declared_plots(root, name, item):
            write_json_atomic(ctx.history, root / plots_path(name, item))  # declared: [] when nothing was logged
        write_json_atomic(record, mpath)
    except BaseException:
        ctx.finish({}, params, ok=False)
        raise
    finally:
        _current = None
    ctx.finish(record, params, ok=True)
    return record


def _call(fn: StageFn, params: dict, root: Path, item: str | None) -> dict:
    """`fn(params, root, item)`; a stage without foreach may omit `item`: `fn(params, root)`."""
    import inspect

    try:
        n = len([p for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):
        n = 3
    if n < 3:
        if item is not None:
            raise StageInputError(f"stage {fn.__name__} takes no item, got {item!r}")
        return fn(params, root)
    return fn(params, root, item)


def _variant(name: str, item: str | None) -> str:
    from flows.tracking import default_variant

    return default_variant(name, item)


def log_to_stderr() -> None:
    """The "sana15.*" loggers (progress lines of the long loops, sana_core/progress.py) → stderr at INFO, which DVC
    prints and the Prefect task streams; other libraries' loggers keep their own levels."""
    import logging

    log = logging.getLogger("sana15")
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(name: str, fn: StageFn) -> None:
    """`if __name__ == "__main__": main("data", data)` — bad params: one line on stderr, exit 2; other errors keep
    their traceback. A multi-process training stage re-launches itself (`relaunch`) and exits with its code."""
    import logging
    log_to_stderr()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sana_core").setLevel(logging.INFO)  # train.py's line every train.log_every steps
    try:
        code = relaunch(name)
        if code is not None:
            sys.exit(code)
        run_stage(name, fn)
    except StageInputError as e:
        print(f"stage {name}: error: {e}", file=sys.stderr)
        sys.exit(2)


def _cli(argv: list[str]) -> None:
    """`python -m flows.stage_runner <stage> [item]`: run function `<stage>` of module `flows.stages.<stage>`."""
    import importlib

    if not argv or len(argv) > 2:
        raise SystemExit("usage: python -m flows.stage_runner <stage> [item]")
    name = argv[0]
    fn = getattr(importlib.import_module(f"flows.stages.{name}"), name)
    sys.argv = [sys.argv[0]] + argv[1:]
    main(name, fn)


if __name__ == "__main__":
    _cli(sys.argv[1:])
