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
    assert P.available_profiles() == ["claims", "paper", "paper_smoke", "smoke", "tiny"]
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

    seam = {"source", "path", "format", "text_column", "image_column", "key_column", "split", "max_bad_fraction"}
    assert set(tiny["data"]) == set(DEFAULT_DATA_CFG) | seam     # the world's keys + the data seam's (docs/data.md)
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
        cfg = validate_config(P.train_cfg(d, stage))
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
    # the data seam (docs/data.md): before any stage runs
    (lambda p: p["data"].update(source="laion"), "data.source: 'laion' is not one of"),
    (lambda p: p["data"].update(source="imagefolder"), "data.path: required for source 'imagefolder'"),
    (lambda p: p["data"].update(path="somewhere"), "data.path: must be data/shapes for source 'shapes'"),
    (lambda p: p["data"].update(source="webdataset", path="s/{0..3}.tar", image_size=100),
     "data.image_size: 100 is not a multiple of the codec's downsampling factor 8"),
    (lambda p: p["data"].update(image_size=128), "data.image_size: 128 not supported by the shapes world"),
    (lambda p: p["data"].update(format="zip"), "data.format: 'zip' is not one of"),
    (lambda p: p["data"].update(max_bad_fraction=1.5), "data.max_bad_fraction"),
    (lambda p: p["encode"].update(latent_dtype="int8"), "encode.latent_dtype: 'int8' is not one of"),
    (lambda p: p["encode"].update(text="lazy"), "encode.text: 'lazy' is not one of"),
    (lambda p: p["encode"].update(shard_size=0), "encode.shard_size"),
])
def test_bad_params_name_the_dotted_key(tiny, mutate, key):
    p = copy.deepcopy(tiny)
    mutate(p)
    assert key in _err(p)


def test_data_sources_validate(tiny):
    """Another source at any size the codec divides; online text features with the small encoder are fine."""
    p = copy.deepcopy(tiny)
    p["data"].update(source="hf", path="ds", image_size=256, key_column="id")
    p["encode"].update(text="online", latent_dtype="bfloat16")
    assert P.validate(p) is p


def test_claims_profile_grows_in_the_papers_proportions():
    """profiles/claims.yaml (issue 17): partial preservation keeps ≥ 80 % of the base's blocks (paper 18 of 20), grows
    2–3× (paper 20 → 60), prunes the pre-trained grown model (Table 3) and scores whole eval sets, 4 images per
    prompt, best-of up to 16."""
    from sana_core.growth import growth_args, growth_layout
    from sana_core.model import resolve_config

    c = P.load_profile("claims")
    base = resolve_config({k: v for k, v in c["model"].items() if k != "init"})["num_layers"]
    layout = growth_layout(base, **growth_args(c["grow"]))
    kept = sum(1 for s in layout if s != "new")
    assert (base, kept, len(layout)) == (6, 5, 18)
    assert kept / base >= 0.8 and 2 <= len(layout) / base <= 3 and c["grow"]["strategy"] == "partial_preservation"
    assert c["importance"]["source"] == "pretrain_grown" and c["prune"]["targets"] == [12, 6]
    assert P.lineage("finetune_6", c) == ["pretrain_base", "pretrain_grown", "finetune_6"]   # SFT not in it
    g = c["geneval"]
    assert g["max_prompts"] == 0 and g["n_images"] >= 4 and max(g["best_of"]) == 16
    assert c["pretrain_grown"]["steps"] > P.default_params()["pretrain_grown"]["steps"]
    # the base recipe is tiny's (the measured 0.30 base), so only the growth branch and evaluation differ — and the
    # guidance scale, pinned at the paper's 4.5 where tiny samples at 2.5 (docs/results.md §14.2)
    tiny = P.default_params()
    for sec in ("model", "text", "codec", "codec_train", "train", "data", "encode", "curate", "pretrain_base"):
        assert c[sec] == tiny[sec], sec
    assert c["sample"] == {**tiny["sample"], "guidance_scale": 4.5} and tiny["sample"]["guidance_scale"] == 2.5


def test_model_num_layers_sets_the_base_depth(tiny):
    """model.num_layers: null = the profile's depth; a number builds that many blocks (the claims' scratch run at
    the grown depth) and the growth layout is checked against it."""
    from sana_core.model import build_transformer

    assert tiny["model"]["num_layers"] is None
    assert len(build_transformer({**tiny["model"], "seed": 0}).transformer_blocks) == 6
    p = copy.deepcopy(tiny)
    p["model"]["num_layers"] = 3
    assert P.validate(p) is p
    assert len(build_transformer({**p["model"], "seed": 0}).transformer_blocks) == 3


def test_sft_subset_is_a_stage_key_not_a_train_key(tiny):
    """sft.subset lives in the sft section but never reaches sana_core.train (which rejects unknown keys)."""
    from sana_core.train import validate_config

    assert tiny["sft"]["subset"] == "curated"
    p = copy.deepcopy(tiny)
    p["sft"]["subset"] = "random"
    cfg = P.train_cfg(P.validate(p), "sft")
    assert "subset" not in cfg and cfg["steps"] == tiny["sft"]["steps"] and validate_config(cfg)


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


# ------------------------------------------------------------------------------ bad values: the table (issue 19)
# (dotted key, bad value, the whole message `sana15 params check` prints after "params: ")
BAD_VALUES = [
    ("pretrain_base.steps", -5, "pretrain_base.steps: -5 must be >= 1"),
    ("pretrain_base.optimizer", "sgd",
     "pretrain_base.optimizer: 'sgd' is not one of ['adamw', 'adamw8bit', 'came', 'came8bit']"),
    ("text.kind", "t5", "text.kind: 't5' is not one of ['minilm', 'gemma2']"),
    ("judge.name", "gpt", "judge.name: 'gpt' is not one of ['tiny', 'vlm', 'remote', 'clip', 'oracle']"),
    ("text.device", "tpu", "text.device: 'tpu' is not a device; use auto, cpu, cuda or cuda:<i>"),
    ("judge.dtype", "int8",
     "judge.dtype: must be 'auto', 'float32', 'fp32', 'bfloat16', 'bf16', 'float16' or 'fp16', got 'int8'"),
    ("geneval.eval_batch_size", 0, "geneval.eval_batch_size: 0 must be >= 1"),
    ("train.gradient_accumulation_steps", 0, "train.gradient_accumulation_steps: 0 must be >= 1"),
    ("train.num_processes", 3, "train (as pretrain_base uses it): train config key 'distributed' is 'none' but "
                               "num_processes=3, num_machines=1: set distributed to ddp or fsdp"),
    ("train.mixed_precision", "fp8", "train.mixed_precision: must be 'no', 'bf16' or 'fp16', got 'fp8'"),
    ("train.accelerate_config", "/nope.yaml", "train.accelerate_config: /nope.yaml: no such file"),
    ("data.image_size", 48, "data.image_size: 48 not supported by the shapes world (64 or 32)"),
    ("sample.steps", 0, "sample.steps: 0 must be >= 1"),
    ("codec.path", "/nonexistent", "codec.path: /nonexistent: no such folder (a local folder, or null)"),
    ("codec.path", "docs", "codec.path: docs: not a model folder (no config.json)"),   # relative to the root
    ("text.path", "/nonexistent", "text.path: /nonexistent: no such folder (a local folder, or null)"),
    ("judge.path", "/nonexistent", "judge.path: /nonexistent: no such folder (a local folder, or null)"),
    ("model.profile", "huge", "model.profile: 'huge' is not one of ['smoke', 'tiny', 'paper_1.6b', 'paper_4.8b']"),
    ("model.init", "xavier", "model.init: 'xavier' is not one of ['sana', 'pixart', 'diffusers']"),
    ("model.num_layers", 0, "model.num_layers: 0 must be >= 1"),
    ("model.num_layers", 12, "grow.target_depth=10 must exceed the source depth 12 (growth only)"),   # base depth
    ("sft.subset", "best", "sft.subset: must be 'curated' or 'random', got 'best'"),
    ("judge.degraded", 1.5, "judge.degraded: 1.5 must be <= 1.0"),
    ("judge.degraded", -0.1, "judge.degraded: -0.1 must be >= 0.0"),
    ("codec.profile", "f16c32", "codec.profile: 'f16c32' is not one of ['smoke', 'f4c16', 'f8c16s', 'f8c8s', 'f8c4s']"),
    ("sample.solver", "ddim", "sample.solver: 'ddim' is not one of ['dpm', 'euler']"),
    ("sample.shift", 0, "sample.shift: 0 must be > 0.0"),
    ("sample.guidance_scale", -1.0, "sample.guidance_scale: -1.0 must be >= 0.0"),
    ("train.caption_dropout", 1.5, "train.caption_dropout: 1.5 must be <= 1.0"),
    ("train.ema", 1.0, "train.ema: 1.0 must be < 1.0"),
    ("pretrain_base.ema", 0, "pretrain_base.ema: 0 must be > 0.0"),
    ("train.log_every", 0, "train.log_every: 0 must be >= 1"),
    ("train.num_threads", 0, "train.num_threads: 0 must be >= 1"),
    ("train.grad_clip", -0.1, "train.grad_clip: -0.1 must be >= 0.0"),
    ("train.optimizer_args", "betas", "train.optimizer_args: expected a mapping, got str 'betas'"),
    ("sft.lr", 0, "sft.lr: 0 must be > 0.0"),
    ("scratch.batch_size", 0, "scratch.batch_size: 0 must be >= 1"),
    ("pretrain_grown.optimizer", "lion", "pretrain_grown.optimizer: 'lion' is not one of ['adamw', 'adamw8bit', "
                                         "'came', 'came8bit']"),
    ("finetune.steps", "100", "finetune.steps: expected int, got str '100'"),
    ("codec_train.lr", 0.0, "codec_train.lr: 0.0 must be > 0.0"),
    ("grow.strategy", "stack", "grow.strategy: 'stack' is not one of ['partial_preservation', 'cyclic', "
                               "'block_replication']"),
    ("grow.drop_last", -1, "grow.drop_last: -1 must be >= 0"),
    ("quick_eval.prompts", "nope.txt", "quick_eval.prompts: nope.txt: no such file (a local file, or null)"),
    ("importance.n_prompts", 500, "importance.n_prompts: 500 > data.calibration_size=100 (calibration prompts "
                                  "available)"),
    ("prune.targets", [], "prune.targets: needs at least 1 item, got []"),
    ("prune.targets", [0], "prune.targets[0]: 0 must be >= 1"),
    ("judge.val_frac", 1.0, "judge.val_frac: 1.0 must be < 1.0"),
    ("geneval.splits", ["eval_ood"], "geneval.splits[0]: must be 'eval_iid' or 'eval_comp', got 'eval_ood'"),
    ("geneval.best_of", [0], "geneval.best_of[0]: 0 must be >= 1"),
    ("geneval.best_of", [4, 4], "geneval.best_of: duplicates in [4, 4]"),
    ("geneval.variants", [], "geneval.variants: needs at least 1 item, got []"),
    ("data.pool_size", 0, "data.pool_size: 0 must be >= 1"),
    ("data.noise.blur", 1.5, "data.noise.blur: 1.5 must be <= 1.0"),
    ("data.noise.wrong_caption", 0.95, "data.noise: fractions sum to 1.090 > 1"),        # the world's own rule
    ("data.vocabulary.shapes", ["circle", "blob"], "data.vocabulary: world.shapes: unknown shape(s) ['blob']; "
     "choose from ['circle', 'square', 'triangle', 'diamond', 'cross', 'star', 'heart', 'ring']"),
    ("data.object_size", [16.0, 80.0], "data.object_size: 80.0 outside [16.0, 63]"),
    ("data.degrade.color_jitter", 300, "data.degrade.color_jitter: 300 must be <= 255"),
    ("data.seed", 1.5, "data.seed: expected int, got float 1.5"),
    ("curate.scorer", "judge", "curate.scorer: must be 'oracle' or 'clip', got 'judge'"),
    ("curate.min_score", 2.5, "curate.min_score: 2.5 outside [0, 2] (the oracle scorer's range)"),
    ("curate.scorer", "clip", "curate.clip_path: required for the 'clip' scorer (a local CLIP model folder)"),
    ("curate.top_fraction", 0.0, "curate.top_fraction: 0.0 must be > 0.0"),
    ("text.max_length", 1, "text.max_length: 1 must be >= 2"),
    ("text.chi", "yes", "text.chi: expected bool or list, got str 'yes'"),
    ("text.kind", "gemma2", "text.path: the gemma2 text encoder needs a local checkpoint folder"),
    ("judge.name", "vlm", "judge.path: required for the 'vlm' judge (a local folder)"),
    ("seed", -1, "seed: -1 must be >= 0"),
    ("profile", "", "profile: needs at least 1 character, got ''"),
    ("report.title", 3, "report.title: expected str, got int 3"),
]


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_bad_value_table(tiny, key, value, message):
    p = copy.deepcopy(tiny)
    *parents, last = key.split(".")
    d = p
    for k in parents:
        d = d[k]
    d[last] = value
    with pytest.raises(ValueError) as ei:
        P.validate(p, root=ROOT)
    assert str(ei.value) == f"params: {message}"


def test_table_is_long_enough_and_covers_every_section():
    assert len(BAD_VALUES) >= 30
    assert {k.split(".")[0] for k, _, _ in BAD_VALUES} >= set(STAGES) | {"model", "text", "codec", "sample"}


def test_schema_declares_every_key_of_tiny_and_nothing_else(tiny):
    """Adding a key = a field in flows/params.py + its default in profiles/tiny.yaml: both or neither."""
    assert P.undeclared_keys(tiny) == []
    assert P.validate(copy.deepcopy(tiny)) == tiny          # every declared field is in tiny (else: missing key)


def test_key_only_in_tiny_validates_by_its_default_type(tiny):
    """A parallel branch that adds a key to tiny.yaml only: it keeps working, typed by its default."""
    p = copy.deepcopy(tiny)
    p["report"]["new_knob"] = "no"
    assert P.undeclared_keys(p) == ["report.new_knob"]
    schema = P._with_undeclared_keys(P.Params, p)
    schema.model_validate(p)
    p["report"]["new_knob"] = 3
    with pytest.raises(Exception, match="new_knob"):
        schema.model_validate(p)


def test_folders_are_checked_against_the_root_only_when_given(tiny, tmp_path):
    p = copy.deepcopy(tiny)
    p["codec"]["path"] = "models/codec"
    assert P.validate(p) is p                               # no root: profiles name folders of another machine
    with pytest.raises(ValueError, match="codec.path: models/codec: no such folder"):
        P.validate(p, root=tmp_path)
    (tmp_path / "models" / "codec").mkdir(parents=True)
    (tmp_path / "models" / "codec" / "config.json").write_text("{}")
    assert P.validate(p, root=tmp_path) is p


def test_several_problems_are_counted_on_one_line(tiny):
    p = copy.deepcopy(tiny)
    p["sample"]["steps"], p["judge"]["name"], p["sft"]["lr"] = 0, "gpt", -1.0
    msg = _err(p)
    assert msg.startswith("params: sample.steps: 0 must be >= 1 (+2 more: sft.lr, judge.name)") and "\n" not in msg


def test_cli_check_rejects_a_missing_folder_and_use_paper_notes_it(tmp_path, capsys):
    from flows.cli import main

    assert main(["params", "--root", str(tmp_path), "use", "paper"]) == 0   # written: the paths are the GPU box's
    err = capsys.readouterr().err
    assert "note: params: text.path: /models/gemma-2-2b-it: no such folder" in err
    assert main(["params", "--root", str(tmp_path), "check"]) == 2
    assert "text.path: /models/gemma-2-2b-it: no such folder" in capsys.readouterr().err


def test_choices_written_here_match_the_stage_that_acts_on_them():
    from typing import get_args

    from flows.stages.curate import SCORERS

    assert get_args(P.Curate.model_fields["scorer"].annotation) == SCORERS
