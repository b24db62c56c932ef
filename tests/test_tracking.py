"""MLflow glue: absolute sqlite store, experiment with project artifact location, parent/child runs, the stage
wrapper's tags/params/metrics/step history/artifacts. One fresh store per module (~8 s of MLflow migrations)."""
from __future__ import annotations

import json

import pytest

from flows import params as P
from flows import stage_runner, tracking

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy 2.1 noise from mlflow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("track")
    P.use_profile("smoke", root)
    mp = pytest.MonkeyPatch()
    mp.setattr(tracking, "_ENV_URI", None)  # ignore any MLFLOW_TRACKING_URI of the calling shell
    for k in ("MLFLOW_RUN_ID", "MLFLOW_PARENT_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "SANA15_TRACKING"):
        mp.delenv(k, raising=False)
    exp_id = tracking.ensure_tracking(root)
    yield root, exp_id
    mp.undo()


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _train_stage(params, root, item):
    """A training-shaped stage: step metrics through the callback, a model folder, a sample grid."""
    from PIL import Image

    cb = stage_runner.callback()
    for step in range(4):
        cb(step, loss=1.0 / (step + 1), lr=1e-3, grad_norm=0.5 + step, samples_per_s=100.0)
    model = root / "models" / f"finetune_{item}"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps({"num_layers": int(item)}))
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "grid.png")
    return {"depth": int(item), "train_flops": 1.5e9, "final": {"loss": 0.25}, "model_dir": f"models/finetune_{item}",
            "sample_grid": "grid.png"}


def test_store_is_absolute_sqlite_with_project_artifacts(store):
    import mlflow

    root, exp_id = store
    assert tracking.tracking_uri(root) == f"sqlite:///{root.resolve()}/mlflow.db"
    assert mlflow.get_tracking_uri() == tracking.tracking_uri(root) and (root / "mlflow.db").exists()
    exp = mlflow.get_experiment_by_name("sana15")
    assert exp.experiment_id == exp_id == tracking.ensure_tracking(root)  # idempotent
    assert exp.artifact_location == (root / "mlartifacts").as_uri()
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"   # MLflow 3 opens the model-training view


def test_stage_run_standalone_logs_tags_params_metrics_steps_artifacts(store):
    root, exp_id = store
    rec = stage_runner.run_stage("finetune", _train_stage, argv=["2"], root=root)
    assert json.loads((root / "metrics" / "finetune_2.json").read_text()) == rec
    assert rec["variant"] == "finetune_2" and rec["stage"] == "finetune@2"
    hist = json.loads((root / "plots" / "finetune_2.json").read_text())
    assert [h["step"] for h in hist] == [0, 1, 2, 3] and hist[1]["loss"] == 0.5 and hist[3]["grad_norm"] == 3.5

    c = _client()
    runs = c.search_runs([exp_id], "tags.stage = 'finetune@2'")
    assert len(runs) == 1
    r = runs[0]
    params = P.load(root)
    assert r.info.status == "FINISHED" and "mlflow.parentRunId" not in r.data.tags
    assert {k: r.data.tags[k] for k in ("stage", "variant", "depth", "params_hash")} == {
        "stage": "finetune@2", "variant": "finetune_2", "depth": "2",
        "params_hash": P.params_hash(params["finetune"])}
    assert r.data.params["finetune.steps"] == "2" and r.data.params["prune.targets"] == "[2]"
    assert len(r.data.params) == len(P.flatten(params))
    m = r.data.metrics
    assert m["train_flops"] == 1.5e9 and m["final.loss"] == 0.25 and m["depth"] == 2.0
    assert [(x.step, x.value) for x in c.get_metric_history(r.info.run_id, "loss")] == [
        (0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
    assert [x.step for x in c.get_metric_history(r.info.run_id, "samples_per_s")] == [0, 1, 2, 3]
    arts = {a.path for a in c.list_artifacts(r.info.run_id)}
    assert arts == {"model", "grid.png"}
    assert [a.path for a in c.list_artifacts(r.info.run_id, "model")] == ["model/config.json"]


def test_parent_and_child_runs(store, monkeypatch):
    root, exp_id = store
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    parent = tracking.start_parent_run(root, P.load(root), run_name="pipeline-test")
    c = _client()
    pr = c.get_run(parent)
    assert pr.data.tags[tracking.PIPELINE_TAG] == "true" and pr.data.tags["profile"] == "smoke"
    assert pr.data.tags["dvc_lock_hash"] == tracking.file_hash(root / "dvc.lock") != "none"
    assert "mlflow.source.git.commit" not in pr.data.tags and "git_commit" not in pr.data.tags  # not a git repo
    assert pr.data.tags["mlflow.source.name"] and pr.data.tags["mlflow.user"]   # MLflow's own run context
    assert pr.data.params["grow.target_depth"] == "4"

    # the flow's way: it creates the child, the stage process resumes it through MLFLOW_RUN_ID
    child = tracking.create_child_run(parent, "judge")
    monkeypatch.setenv("MLFLOW_RUN_ID", child)
    stage_runner.run_stage("judge", lambda params, root: {"accuracy": 0.75}, argv=[], root=root)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)   # mlflow.end_run pops it
    # parent id only: the stage makes its own child
    monkeypatch.setenv("MLFLOW_PARENT_RUN_ID", parent)
    stage_runner.run_stage("geneval", lambda params, root, item: {"overall": 0.5, "best_of": {"2": {"overall": 0.6}}},
                           argv=["sft"], root=root)
    monkeypatch.delenv("MLFLOW_PARENT_RUN_ID")
    tracking.finish_parent_run(root, parent, ok=True, summary={"stages": 2})

    kids = c.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}'", order_by=["attributes.start_time ASC"])
    assert [k.data.tags["stage"] for k in kids] == ["judge", "geneval@sft"]
    assert kids[0].info.run_id == child and kids[0].data.metrics["accuracy"] == 0.75
    assert kids[1].data.tags["variant"] == "sft" and kids[1].data.metrics["best_of.2.overall"] == 0.6
    assert all(k.info.status == "FINISHED" for k in kids)
    assert c.get_run(parent).info.status == "FINISHED" and c.get_run(parent).data.metrics["stages"] == 2

    # compare, restricted to this pipeline run: only the evaluated variant is a row (judge has no depth)
    from flows.commands.compare import compare_table

    df = compare_table(root, parent=parent)
    assert list(df.index) == ["sft"] and df.loc["sft", "overall"] == 0.5
    assert df.loc["sft", "best_of.2.overall"] == 0.6 and df.loc["sft", "stages"] == "geneval@sft"
    assert compare_table(root, parent="latest").equals(df)
    assert compare_table(root, parent="0" * 32).empty


def test_compare_cli_on_a_store_without_variants(store, tmp_path):
    from flows.cli import main

    root, _ = store
    assert main(["compare", "--root", str(root), "--parent", "0" * 32, "--out", str(tmp_path / "c.csv")]) == 0
    assert (tmp_path / "c.csv").read_text().splitlines() == ["variant,depth,stages"]


def test_failed_stage_marks_run_failed(store):
    root, exp_id = store

    def boom(params, root):
        stage_runner.callback()(0, loss=9.0)
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        stage_runner.run_stage("sft", boom, argv=[], root=root)
    r = _client().search_runs([exp_id], "tags.stage = 'sft'")[0]
    assert r.info.status == "FAILED" and r.data.metrics["loss"] == 9.0
    assert not (root / "metrics" / "sft.json").exists() and not (root / "plots" / "sft.json").exists()


def test_numeric_metrics_and_default_variant():
    rec = {"variant": "x", "model_dir": "m", "depth": 4, "ok": True, "name": "s", "inf": float("inf"),
           "geneval": {"overall": 0.5, "tasks": {"counting": 0.25}}}
    assert tracking.numeric_metrics(rec) == {"depth": 4.0, "ok": 1.0, "geneval.overall": 0.5,
                                             "geneval.tasks.counting": 0.25}
    assert [tracking.default_variant(s, i) for s, i in [("sft", None), ("prune", "8"), ("geneval", "finetune_8")]] \
        == ["sft", "prune_8", "finetune_8"]


def test_stage_run_uses_mlflow_system_metrics_async_steps_and_dataset_inputs(store, monkeypatch):
    """System metrics sampled by MLflow, step metrics queued asynchronously and flushed before the run ends, the
    stage's data/ deps (dvc.yaml) as dataset inputs with the digest DVC locked."""
    import mlflow

    root, exp_id = store
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    (root / "dvc.yaml").write_text("stages:\n  sft:\n    cmd: x\n    deps: [flows/stages/sft.py, data/cache, data/curated]\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  encode:\n    cmd: x\n    outs:\n"
                                   "    - path: data/cache\n      md5: 0123456789abcdef0123456789abcdef.dir\n")
    for d in ("data/cache", "data/curated"):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "x.bin").write_bytes(b"12345")
    calls = []
    real = tracking.log_metrics

    def spy(*a, **kw):
        calls.append(kw.get("synchronous", True))
        return real(*a, **kw)
    monkeypatch.setattr(tracking, "log_metrics", spy)

    def stage(params, root):
        import time
        cb = stage_runner.callback()
        for step in range(3):
            cb(step, loss=1.0 / (step + 1))
        time.sleep(0.8)                      # long enough for a system-metrics sample
        return {"final_loss": 1 / 3}

    stage_runner.run_stage("sft", stage, argv=[], root=root)
    assert mlflow.active_run() is None
    r = _client().search_runs([exp_id], "tags.stage = 'sft'")[0]
    assert r.info.status == "FINISHED" and calls[:3] == [False, False, False]
    assert [x.value for x in _client().get_metric_history(r.info.run_id, "loss")] == [1.0, 0.5, 1 / 3]
    assert any(k.startswith("system/") for k in r.data.metrics), sorted(r.data.metrics)
    ins = {d.dataset.name: d for d in r.inputs.dataset_inputs}
    assert set(ins) == {"data/cache", "data/curated"}
    assert ins["data/cache"].dataset.digest == "0123456789abcdef0123456789abcdef"
    assert [(t.key, t.value) for t in ins["data/cache"].tags] == [("mlflow.data.context", "training")]
    (root / "dvc.yaml").unlink()
    (root / "dvc.lock").unlink()


def test_geneval_run_carries_the_variants_training_flops(store):
    """The MLflow compare view can put training FLOPs beside the GenEval score: geneval@<v> logs `train_flops` =
    Σ flops of the variant's lineage (metrics/<stage>.json)."""
    root, exp_id = store
    (root / "metrics").mkdir(exist_ok=True)
    for stage, f in {"pretrain_base": 1e12, "pretrain_grown": 2e11, "sft": 3e10, "finetune_2": 4e9}.items():
        (root / "metrics" / f"{stage}.json").write_text(json.dumps({"flops": f}))
    stage_runner.run_stage("geneval", lambda params, root, item: {"overall": 0.4}, argv=["finetune_2"], root=root)
    r = _client().search_runs([exp_id], "tags.stage = 'geneval@finetune_2'")[0]
    assert r.data.metrics["train_flops"] == 1e12 + 2e11 + 3e10 + 4e9 and r.data.metrics["overall"] == 0.4
    stage_runner.run_stage("geneval", lambda params, root, item: {"overall": 0.3}, argv=["scratch_2"], root=root)
    r = _client().search_runs([exp_id], "tags.stage = 'geneval@scratch_2'")[0]
    assert "train_flops" not in r.data.metrics            # metrics/scratch_2.json missing: nothing invented


def test_lineage_of_every_variant(store):
    params = P.load(store[0])
    assert P.lineage("finetune_2", params) == ["pretrain_base", "pretrain_grown", "sft", "finetune_2"]
    assert P.lineage("prune_2", params) == ["pretrain_base", "pretrain_grown", "sft"]
    assert P.lineage("scratch_2", params) == ["scratch_2"] and P.lineage("grow", params) == ["pretrain_base"]
    paper_like = {**params, "importance": {**params["importance"], "source": "pretrain_grown"}}
    assert P.lineage("finetune_40", paper_like) == ["pretrain_base", "pretrain_grown", "finetune_40"]
    with pytest.raises(ValueError, match="not a model of this recipe"):
        P.lineage("judge", params)


def test_compare_prints_a_120_column_table_with_intervals_and_best_of_per_judge():
    """Paper-sized: 10 variants, N ∈ {1, 4, 32, 256, 2048} × judges {vlm, oracle} fit 120 columns."""
    import pandas as pd

    from flows.commands.compare import compact_table

    params = P.load_profile("paper")
    rows = {}
    for i, v in enumerate(params["geneval"]["variants"]):
        r = {"depth": 20.0 + i, "flops": 1e18 * (i + 1), "overall": 0.5, "n_images": 100.0, "comp.overall": 0.25,
             "n_prompts.comp": 64.0, "k": 4.0}
        for n in (1, 4, 32, 256, 2048):
            for j in ("vlm", "oracle"):
                r[f"best_of.{n}.{j}.iid.overall"] = 0.5 + n / 1e4 + (j == "oracle") * 0.1
                r[f"best_of.{n}.{j}.iid.counting"] = 0.1
        rows[v] = r
    rows["finetune_40"]["train_flops"] = 7e18
    df = pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")
    t = compact_table(df, params)
    text = t.to_string()
    assert max(map(len, text.splitlines())) <= 120 and t.attrs["dropped"] == []
    assert list(t.columns) == ["depth", "train FLOPs", "IID", "comp", "N=4", "N=32", "N=256", "N=2048"]
    assert t.attrs["judges"] == ["vlm", "oracle"]
    fin = t.loc["finetune_20"]
    assert fin["IID"] == "0.500±0.098" and fin["comp"] == "0.250±0.106"      # 1.96·√(p(1-p)/n)
    assert fin["N=4"] == "0.500/0.600" and fin["depth"] == "28"
    # training FLOPs: the geneval run's lineage sum when logged, else the lineage's own `flops` rows
    assert t.loc["finetune_40", "train FLOPs"] == "7.00e+18"
    # paper: importance.source = pretrain_grown, so a pruned model's lineage skips sft
    assert t.loc["finetune_20", "train FLOPs"] == f"{(1 + 2 + 9) * 1e18:.2e}"   # base, grown, finetune_20
    assert t.loc["prune_20", "train FLOPs"] == f"{(1 + 2) * 1e18:.2e}" and t.loc["sft", "train FLOPs"] == "6.00e+18"
    narrow = compact_table(df, params, width=80)
    assert narrow.attrs["dropped"] and max(map(len, narrow.to_string().splitlines())) <= 80
