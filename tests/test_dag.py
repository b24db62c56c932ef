"""dvc.yaml is the DAG: its graph (flows/dag.py), a real `dvc repro` of the project's dvc.yaml (smoke profile) in a
temp git repo, and the Prefect flow (flows/pipeline.py) over the whole DAG with
stand-in stage bodies, recorded in MLflow and tabulated by `sana15 compare`.

The one Prefect test harness of the suite is the session fixture `prefect_harness` below (not autouse)."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows import params as P
from flows import tracking
from flows.dag import load_dag
from flows.stage_runner import metrics_path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dvc pygtrie, SQLAlchemy (mlflow, prefect)
ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)

# Stand-in stage bodies for the target DAG: same wrapper (flows.stage_runner), declared outs, step callback,
# metrics shaped like the real stages'. The DAG wiring, not the science, is under test here.
STANDIN = r'''
import json, os, sys, time
from pathlib import Path
from flows.stage_runner import callback, run_stage
from sana_core.geneval.evaluate import TASKS

OUTS = json.loads(Path("standin_outs.json").read_text())
TRAIN = {"pretrain_base", "pretrain_grown", "sft", "finetune", "scratch", "judge"}

def fn(params, root, item):
    stage = sys.argv[1]
    t0 = time.time()
    for o in OUTS[stage]:
        p = root / o.replace("${item}", str(item))
        if p.suffix:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"{stage} {item} {json.dumps(params[stage], sort_keys=True)}\n")
        else:
            p.mkdir(parents=True, exist_ok=True)
            (p / "weights.txt").write_text(f"{stage} {item} {json.dumps(params[stage], sort_keys=True)}\n")
    rec = {}
    if stage in TRAIN:
        cb = callback()
        for s in range(3):
            cb(s, loss=1.0 / (s + 1), lr=1e-3, grad_norm=0.1 * s, samples_per_s=50.0)
    depth = {"pretrain_base": 2, "grow": params["grow"]["target_depth"], "pretrain_grown": params["grow"]["target_depth"],
             "sft": params["grow"]["target_depth"]}.get(stage, int(item) if stage in ("prune", "finetune", "scratch") else None)
    if depth is not None:
        rec.update(depth=depth, n_params=1000 * depth, model_dir=OUTS[stage][0].replace("${item}", str(item)))
        if stage in TRAIN:
            rec["train_flops"] = 1e6 * depth * params[stage]["steps"]
    if stage == "importance":
        Path("plots").mkdir(exist_ok=True)
        Path("plots/importance.json").write_text(json.dumps([{"block": b, "importance": 0.1 * b} for b in range(4)]))
    if stage == "geneval":
        from PIL import Image
        base = 0.1 * len(item) / 10
        scores = {t: round(base + 0.01 * i, 4) for i, t in enumerate(TASKS)}
        rec.update(overall=round(sum(scores.values()) / 6, 6), **scores)
        rec["best_of"] = {str(n): {"overall": round(rec["overall"] + 0.05 * k, 6)}
                          for k, n in enumerate(params["geneval"]["best_of"])}
        Path("plots").mkdir(exist_ok=True)
        Path(f"plots/geneval_{item}.json").write_text(json.dumps(
            [{"N": int(n), "overall": v["overall"]} for n, v in rec["best_of"].items()]))
        Image.new("RGB", (16, 16), (30, 70, 225)).save(root / f"geneval/{item}/grid.png")
        rec["sample_grid"] = f"geneval/{item}/grid.png"
    rec.update(t_start=t0, t_end=time.time())
    return rec

stage = sys.argv[1]
if stage not in ("finetune", "geneval"):  # MLflow in-stage only where asserted (CPU); the flow logs the others
    os.environ["SANA15_TRACKING"] = "0"
run_stage(stage, fn, argv=sys.argv[2:])
'''


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = os.pathsep.join([VENV_BIN, env.get("PATH", "")])
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _sh(cmd: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True)
    assert p.returncode == 0, f"{cmd} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _init_repo(path: Path, profile: str = "smoke") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    _sh(["git", "init", "-q"], path)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], path)
    with open(path / ".dvcignore", "a") as f:
        f.write("__pycache__/\n*.pyc\n")
    P.use_profile(profile, path)
    return path


def _repro(path: Path, *targets: str, **env) -> tuple[str, float]:
    t0 = time.perf_counter()
    p = _sh([sys.executable, "-m", "dvc", "repro", *targets], path, **env)
    return p.stdout, time.perf_counter() - t0


@pytest.fixture(scope="session")
def prefect_harness():
    """The suite's single Prefect test harness (temp DB, throw-away API server; ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _own_tracking(monkeypatch):
    monkeypatch.setattr(tracking, "_ENV_URI", None)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_PARENT_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(k, raising=False)


# ------------------------------------------------------------------------------------------------ graph reading
def _target_dag(tmp_path: Path, profile: str):
    d = tmp_path / profile
    d.mkdir()
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    P.use_profile(profile, d)
    return load_dag(d)


def _levels(dag) -> list[list[str]]:
    """Stages grouped by longest distance from a source: each group could run concurrently."""
    depth: dict[str, int] = {}
    for n in dag.order:
        depth[n] = 1 + max((depth[u] for u in dag.stages[n].upstream), default=-1)
    return [[n for n in dag.order if depth[n] == d] for d in range(max(depth.values()) + 1)]


def test_target_dag_structure_tiny(tmp_path):
    dag = _target_dag(tmp_path, "tiny")
    t = [6]
    variants = P.load_profile("tiny")["geneval"]["variants"]
    assert dag.order == (["data", "codec", "encode", "curate", "pretrain_base", "grow", "pretrain_grown", "sft",
                          "importance"]
                         + [f"prune@{x}" for x in t] + [f"finetune@{x}" for x in t] + [f"scratch@{x}" for x in t]
                         + ["judge"] + [f"geneval@{v}" for v in variants] + ["report"])
    up = {n: s.upstream for n, s in dag.stages.items()}
    assert up["data"] == [] and up["codec"] == ["data"] and up["encode"] == ["data", "codec"]
    assert up["curate"] == ["data", "encode"] and up["pretrain_base"] == ["data", "codec", "encode"]
    assert up["grow"] == ["pretrain_base"] and up["pretrain_grown"] == ["data", "encode", "grow"]
    assert up["sft"] == ["data", "encode", "curate", "pretrain_grown"]
    assert up["importance"] == ["data", "sft"] and up["prune@6"] == ["sft", "importance"]
    assert up["finetune@6"] == ["data", "encode", "curate", "prune@6"]  # heals on sft's curated data
    # scratch reads the lineage's FLOPs (metrics of base, grown, sft, finetune) to match compute
    assert up["scratch@6"] == ["data", "codec", "encode", "pretrain_base", "pretrain_grown", "sft", "finetune@6"]
    assert up["judge"] == ["data", "pretrain_base"]  # trained on the base model's own images
    assert up["geneval@finetune_6"] == ["data", "finetune@6", "judge"]
    assert up["geneval@pretrain_base"] == ["data", "pretrain_base", "judge"]
    # report reads metrics/ and plots/: every stage writes metrics/ (or plots/) is upstream of it
    assert set(up["report"]) == set(dag.order) - {"report"}
    assert dag.stages["prune@6"].metrics == ["metrics/prune_6.json"] and dag.stages["report"].metrics == ["reports/report.json"]
    assert dag.stages["geneval@sft"].plots == ["plots/geneval_sft.json"]
    assert dag.stages["finetune@6"].plots == ["plots/finetune_6.json"]
    assert dag.stages["finetune@6"].cmd == "python -m flows.stages.finetune 6"
    assert dag.stages["scratch@6"].outs[0] == "models/scratch_6"
    for name, s in dag.stages.items():  # conventions: cmd, metrics file, params section per stage
        assert s.cmd.split()[:3] == ["python", "-m", f"flows.stages.{s.base}"], name
        stem = f"{s.base}_{s.item}" if s.item else s.base
        assert s.metrics == ([f"metrics/{stem}.json"] if s.base != "report" else ["reports/report.json"])
        assert s.base in P.default_params()
    # parallel levels and upstream closure
    lv = _levels(dag)
    assert lv[0] == ["data"] and lv[1] == ["codec"] and lv[2] == ["encode"]
    assert lv[3] == ["curate", "pretrain_base"] and set(lv[4]) == {"grow", "judge"}
    assert set(lv[-3]) == {"scratch@6", "geneval@finetune_6"}
    assert dag.closure(["finetune@6"]) == ["data", "codec", "encode", "curate", "pretrain_base", "grow",
                                           "pretrain_grown", "sft", "importance", "prune@6", "finetune@6"]
    assert dag.closure(["scratch"]) == ["data", "codec", "encode", "curate", "pretrain_base", "grow", "pretrain_grown",
                                        "sft", "importance", "prune@6", "finetune@6", "scratch@6"]
    with pytest.raises(ValueError, match="no stage 'nope'"):
        dag.closure(["nope"])


def test_target_dag_follows_params(tmp_path):
    dag = _target_dag(tmp_path, "paper")
    assert [n for n in dag.order if n.startswith("prune@")] == ["prune@40", "prune@30", "prune@20"]
    assert dag.stages["importance"].upstream == ["data", "pretrain_grown"]  # importance.source: pretrain_grown


def test_brought_dataset_is_a_dependency_of_the_stages_that_read_it(tmp_path):
    """`${data.path}` in dvc.yaml: the shapes world's data/shapes by default, the brought dataset otherwise — a
    dependency of codec and encode (new data re-runs them and what depends on their outs), not of the stages
    that read data/cache."""
    tiny = _target_dag(tmp_path, "tiny")
    assert "data/shapes" in tiny.stages["encode"].deps and "data/shapes" in tiny.stages["codec"].deps
    d = tmp_path / "brought"
    d.mkdir()
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    P.use_profile("tiny", d)
    p = P.read_yaml(d / "params.yaml", roundtrip=True)
    p["data"]["source"], p["data"]["path"] = "imagefolder", "/datasets/my_folder"
    P.write_yaml_atomic(p, d / "params.yaml")
    dag = load_dag(d)
    assert [n for n, s in dag.stages.items() if any(x.endswith("my_folder") for x in s.deps)] == ["codec", "encode"]


def test_project_dvc_yaml_stages_are_runnable_names():
    dag = load_dag(ROOT)  # no `dvc init` needed to read it
    assert dag.order and dag.order[0] == "data"
    for name, s in dag.stages.items():
        assert s.base in P.default_params(), name
        assert (ROOT / "flows" / "stages" / f"{s.base}.py").exists(), name
        assert s.metrics == [str(metrics_path(s.base, s.item))]  # report writes reports/report.json


# -------------------------------------------------------------------------------------------- real dvc repro
def test_dvc_repro_project_data_stage_then_noop(tmp_path):
    """The project's dvc.yaml (smoke profile) in a temp git repo: `dvc repro data` runs the real stage through the
    wrapper and writes its outs; a second repro skips it. (The whole real pipeline takes minutes of CPU even on smoke:
    the full DAG's wiring is exercised below with stand-in bodies; the science is the stage functions' own tests.)"""
    repo = _init_repo(tmp_path / "proj")  # MLflow is off here (SANA15_TRACKING=0): tracked runs are tested below
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    ign = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("flows", "sana_core", "profiles"):
        shutil.copytree(ROOT / d, repo / d, ignore=ign)
    out, _ = _repro(repo, "data", SANA15_TRACKING="0")
    s = load_dag(repo).stages["data"]
    assert "Running stage 'data'" in out and out.count("Running stage") == 1
    for o in s.outs:
        assert (repo / o).exists(), f"missing out {o}"
    m = json.loads((repo / "metrics" / "data.json").read_text())
    assert m["stage"] == "data" and m["n_train"] == P.load_profile("smoke")["data"]["pool_size"] == 64
    assert (repo / "data" / "shapes" / "metadata.jsonl").exists()   # the world written as an image folder
    assert json.loads((repo / "data" / "shapes" / "source.json").read_text())["format"] == "imagefolder"
    out2, dt = _repro(repo, "data", SANA15_TRACKING="0")
    assert "Stage 'data' didn't change, skipping" in out2 and "Running stage" not in out2
    print(f"no-op dvc repro data: {dt:.2f} s")


def test_brought_dataset_rejects_shapes_judges_and_splits_before_compute(tmp_path):
    """A brought dataset: the tiny / oracle judge, eval_comp, a missing detector or CLIP → an error naming the key,
    raised by stages judge and geneval before they load anything (no models in tmp_path)."""
    from flows.stages.geneval import check
    from flows.stages.judge import judge
    p = P.default_params()
    p["data"].update(source="imagefolder", path="brought")
    p["judge"].update(name="clip", path=str(tmp_path))
    p["geneval"].update(splits=["eval_iid"], detector=str(tmp_path), clip=str(tmp_path))
    P.check_brought_eval(p)                                     # the complete setup passes
    for key, edit in (("judge.name", {"judge": {"name": "tiny"}}), ("judge.name", {"judge": {"name": "oracle"}}),
                      ("judge.path", {"judge": {"path": None}}),
                      ("geneval.splits", {"geneval": {"splits": ["eval_iid", "eval_comp"]}}),
                      ("geneval.detector", {"geneval": {"detector": None}}), ("geneval.clip", {"geneval": {"clip": None}})):
        bad = P.deep_merge(copy.deepcopy(p), edit)
        for run in (lambda: judge(bad, tmp_path), lambda: check(bad, tmp_path, "sft")):
            with pytest.raises(ValueError, match=key.replace(".", r"\.")):
                run()
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------- Prefect + MLflow flow
@pytest.fixture(scope="module")
def standin_repo(tmp_path_factory):
    """Temp git+DVC repo holding dvc.yaml with every cmd pointed at the stand-in bodies."""
    repo = _init_repo(tmp_path_factory.mktemp("target") / "repo")
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    outs = {}
    for name, st in spec["stages"].items():
        body = st["do"] if "foreach" in st else st
        body["cmd"] = f"python standin.py {name}" + (" ${item}" if "foreach" in st else "")
        body["deps"] = [d for d in body.get("deps", []) if not d.startswith(("flows/", "sana_core/"))] + ["standin.py"]
        outs[name] = list(body.get("outs", []))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (repo / "standin.py").write_text(STANDIN)
    (repo / "standin_outs.json").write_text(json.dumps(outs))
    return repo


def test_prefect_flow_runs_target_dag_with_mlflow_and_compare(standin_repo, prefect_harness):
    # no capsys here: Prefect's console log handler would bind to its per-test stream and break later flows
    from mlflow.tracking import MlflowClient

    from flows.cli import main
    from flows.pipeline import run_pipeline

    repo = standin_repo
    dag = load_dag(repo)
    t0 = time.perf_counter()
    results = run_pipeline(repo, jobs=2, retries=0, run_name="target-smoke")
    t_flow = time.perf_counter() - t0
    assert [r["stage"] for r in results] == dag.order  # one task per stage, in DAG order
    assert not any(r["skipped"] for r in results)
    for name, s in dag.stages.items():
        for o in s.outs:
            assert (repo / o).exists(), f"{name}: missing {o}"
    # upstream finished before downstream started (stage bodies and tasks); independent tasks overlapped (jobs=2)
    span = {n: json.loads((repo / dag.stages[n].metrics[0]).read_text()) for n in dag.order}
    task = {r["stage"]: r for r in results}
    for n in dag.order:
        for u in dag.stages[n].upstream:
            assert span[u]["t_end"] <= span[n]["t_start"] and task[u]["finished"] <= task[n]["started"], (u, n)
    overlaps = [(a, b) for i, a in enumerate(dag.order) for b in dag.order[i + 1:]
                if task[a]["started"] < task[b]["finished"] and task[b]["started"] < task[a]["finished"]]
    assert overlaps and all(b not in dag.closure([a]) and a not in dag.closure([b]) for a, b in overlaps)

    # MLflow: one parent, one FINISHED child per stage with tags/metrics/steps/artifacts
    c = MlflowClient()
    exp = c.get_experiment_by_name("sana15")
    parents = c.search_runs([exp.experiment_id], f"tags.`{tracking.PIPELINE_TAG}` = 'true'")
    assert len(parents) == 1
    par = parents[0]
    assert par.info.status == "FINISHED" and par.data.tags["profile"] == "smoke"
    assert par.data.tags["dvc_lock_hash"] == "none" and par.data.tags["dvc_lock_hash_end"] != "none"
    assert par.data.metrics["stages"] == len(dag.order) and par.data.metrics["stages_skipped"] == 0
    kids = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{par.info.run_id}'", max_results=500)
    by = {k.data.tags["stage"]: k for k in kids}
    assert sorted(by) == sorted(dag.order) and len(kids) == len(dag.order)
    params = P.load(repo)
    for name, k in by.items():  # stand-ins log in-stage for finetune/geneval only: the flow filled in the rest
        assert k.info.status == "FINISHED" and k.data.tags["dvc_skipped"] == "false", name
        assert k.data.tags["params_hash"] == P.params_hash(params[name.split("@")[0]])
        assert k.data.metrics["dvc_seconds"] > 0 and k.data.metrics["t_end"] == span[name]["t_end"]
        assert k.data.params["prune.targets"] == "[2]"
    assert by["sft"].data.tags["variant"] == "sft" and by["sft"].data.tags["depth"] == "4"
    ft = by["finetune@2"]
    assert ft.data.tags["variant"] == "finetune_2" and ft.data.tags["depth"] == "2"
    assert ft.data.metrics["train_flops"] == 1e6 * 2 * params["finetune"]["steps"]
    assert [(m.step, m.value) for m in c.get_metric_history(ft.info.run_id, "loss")] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert {a.path for a in c.list_artifacts(ft.info.run_id)} == {"model"}
    ge = by["geneval@finetune_2"]
    want = json.loads((repo / "metrics" / "geneval_finetune_2.json").read_text())
    assert ge.data.tags["variant"] == "finetune_2" and ge.data.metrics["overall"] == want["overall"]
    assert ge.data.metrics["best_of.2.overall"] == want["best_of"]["2"]["overall"]
    assert {a.path for a in c.list_artifacts(ge.info.run_id)} == {"grid.png"}

    # plain DVC sees the flow's work: a second repro does nothing
    out, t_noop = _repro(repo)
    assert "Running stage" not in out and out.count("didn't change, skipping") == len(dag.order)

    # a flow over skipped stages still gives each child the stage's metrics (from the DVC metrics files)
    res2 = run_pipeline(repo, jobs=1, targets=["judge"])
    assert [(r["stage"], r["skipped"]) for r in res2] == [(x, True) for x in
                                                         ("data", "codec", "encode", "pretrain_base", "judge")]
    last = c.search_runs([exp.experiment_id], f"tags.`{tracking.PIPELINE_TAG}` = 'true'",
                         order_by=["attributes.start_time DESC"])[0]
    k2 = {k.data.tags["stage"]: k for k in c.search_runs([exp.experiment_id],
                                                         f"tags.mlflow.parentRunId = '{last.info.run_id}'")}
    assert sorted(k2) == ["codec", "data", "encode", "judge", "pretrain_base"] and k2["judge"].data.tags["dvc_skipped"] == "true"
    assert k2["judge"].data.metrics["t_end"] == span["judge"]["t_end"]

    # sana15 compare: one row per model variant, GenEval scores where evaluated, NaN elsewhere
    assert main(["compare", "--root", str(repo)]) == 0
    import pandas as pd

    df = pd.read_csv(repo / "reports" / "compare.csv", index_col="variant")
    assert set(df.index) == {"pretrain_base", "grow", "pretrain_grown", "sft", "prune_2", "finetune_2", "scratch_2"}
    assert df.loc["finetune_2", "depth"] == 2 and df.loc["sft", "depth"] == 4
    assert df.loc["finetune_2", "overall"] == want["overall"] and df.loc["finetune_2", "counting"] == want["counting"]
    assert df.loc["scratch_2", "train_flops"] == 1e6 * 2 * params["scratch"]["steps"]
    assert pd.isna(df.loc["scratch_2", "overall"]) and pd.isna(df.loc["grow", "train_flops"])
    cols = list(df.columns)
    assert cols[:3] == ["depth", "n_params", "train_flops"]
    assert cols.index("overall") < cols.index("single_object") < cols.index("color_attr") < \
        cols.index("best_of.1.overall") < cols.index("best_of.2.overall")
    assert list(df["depth"]) == sorted(df["depth"])
    # Prefect ⇄ MLflow: the flow run is named <profile>@<commit>-<time>, the parent run carries its id, the flow run
    # links to the parent run and publishes reports/report.md and the compare table
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    fr_id = par.data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as pc:
        fr = pc.read_flow_run(UUID(fr_id))
        arts = {a.key: a for a in pc.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(fr_id)])))}
    assert fr.name.startswith("smoke@") and par.data.tags["prefect.flow_run_name"] == fr.name
    assert set(arts) == {"mlflow-parent-run", "sana15-compare", "sana15-report"}   # stand-in writes report.md
    assert f"/runs/{par.info.run_id}?workflowType=machine_learning" in arts["mlflow-parent-run"].data
    assert "finetune_2" in arts["sana15-compare"].data and "IID" in arts["sana15-compare"].data
    print(f"flow over {len(dag.order)} stages (jobs=2): {t_flow:.1f} s; no-op dvc repro: {t_noop:.2f} s")


def test_flow_rejects_bad_params_before_any_stage(tmp_path, prefect_harness):
    from flows.pipeline import run_pipeline

    repo = _init_repo(tmp_path / "bad")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("\nprofile: smoke", "\nprofile: smoke\nfinetun: {steps: 1}"))
    with pytest.raises(ValueError, match="unknown key 'finetun'"):
        run_pipeline(repo, track=True)
    assert not (repo / "mlflow.db").exists() and not (repo / "metrics").exists()
    # a brought dataset with the shapes world's tiny judge: refused before any stage (not after hours of training)
    (repo / "brought").mkdir()
    P.use_profile("smoke", repo)
    p = P.read_yaml(repo / "params.yaml", roundtrip=True)
    p["data"].update(source="imagefolder", path="brought")
    P.write_yaml_atomic(p, repo / "params.yaml")
    with pytest.raises(ValueError, match=r"judge\.name: 'tiny'"):
        run_pipeline(repo, track=True)
    assert not (repo / "mlflow.db").exists() and not (repo / "metrics").exists()


FLAKY_DVC = """
stages:
  a:
    cmd: mkdir -p out && echo a > out/a.txt
    outs:
      - out/a.txt
  b:
    cmd: test -f b.flag || { touch b.flag; echo flaky-first-try >&2; exit 1; }; echo b > out_b.txt
    deps:
      - out/a.txt
    outs:
      - out_b.txt
  c:
    cmd: echo stage-c-broken >&2; exit 3
    deps:
      - out/a.txt
    outs:
      - out_c.txt
  d:
    cmd: cp out_c.txt out_d.txt
    deps:
      - out_c.txt
    outs:
      - out_d.txt
"""


def test_flow_retries_and_failure_propagation(tmp_path, prefect_harness, standin_repo, monkeypatch, caplog):
    """Retries re-run a flaky stage; a failing stage fails the flow, its downstream never runs, MLflow says so.
    (Plain shell cmds: stages need not use stage_runner.) Logs into the stand-in repo's MLflow store: a fresh
    store costs ~8 s of migrations."""
    from mlflow.tracking import MlflowClient

    from flows.pipeline import run_pipeline

    monkeypatch.setattr(tracking, "_ENV_URI", tracking.tracking_uri(standin_repo))
    repo = _init_repo(tmp_path / "flaky")
    (repo / "dvc.yaml").write_text(FLAKY_DVC)
    with pytest.raises(Exception, match="dvc stage c failed"):
        run_pipeline(repo, jobs=2, retries=1, retry_delay_seconds=0, run_name="flaky")
    assert (repo / "out_b.txt").read_text() == "b\n" and not (repo / "out_d.txt").exists()
    text = caplog.text
    assert "flaky-first-try" in text and "stage-c-broken" in text and "Retry 1/1" in text
    c = MlflowClient()
    exp = c.get_experiment_by_name("sana15")
    par = c.search_runs([exp.experiment_id], "tags.`mlflow.runName` = 'flaky'")[0]
    assert par.info.status == "FAILED" and par.data.tags["root"] == str(repo.resolve())
    kids = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{par.info.run_id}'")
    status = sorted((k.data.tags["stage"], k.info.status) for k in kids)
    assert status == [("a", "FINISHED"), ("b", "FAILED"), ("b", "FINISHED"), ("c", "FAILED"), ("c", "FAILED")]
