"""params.yaml schema (derived from profiles/tiny.yaml), profiles, `sana15 params`, and the stage wrapper's
reject-before-compute contract."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from flows import params as P
from flows import stage_runner

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["data", "curate", "pretrain_base", "grow", "pretrain_grown", "sft", "importance", "prune", "finetune",
          "scratch", "judge", "geneval", "report"]


@pytest.fixture
def tiny() -> dict:
    return P.default_params()


def _err(params: dict) -> str:
    with pytest.raises(ValueError) as ei:
        P.validate(params)
    return str(ei.value)


def test_every_profile_validates_and_has_exactly_the_schema_keys(tiny):
    assert P.available_profiles() == ["paper", "paper_smoke", "smoke", "tiny"]
    keys = set(P.flatten(tiny))
    for name in P.available_profiles():
        d = P.load_profile(name)
        assert set(P.flatten(d)) == keys, name
        assert d["profile"] == name
    # a section per DVC stage, named after it
    assert [s for s in STAGES if s not in tiny] == []
    assert P.load(ROOT)  # the checkout's params.yaml is valid


def test_data_section_matches_the_library_defaults(tiny):
    from sana_core.geneval.dataset import DEFAULT_DATA_CFG

    assert set(tiny["data"]) == set(DEFAULT_DATA_CFG)
    for k, v in DEFAULT_DATA_CFG.items():
        if isinstance(v, dict):
            assert set(tiny["data"][k]) == set(v), k
    # the tiny world differs from the library's default (full 8 x 10 world) on purpose — docs/results.md §1
    assert tiny["data"]["vocabulary"]["shapes"] == ["circle", "square", "triangle", "cross"]
    assert tiny["data"]["object_size"] == [16.0, 26.0]


@pytest.mark.parametrize("profile", ["smoke", "tiny", "paper"])
def test_sections_fit_the_library_configs(profile):
    """Shared sections use the library's own keys: every training stage's cfg passes sana_core.train's validation."""
    from sana_core import latents, text
    from sana_core.train import validate_config

    d = P.load_profile(profile)
    for stage in ("pretrain_base", "pretrain_grown", "sft", "finetune", "scratch"):
        cfg = validate_config({**d["train"], **d[stage], "seed": d["seed"]})
        assert cfg["steps"] == d[stage]["steps"] and cfg["grad_clip"] == d["train"]["grad_clip"]
    assert set(d["text"]) == text._KEYS and set(d["codec"]) == latents._KEYS


def test_profiles_override_only_what_they_list(tiny):
    smoke, paper = P.load_profile("smoke"), P.load_profile("paper")
    assert smoke["model"]["profile"] == "smoke" and smoke["model"]["init"] == "sana" and tiny["model"]["init"] == "pixart"
    assert smoke["prune"]["targets"] == [2] and smoke["geneval"]["variants"] == ["sft", "finetune_2"]
    assert paper["model"]["profile"] == "paper_1.6b" and paper["grow"]["target_depth"] == 60
    assert paper["prune"]["targets"] == [40, 30, 20] and paper["text"]["kind"] == "gemma2"
    assert paper["train"]["grad_clip"] == 0.1 and tiny["train"]["grad_clip"] == 1.0   # SANA's vs measured tiny


@pytest.mark.parametrize("mutate, key", [
    (lambda p: p["train"].update(lrr=1.0), "'train.lrr'"),                     # unknown key, nested
    (lambda p: p["data"]["noise"].update(smudge=0.1), "'data.noise.smudge'"),  # unknown key, two levels down
    (lambda p: p.update(extra={}), "'extra'"),                                 # unknown top-level section
    (lambda p: p["pretrain_base"].update(steps="ten"), "pretrain_base.steps: expected int, got str"),
    (lambda p: p["sft"].update(lr="2e-5"), "sft.lr: expected float, got str '2e-5' (YAML needs a number"),
    (lambda p: p["pretrain_base"].update(steps=True), "pretrain_base.steps: expected int, got bool"),
    (lambda p: p["data"].update(holdout=1), "data.holdout: expected bool, got int"),
    (lambda p: p["prune"].update(targets=[8, "six"]), "prune.targets[1]: expected int, got str"),
    (lambda p: p["geneval"].update(variants="sft"), "geneval.variants: expected list, got str"),
    (lambda p: p.update(model="tiny"), "model: expected a mapping"),
    (lambda p: p["sft"].pop("lr"), "missing key 'sft.lr'"),
    (lambda p: p["geneval"].update(variants=["sft", "prune_7"]), "geneval.variants[1]: 'prune_7'"),
    (lambda p: p["prune"].update(targets=[12]), "prune.targets: depths [12] must be in (0, grow.target_depth=10)"),
    (lambda p: p["importance"].update(source="judge"), "importance.source: 'judge'"),
    # growth layout, before pretrain_base trains (tiny base depth 6): replication needs a multiple of it
    (lambda p: p["grow"].update(strategy="block_replication"),
     "grow.target_depth=10 must be a multiple of the source depth 6 for block_replication"),
    (lambda p: (p["grow"].update(target_depth=6), p["prune"].update(targets=[4])),
     "grow.target_depth=6 must exceed the source depth 6"),
    (lambda p: p["grow"].update(drop_last=6), "grow.drop_last=6 must be < source depth 6"),
])
def test_bad_params_name_the_dotted_key(tiny, mutate, key):
    p = copy.deepcopy(tiny)
    mutate(p)
    assert key in _err(p)


def test_every_growth_strategy_validates_at_a_depth_all_three_accept(tiny):
    """The growth ablation (docs/results.md §4) runs the three strategies at grow.target_depth=12 (2 × 6)."""
    for strategy in ("partial_preservation", "cyclic", "block_replication"):
        p = copy.deepcopy(tiny)
        p["grow"].update(strategy=strategy, target_depth=12)
        assert P.validate(p) is p


def test_int_where_float_expected_and_any_value_under_null_default(tiny):
    p = copy.deepcopy(tiny)
    p["sft"]["lr"] = 1                                  # int for float: fine
    p["data"]["vocabulary"]["shapes"] = ["circle", "square"]  # null default: the library validates the value
    p["text"]["path"] = "/models/gemma"
    assert P.validate(p) is p


def test_flatten_and_hash(tiny):
    flat = P.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}})
    assert flat == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    f = P.flatten(tiny)
    assert f["train.grad_clip"] == 1.0 and f["data.degrade.blur_sigma"] == [1.0, 2.0]
    assert f["data.families.color_attr"] == 1.0
    h = P.params_hash(tiny["sft"])
    assert len(h) == 12 and h == P.params_hash(dict(reversed(list(tiny["sft"].items()))))  # order-free
    assert h != P.params_hash({**tiny["sft"], "steps": 501})


def test_yaml_floats_follow_yaml_1_2_like_dvc(tmp_path):
    (tmp_path / "params.yaml").write_text("a: 1e-4\nb: 1.0e-4\nc: .5\n")
    assert P.read_yaml(tmp_path / "params.yaml") == {"a": 1e-4, "b": 1e-4, "c": 0.5}


def test_use_profile_writes_validated_params_keeping_comments(tmp_path):
    P.use_profile("smoke", tmp_path)
    text = (tmp_path / "params.yaml").read_text()
    assert text.startswith("# generated by `sana15 params use smoke`")
    assert "# sana_core/geneval/dataset.py" in text          # tiny's comments survive the merge
    assert P.load(tmp_path) == P.load_profile("smoke")
    P.use_profile("tiny", tmp_path)
    assert (tmp_path / "params.yaml").read_text() == (P.PROFILES_DIR / "tiny.yaml").read_text()  # byte copy


def test_bad_profile_rejected_naming_file_and_key(tmp_path, monkeypatch):
    prof = tmp_path / "profiles"
    prof.mkdir()
    shutil.copy(P.PROFILES_DIR / "tiny.yaml", prof / "tiny.yaml")
    (prof / "typo.yaml").write_text("profile: typo\nsft: {stesp: 3}\n")
    (prof / "badtype.yaml").write_text("profile: badtype\njudge: {lr: fast}\n")
    monkeypatch.setattr(P, "PROFILES_DIR", prof)
    (tmp_path / "params.yaml").write_text("sentinel: 1\n")
    with pytest.raises(ValueError, match=r"typo\.yaml: .*unknown key 'sft\.stesp'"):
        P.use_profile("typo", tmp_path)
    with pytest.raises(ValueError, match=r"badtype\.yaml: .*judge\.lr: expected float, got str 'fast'"):
        P.use_profile("badtype", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such profile"):
        P.use_profile("nope", tmp_path)
    assert (tmp_path / "params.yaml").read_text() == "sentinel: 1\n"  # untouched on error


def test_cli_params_use_check_show(tmp_path, capsys):
    from flows.cli import main

    assert main(["params", "--root", str(tmp_path), "use", "smoke"]) == 0
    assert main(["params", "--root", str(tmp_path), "check"]) == 0
    assert main(["params", "--root", str(tmp_path), "show", "--flat"]) == 0
    out = capsys.readouterr().out
    assert "profile 'smoke'" in out and "prune.targets = [2]" in out
    text = (tmp_path / "params.yaml").read_text().replace("  steps: 3000", "  steps: lots", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("\nprofile: smoke", "\nprofile: smoke\nunknown_section: {}"))
    assert main(["params", "--root", str(tmp_path), "check", str(bad)]) == 2
    assert "unknown key 'unknown_section'" in capsys.readouterr().err


def test_stage_rejects_bad_params_before_any_compute(tmp_path):
    P.use_profile("smoke", tmp_path)
    text = (tmp_path / "params.yaml").read_text()
    calls = []

    def stage(params, root, item):
        calls.append(item)
        return {"x": 1}

    (tmp_path / "params.yaml").write_text(text.replace("  target_depth: 4", "  target_depth: four"))
    with pytest.raises(stage_runner.StageInputError, match=r"grow\.target_depth: expected int, got str 'four'"):
        stage_runner.run_stage("grow", stage, argv=[], root=tmp_path)
    (tmp_path / "params.yaml").write_text(text.replace("\nprofile: smoke", "\nprofile: smoke\nsft2: {lr: 1.0}"))
    with pytest.raises(stage_runner.StageInputError, match="unknown key 'sft2'"):
        stage_runner.run_stage("sft", stage, argv=[], root=tmp_path)
    (tmp_path / "params.yaml").unlink()
    with pytest.raises(stage_runner.StageInputError, match="params.yaml: no such params file"):
        stage_runner.run_stage("sft", stage, argv=[], root=tmp_path)
    assert calls == [] and not (tmp_path / "metrics").exists()


def test_stage_main_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("profile: smoke\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["x"])
    with pytest.raises(SystemExit) as ei:
        stage_runner.main("data", lambda params, root: {"n": 1})
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("stage data: error: params: missing key") and err.count("\n") == 1


def test_failed_stage_writes_no_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("SANA15_TRACKING", "0")
    P.use_profile("smoke", tmp_path)

    def stage(params, root):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        stage_runner.run_stage("judge", stage, argv=[], root=tmp_path)
    assert not (tmp_path / "metrics" / "judge.json").exists()

    rec = stage_runner.run_stage("judge", lambda params, root: {"acc": 0.5, "nested": {"a": 2}}, argv=[],
                                 root=tmp_path)
    assert json.loads((tmp_path / "metrics" / "judge.json").read_text()) == rec == {
        "stage": "judge", "acc": 0.5, "nested": {"a": 2}, "variant": "judge"}
    assert [p.name for p in (tmp_path / "metrics").iterdir()] == ["judge.json"]  # no temp files left
