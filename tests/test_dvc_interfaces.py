"""dvc.yaml as DVC users read it: every file a stage writes is declared, one `dvc plots show` holds the training loss
curves (one figure), the report's PNGs and GenEval-vs-N with one line per judge; model folders are DVC artifacts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import params as P
from flows import stage_runner

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_plots_section_and_codec_plot_are_declared():
    assert DVC["stages"]["codec"]["plots"] == [{"plots/codec.json": {"x": "step", "y": "codec_loss", "cache": False}}]
    top = {next(iter(e)) if isinstance(e, dict) else e: e for e in DVC["plots"]}
    loss = top["training loss"]["training loss"]
    assert loss["x"] == "step" and loss["y"] == {f"plots/{s}.json": "loss" for s in
                                                ("pretrain_base", "pretrain_grown", "sft")}
    assert "reports/figures" in top and "reports/figures" in DVC["stages"]["report"]["outs"]
    ge = DVC["stages"]["geneval"]["do"]["plots"][0]["plots/geneval_${item}.json"]
    assert ge["template"] == "flows/plots/by_judge.json" and (ROOT / ge["template"]).is_file()


def test_model_folders_are_dvc_artifacts_of_type_model():
    arts = DVC["artifacts"]
    outs = {o for st in DVC["stages"].values() for o in (st.get("do") or st).get("outs", [])}
    assert set(arts) == {"pretrain_base", "grow", "pretrain_grown", "sft", "codec", "judge"}
    for name, a in arts.items():
        assert a["type"] == "model" and a["desc"] and a["path"] in outs, name


def test_declared_plot_is_written_even_when_the_stage_logged_no_steps(tmp_path, monkeypatch):
    """codec with codec.path trains nothing: its declared plots/codec.json is still written ([]), so DVC finds it."""
    monkeypatch.setenv("SANA15_TRACKING", "0")
    P.use_profile("smoke", tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": DVC["stages"]}))
    stage_runner.run_stage("codec", lambda params, root: {"trained": 0}, argv=[], root=tmp_path)
    assert json.loads((tmp_path / "plots" / "codec.json").read_text()) == []
    stage_runner.run_stage("encode", lambda params, root: {"n": 1}, argv=[], root=tmp_path)
    assert not (tmp_path / "plots" / "encode.json").exists()          # not declared, nothing logged: no file


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dvc_plots_show_renders_loss_curves_images_and_one_line_per_judge(tmp_path):
    from PIL import Image

    repo = tmp_path / "r"
    (repo / "plots").mkdir(parents=True)
    (repo / "reports" / "figures").mkdir(parents=True)
    (repo / "flows" / "plots").mkdir(parents=True)
    (repo / "flows/plots/by_judge.json").write_text((ROOT / "flows/plots/by_judge.json").read_text())
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True, env=env)
    (repo / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    P.use_profile("smoke", repo)
    for s in ("pretrain_base", "pretrain_grown", "sft"):
        (repo / f"plots/{s}.json").write_text(json.dumps([{"step": i, "loss": 1 / (i + 1)} for i in range(3)]))
    (repo / "plots/codec.json").write_text("[]")
    (repo / "plots/geneval_sft.json").write_text(json.dumps(
        [{"N": n, "judge": j, "overall": 0.1 * n} for n in (1, 2) for j in ("tiny", "oracle")]))
    Image.new("RGB", (8, 8)).save(repo / "reports/figures/loss_curves.png")
    p = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json", "plots/geneval_sft.json",
                        "training loss", "reports/figures"], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)["data"]
    loss = data["training loss"][0]["content"]["data"]["values"]
    assert {v["filename"] for v in loss} == {"pretrain_base.json", "pretrain_grown.json", "sft.json"}
    ge = data["plots/geneval_sft.json"][0]["content"]
    assert ge["encoding"]["color"] == {"field": "judge", "type": "nominal"}
    assert {v["judge"] for v in ge["data"]["values"]} == {"tiny", "oracle"}
    assert data["reports/figures/loss_curves.png"][0]["type"] == "image"
