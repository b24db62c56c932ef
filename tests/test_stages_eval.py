"""Evaluation stages on the smoke profile (no DVC): judge → geneval@pretrain_base (N ∈ {1, 2, 4}, k = 2, both splits)
→ report, through flows.stage_runner.run_stage in a temp root built by data → codec → encode → pretrain_base; plus the
knockout's oracle properties, a geneval run on rendered candidates (so the oracle has correct images to find), and the
`sana15 geneval` command."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flows import params as P
from flows.stage_runner import run_stage

UPSTREAM = ["data", "codec", "encode", "pretrain_base"]
K, NS = 2, [1, 2, 4]


def _params(root: Path) -> dict:
    P.use_profile("smoke", root)
    d = P.read_yaml(root / "params.yaml", roundtrip=True)
    d["train"]["num_threads"] = 1
    d["geneval"]["variants"] = ["pretrain_base"]
    d["geneval"]["best_of"] = NS
    d["geneval"]["n_images"] = K
    d["geneval"]["splits"] = ["eval_iid", "eval_comp"]
    d["geneval"]["max_prompts"] = 6
    P.write_yaml_atomic(d, root / "params.yaml")
    return P.load(root)


def _run(root: Path, name: str, item: str | None = None) -> dict:
    fn = getattr(importlib.import_module(f"flows.stages.{name}"), name)
    return run_stage(name, fn, argv=[item] if item else [], root=root)


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    old_env, old_threads = os.environ.get("SANA15_TRACKING"), torch.get_num_threads()
    os.environ["SANA15_TRACKING"] = "0"
    torch.set_num_threads(1)
    try:
        params = _params(root)
        for name in UPSTREAM + ["judge"]:
            _run(root, name)
        _run(root, "geneval", "pretrain_base")
        _run(root, "report")
        yield root, params
    finally:
        torch.set_num_threads(old_threads)
        if old_env is None:
            os.environ.pop("SANA15_TRACKING", None)
        else:
            os.environ["SANA15_TRACKING"] = old_env


def _m(root: Path, stem: str) -> dict:
    return json.loads((root / "metrics" / f"{stem}.json").read_text())


# ------------------------------------------------------------------------------------------------------------ judge
def test_judge_trained_on_base_model_images_of_training_prompts(ev):
    from sana_core.geneval.layout import read_metadata_jsonl
    from sana_core.judges import build_judge
    root, params = ev
    m, jp = _m(root, "judge"), params["judge"]
    train_prompts = [json.loads(l) for l in (root / "models/judge/training_prompts.jsonl").read_text().splitlines()]
    evals = {x["prompt"] for s in ("eval_iid", "eval_comp") for x in read_metadata_jsonl(root / f"data/shapes/{s}.jsonl")}
    assert len(train_prompts) == m["n_prompts"] == jp["n_prompts"] and not evals & {x["prompt"] for x in train_prompts}
    assert m["n_images"] == jp["n_prompts"] * jp["images_per_prompt"] == m["n_train"] + m["n_val"]
    assert m["n_val_prompts"] == round(jp["val_frac"] * jp["n_prompts"]) and m["n_val"] == m["n_val_prompts"] * jp["images_per_prompt"]
    for k in ("train_pos_rate", "val_pos_rate", "val_acc", "val_majority_acc", "val_pred_pos_rate"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["val_majority_acc"] == pytest.approx(max(m["val_pos_rate"], 1 - m["val_pos_rate"]))
    assert m["val_balanced_acc"] is None or 0.0 <= m["val_balanced_acc"] <= 1.0
    assert m["steps"] >= jp["steps"] and m["flops_per_image"] > 0
    # + renders of the training prompts (not the held-out ones) and their near misses, dense loss on (smoke profile)
    assert m["n_renders"] == (m["n_prompts"] - m["n_val_prompts"]) * jp["renders_per_prompt"] > 0
    assert 0.0 <= m["renders_pos_rate"] < 1.0 and jp["dense"] > 0     # smoke codec: its round trip spoils most renders
    j = build_judge({"name": "tiny", "path": str(root / "models/judge")})
    assert j.flops_per_image(64) == m["flops_per_image"]
    hist = json.loads((root / "plots/judge.json").read_text())
    assert hist[-1]["step"] == m["steps"] and hist[-1]["loss"] == pytest.approx(m["train_loss"])


# ---------------------------------------------------------------------------------------------------------- geneval
def test_geneval_layouts_and_scores_equal_a_rescore(ev, tmp_path):
    from sana_core.geneval.layout import prompt_folders, sample_paths
    from sana_core.geneval.score import score_folder
    root, params = ev
    m = _m(root, "geneval_pretrain_base")
    assert m["n"] == NS and m["k"] == K and m["judges"] == ["tiny", "oracle"]
    for n in NS:
        for j in m["judges"]:
            for split, key in (("eval_iid", "iid"), ("eval_comp", "comp")):
                folder = root / "geneval/pretrain_base" / f"n{n}" / ("all" if n <= K else j) / split
                dirs = prompt_folders(folder)
                assert len(dirs) == m["n_prompts"][key] == 6
                assert all(len(sample_paths(d)) == min(K, n) for d in dirs)
                s = m["best_of"][str(n)][j][key]
                assert s["n_images"] == 6 * min(K, n) and s["k"] == min(K, n)
                for t in ("overall", "prompts_any_correct", "candidates_any_correct"):
                    assert 0.0 <= s[t] <= 1.0
                _, re = score_folder(folder, out_results=tmp_path / "r.jsonl", out_summary=tmp_path / "s.json")
                assert {k: v for k, v in re.items() if v is not None} == {k: s[k] for k in re if re[k] is not None}
    top = m["best_of"]["1"]["tiny"]["iid"]
    assert m["overall"] == top["overall"] and m["n_images"] == top["n_images"]
    assert m["comp"]["overall"] == m["best_of"]["1"]["tiny"]["comp"]["overall"]
    plot = json.loads((root / "plots/geneval_pretrain_base.json").read_text())
    assert [(r["N"], r["judge"]) for r in plot] == [(n, j) for n in NS for j in ("tiny", "oracle")]
    assert (root / m["sample_grid"]).is_file()


def test_geneval_flop_accounting(ev):
    from sana_core.flops import forward_flops_per_sample
    from sana_core.judges import count_flops
    from sana_core.sample import load_sampler
    from sana_core.scaling import players
    root, params = ev
    m, jm = _m(root, "geneval_pretrain_base"), _m(root, "judge")
    s = load_sampler(root / "models/pretrain_base")
    shape = s.codec.latent_shape(s.image_size)
    fwd = forward_flops_per_sample(s.transformer, shape, s.text.max_length)
    dec = count_flops(s.codec.decode, torch.zeros(1, *shape))
    g = m["generation_flops_per_image"]
    assert g == pytest.approx(params["sample"]["steps"] * 2 * fwd + dec) and dec > 0   # CFG: 2 forwards per step
    for n in NS:
        f = m["flops"][str(n)]
        assert f["generation_flops"] == pytest.approx(n * g)                              # ∝ N
        calls = 0 if n <= K else players(n, K)
        assert f["tiny"]["judge_calls"] == f["oracle"]["judge_calls"] == calls
        assert f["tiny"]["judge_flops"] == pytest.approx(calls * jm["flops_per_image"])
        assert f["tiny"]["judge_calls_official"] == 2 * max(n - K, 0) and f["oracle"]["judge_flops"] == 0
    assert m["flops"]["4"]["tiny"]["judge_ratio"] < 0.1          # the judge costs ≪ generation


def test_knockout_with_the_oracle_keeps_a_correct_candidate_iff_one_exists():
    """The property the oracle's best-of-N rests on, on every label pattern of 8 candidates: a correct candidate is only
    eliminated by another correct one, so the kept set holds a correct image iff the first N do (monotone in N).
    For N = k·2^r the i-th survivor wins the i-th block of 2^r sorted candidates, so the oracle's score = share of
    blocks with a correct candidate — which is NOT monotone in N: (✓, ✓, ✗, ✗) scores 2/2 at N = 2 and 1/2 at N = 4."""
    from itertools import product

    from sana_core.scaling import select
    from sana_core.scaling import Verdict
    seeds = list(range(8))
    for bits in product([0, 1], repeat=8):
        v = {s: Verdict(bool(b), 0.5 + 0.4 * b, 0.5 - 0.4 * b) for s, b in zip(seeds, bits)}
        for k in (1, 2, 4):
            prev = False
            for n in range(1, 9):
                sel = select(seeds, v, n, k)
                assert len(sel) == min(n, k) and all(i < n for i in sel)
                has = any(bits[i] for i in sel)
                assert has == any(bits[:n]) and has >= prev
                prev = has
                if n > k and n % k == 0 and (n // k) & (n // k - 1) == 0:
                    b = n // k
                    assert sum(bits[i] for i in sel) == sum(any(bits[j * b:(j + 1) * b]) for j in range(k))
    v = {s: Verdict(b, float(b), 1.0 - b) for s, b in zip(range(4), (True, True, False, False))}
    assert select(list(range(4)), v, 2, 2) == [0, 1] and select(list(range(4)), v, 4, 2) == [0, 2]


def _rendered_sampler(real, metas: dict, world):
    """The real sampler with generate_grid replaced: (prompt, seed) → a ground-truth render of the prompt when a hash
    of the pair says so (about 1 in 3), else an empty background — so the oracle has something to find."""
    from sana_core.geneval.prompts import scene_for_metadata
    from sana_core.geneval.render import render
    from sana_core.geneval.world import BG

    def lucky(p, s):
        return int(hashlib.sha256(f"{p}|{s}".encode()).hexdigest(), 16) % 3 == 0

    def generate_grid(prompts, seeds, **kw):
        out = np.empty((len(prompts), len(seeds), world.image_size, world.image_size, 3), np.uint8)
        for i, p in enumerate(prompts):
            for j, s in enumerate(seeds):
                out[i, j] = render(scene_for_metadata(metas[p], np.random.default_rng(s), world), world.image_size) \
                    if lucky(p, s) else np.array(BG, np.uint8)
        return out

    real.generate_grid = generate_grid
    return real


def test_oracle_best_of_n_on_rendered_candidates(ev, tmp_path, monkeypatch):
    import pandas as pd

    from flows.stages import _common as C
    from sana_core.geneval.evaluate import summary
    from sana_core.geneval.layout import read_metadata_jsonl
    from sana_core.geneval.score import score_image
    from sana_core.geneval.world import world_config
    root, params = ev
    for rel in ("data/shapes", "models/pretrain_base", "models/judge"):
        shutil.copytree(root / rel, tmp_path / rel)
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    world = world_config(64)
    metas = {x["prompt"]: x for s in ("eval_iid", "eval_comp") for x in read_metadata_jsonl(root / f"data/shapes/{s}.jsonl")}
    load = C.load_model
    monkeypatch.setattr(C, "load_model", lambda r, rel, *a: _rendered_sampler(load(r, rel, *a), metas, world))
    monkeypatch.setenv("SANA15_TRACKING", "0")
    m = _run(tmp_path, "geneval", "pretrain_base")
    from sana_core.geneval.splits import stratified
    fake = _rendered_sampler(load(root, "models/pretrain_base"), metas, world)
    for split, key in (("eval_iid", "iid"), ("eval_comp", "comp")):
        ms = stratified(read_metadata_jsonl(root / f"data/shapes/{split}.jsonl"), 6)
        imgs = fake.generate_grid([x["prompt"] for x in ms], list(range(4)))
        lab = np.array([[score_image(im, x, world)[0] for im in row] for x, row in zip(ms, imgs)])
        assert 0 < lab.mean() < 1
        o = {n: m["best_of"][str(n)]["oracle"][key] for n in NS}
        for n in NS:
            assert o[n]["candidates_any_correct"] == pytest.approx(lab[:, :n].any(1).mean())
            assert o[n]["prompts_any_correct"] == o[n]["candidates_any_correct"]   # the oracle finds one if any
            assert m["best_of"][str(n)]["tiny"][key]["prompts_any_correct"] <= o[n]["prompts_any_correct"]
        assert o[1]["overall"] == pytest.approx(summary(pd.DataFrame({"tag": [x["tag"] for x in ms],
                                                                      "correct": lab[:, 0]}))["overall"])
        # N = 4, k = 2: survivors = winners of blocks {0, 1} and {2, 3} → the oracle's exact score
        blocks = pd.DataFrame([{"tag": x["tag"], "correct": bool(lab[i, 2 * b:2 * b + 2].any())}
                               for i, x in enumerate(ms) for b in range(2)])
        assert o[4]["overall"] == pytest.approx(summary(blocks)["overall"])
        acc = m["judge_accuracy"]["tiny"][key]
        assert acc["n"] == lab.size and acc["pos_rate"] == pytest.approx(lab.mean())


# ----------------------------------------------------------------------------------------------------------- report
def test_report_has_tables_and_figures(ev):
    root, params = ev
    md = (root / "reports/report.md").read_text()
    assert md.startswith(f"# {params['report']['title']}")
    assert "| variant | overall (IID) |" in md and "| pretrain_base |" in md
    assert "| N | judge | IID | comp |" in md and "| judge | train images |" in md and "| stage | depth |" in md
    refs = [l.split("](")[1].rstrip(")") for l in md.splitlines() if l.startswith("![")]
    assert "figures/geneval_vs_n_pretrain_base.png" in refs and "figures/loss_curves.png" in refs
    assert "figures/samples_pretrain_base.png" in refs and "figures/samples_geneval_pretrain_base.png" in refs
    assert all((root / "reports" / r).is_file() for r in refs)
    rep = json.loads((root / "reports/report.json").read_text())
    assert set(rep["sections_not_run"]) == {"Pruned models before / after the healing finetune", "Growth",
                                            "Block importance", "Comparisons"}      # one variant: nothing to compare
    assert md.count("_not run_") == 4
    m = _m(root, "geneval_pretrain_base")
    iv = rep["intervals"]["pretrain_base"]["n1"]["tiny"]["iid"]
    assert iv["value"] == pytest.approx(m["overall"]) and iv["lo"] <= iv["value"] <= iv["hi"]
    assert f"| pretrain_base | {m['overall']:.3f} [{iv['lo']:.3f}, {iv['hi']:.3f}] |" in md


def test_report_without_any_inputs_says_not_run(tmp_path):
    from flows.stages.report import report
    P.use_profile("smoke", tmp_path)
    rec = report(P.load(tmp_path), tmp_path)
    md = (tmp_path / "reports/report.md").read_text()
    assert rec["n_figures"] == 0 and md.count("_not run_") == rec["sections"] == len(rec["sections_not_run"]) == 11
    assert rec["intervals"] == rec["comparisons"] == {}
    assert not any((tmp_path / "reports/figures").iterdir())


def test_report_names_a_corrupt_metrics_file_instead_of_not_run(tmp_path):
    """A metrics JSON that exists but does not parse (a stage killed mid-write by hand, a truncated copy) is reported
    as unreadable, naming the file, in the sections that need it — not as "not run"."""
    from flows.stages.report import report
    P.use_profile("smoke", tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/importance.json").write_text('{"stage": "importance", "importance": [0.1, ')  # truncated
    (tmp_path / "metrics/geneval_sft.json").write_text("[1, 2]")                                      # not a dict
    rec = report(P.load(tmp_path), tmp_path)
    md = (tmp_path / "reports/report.md").read_text()
    assert rec["inputs_unreadable"] == ["metrics/geneval_sft.json", "metrics/importance.json"]
    sec = md.split("## Block importance\n", 1)[1].split("\n## ", 1)[0]
    assert "_unreadable inputs_: `metrics/importance.json` (JSONDecodeError" in sec and "_not run_" not in sec
    assert "`metrics/geneval_sft.json` (expected a JSON dict, got list)" in md
    assert "Block importance" not in rec["sections_not_run"]
    # importance + the three sections that read metrics/geneval_*.json say unreadable; the other seven "not run"
    assert md.count("_not run_") == rec["sections"] - 4 == 7


TAGS6 = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def _write_geneval(root: Path, v: str, correct: dict, k: int = 2) -> None:
    """Synthetic geneval@v output: per split key a [P, k] bool array of verdicts (prompt p has tag TAGS6[p % 6]) as
    geneval/<v>/n1/all/eval_<key>/results.jsonl (+ n2 for the best-of table) and metrics/geneval_<v>.json."""
    from sana_core.geneval.evaluate import summary, write_results
    import pandas as pd
    summ = {}
    for key, c in correct.items():
        for n in (1, 2):
            rows = [{"filename": f"/tmp/x/{p:05d}/samples/{i:05d}.png", "tag": TAGS6[p % 6], "prompt": f"prompt {p}",
                     "correct": bool(c[p, i]), "reason": "", "metadata": "{}", "details": "{}"}
                    for p in range(len(c)) for i in range(n)]
            folder = root / "geneval" / v / f"n{n}" / "all" / f"eval_{key}"
            folder.mkdir(parents=True)
            write_results(rows, folder)
            summ[(n, key)] = summary(pd.DataFrame(rows))
    m = {"overall": summ[(1, "iid")]["overall"], "comp": {"overall": summ[(1, "comp")]["overall"]}, "judge": "tiny",
         "judges": ["tiny", "oracle"], "k": k, "n": [1, 2],
         "best_of": {str(n): {j: {key: summ[(n, key)] for key in correct} for j in ("tiny", "oracle")} for n in (1, 2)}}
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / f"geneval_{v}.json").write_text(json.dumps(m))


def test_report_prints_intervals_and_the_paired_comparisons(tmp_path):
    """Every GenEval overall cell carries its bootstrap interval, read from the geneval stage's results.jsonl; the
    Comparisons section gives each claim's paired difference and verdict; report() returns both."""
    from flows.stages.report import report
    from sana_core.geneval.stats import bootstrap_overall, paired_difference, read_results
    P.use_profile("smoke", tmp_path)
    rng = np.random.default_rng(0)
    base = rng.random((60, 2)) < 0.5
    runs = {"pretrain_base": base, "pretrain_grown": base.copy(),            # identical → no difference
            "sft": np.ones((60, 2), bool),                                     # all right → sft better
            "finetune_2": rng.random((60, 2)) < 0.1, "scratch_2": rng.random((60, 2)) < 0.9}
    for v, c in runs.items():
        _write_geneval(tmp_path, v, {"iid": c, "comp": c[::-1].copy()})
    rec = report(P.load(tmp_path), tmp_path)
    md = (tmp_path / "reports/report.md").read_text()
    res = lambda v, key, n=1: read_results(tmp_path / f"geneval/{v}/n{n}/all/eval_{key}/results.jsonl")
    for v in runs:
        iid, comp, best = (str(bootstrap_overall(res(v, key, n))) for key, n in (("iid", 1), ("comp", 1), ("iid", 2)))
        row = next(l for l in md.split("## GenEval vs N")[0].splitlines() if l.startswith(f"| {v} |"))
        assert row.startswith(f"| {v} | {iid} |") and f"| {comp} | 2 | {best} | {best} |" in row
        assert rec["intervals"][v]["n1"]["tiny"]["iid"] == bootstrap_overall(res(v, "iid")).as_dict()
        assert f"| 2 | tiny | {best} | {bootstrap_overall(res(v, 'comp', 2))} |" in md     # GenEval vs N rows
    sec = md.split("## Comparisons\n", 1)[1].split("\n## ", 1)[0]
    expect = {("finetune_2", "scratch_2"): "scratch_2 better", ("pretrain_grown", "pretrain_base"): "no difference",
              ("sft", "pretrain_grown"): "sft better"}
    for (a, b), word in expect.items():
        for key in ("iid", "comp"):
            d, _ = paired_difference(res(a, key), res(b, key))
            line = f"| {a} | {b} | {key} | {res(a, key).overall:.3f} | {res(b, key).overall:.3f} | " \
                   f"{d.value:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}] | {word} |"
            assert line in sec, (line, sec)
            assert rec["comparisons"][f"{a}_vs_{b}"][key] == {**d.as_dict(), "verdict": word}
    assert "Comparisons" not in rec["sections_not_run"] and "Overall scores: value [95 % interval]" in md
    # pruned vs scratch bars and the before/after table carry intervals too
    assert f"| finetune_2 | {bootstrap_overall(res('finetune_2', 'iid'))} |" in md.split("## Pruned vs scratch")[1]


def _growth_row(md: str) -> list[str]:
    sec = md.split("## Growth\n", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in sec.splitlines() if l.startswith("| ") and not l.startswith("| strategy")]
    assert len(rows) == 1, sec
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_report_growth_section_records_each_strategys_outcome(tmp_path):
    """The report says, per run (so per growth-ablation experiment), which strategy grew the model, whether growth
    was exact at init, and whether pretrain_grown finished or hit a non-finite loss."""
    from flows.stages.report import report
    P.use_profile("smoke", tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "plots").mkdir()
    grow = {"stage": "grow", "source_depth": 6, "depth": 12, "strategy": "cyclic", "drop_last": 0, "n_new_blocks": 0,
            "n_copied_blocks": 12}
    (tmp_path / "metrics/grow.json").write_text(json.dumps(grow))
    curve = [{"step": 10, "loss": 0.36, "grad_norm": 0.88}, {"step": 20, "loss": 0.2, "grad_norm": 0.4}]
    (tmp_path / "plots/pretrain_grown.json").write_text(json.dumps(curve))
    (tmp_path / "metrics/pretrain_grown.json").write_text(json.dumps(
        {"stage": "pretrain_grown", "steps": 20, "loss": 0.2, "geneval_quick": {"overall": 0.4}}))
    report(P.load(tmp_path), tmp_path)
    row = _growth_row((tmp_path / "reports/report.md").read_text())
    assert row == ["cyclic", "6 → 12", "0", "12", "–", "20", "0.360", "0.200", "0.880", "no (finished)", "0.400"]
    # a diverged run: the NaN guard wrote no metrics; the logged curve ends non-finite
    (tmp_path / "metrics/pretrain_grown.json").unlink()
    curve.append({"step": 30, "loss": float("nan"), "grad_norm": float("inf")})
    (tmp_path / "plots/pretrain_grown.json").write_text(json.dumps(curve))
    report(P.load(tmp_path), tmp_path)
    row = _growth_row((tmp_path / "reports/report.md").read_text())
    assert row[0] == "cyclic" and row[5] == "–" and row[9] == "yes: stopped by the NaN guard"


# -------------------------------------------------------------------------------------------------- errors and CLI
def test_bad_inputs_fail_before_compute(ev, tmp_path):
    from flows.stages.geneval import geneval
    root, params = ev
    with pytest.raises(ValueError, match="geneval.variants"):
        geneval(params, root, "sft")
    shutil.copytree(root / "data/shapes", tmp_path / "data/shapes")
    shutil.copytree(root / "models/pretrain_base", tmp_path / "models/pretrain_base")
    with pytest.raises(FileNotFoundError, match="tiny judge, stage judge"):
        geneval(params, tmp_path, "pretrain_base")
    assert not (tmp_path / "geneval").exists()


def test_cli_geneval_matches_the_stage_and_rejects_coco_for_our_judges(ev, tmp_path, shared_geneval, capsys):
    from flows.cli import main
    from sana_core.geneval.layout import iter_layout
    root, _ = ev
    base = ["geneval", "--model", str(root / "models/pretrain_base"), "--n", "4", "--k", "2"]
    for judge in ("oracle", "tiny"):
        assert main(base + ["--prompts", str(shared_geneval), "--judge", judge, "--judge-path",
                            str(root / "models/judge"), "--out", str(tmp_path / "coco")]) == 2
        err = capsys.readouterr().err
        assert ("cannot judge" if judge == "oracle" else "reads GenEval-Shapes prompts only") in err and "'bench'" in err
    assert not (tmp_path / "coco").exists()
    out = tmp_path / "cli"
    assert main(base + ["--prompts", str(root / "data/shapes/eval_iid.jsonl"), "--judge", "oracle", "--max-prompts",
                        "6", "--out", str(out)]) == 0
    stage = root / "geneval/pretrain_base/n4/oracle/eval_iid"
    a, b = list(iter_layout(out)), list(iter_layout(stage))
    assert len(a) == len(b) == 6
    for (i, ma, ia), (j, mb, ib) in zip(a, b):   # same picks, same PNG bytes (same seeds, same sampler batches)
        assert i == j and ma == mb and [x[0].read_bytes() for x in ia] == [y[0].read_bytes() for y in ib]
    kept = [[json.loads(l)["kept_seeds"] for l in (d / "selection.jsonl").read_text().splitlines()] for d in (out, stage)]
    assert kept[0] == kept[1]
    summ = json.loads((out / "summary.json").read_text())
    assert summ["overall"] == _m(root, "geneval_pretrain_base")["best_of"]["4"]["oracle"]["iid"]["overall"]
    sel = [json.loads(l) for l in (out / "selection.jsonl").read_text().splitlines()]
    assert all(len(r["kept_seeds"]) == 2 and len(r["verdicts"]) == 4 for r in sel)


def test_one_geneval_procedure_in_the_stage_the_command_the_bench_and_the_quick_eval(ev, tmp_path):
    """GenEval's seeds (image k of every prompt: seed + k, sana_core.geneval.procedure) in all four places: the bench
    diagnosis of the stage's prompts at N = 4 gives the stage's candidates bit for bit (its N = 2 folder = images
    0-1, its per-image verdicts = the folder's results.jsonl), a non-zero first seed shifts the seeds of every prompt,
    and the quick eval is the bench at N = 1 with quick_eval.seed."""
    import importlib.util

    from flows.stages import _common as C
    from flows.stages.geneval import eval_prompts
    from sana_core.geneval.layout import iter_layout
    from sana_core.geneval.procedure import image_seeds
    root, params = ev
    spec = importlib.util.spec_from_file_location("geneval_diagnose",
                                                  Path(__file__).parents[1] / "bench" / "geneval_diagnose.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert image_seeds(5, 3) == [5, 6, 7]
    sampler = C.load_model(root, C.model_path("pretrain_base"), params)
    sampler.config = sampler._cfg(C.sampling(params))                # as the stage sets it
    metas, world = eval_prompts(params, root)["eval_iid"], C.world(params)
    summ, _, imgs, correct = bench.diagnose(sampler, metas, world, 4, seed=params["geneval"]["seed"])
    stage = root / "geneval/pretrain_base/n2/all/eval_iid"
    for i, m, files in iter_layout(stage):
        assert m == metas[i] and all(np.array_equal(arr, imgs[i, k]) for k, (_, arr) in enumerate(files))
    res = [json.loads(l) for l in (stage / "results.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in res] == correct[:, :2].ravel().tolist()
    assert summ["overall"] == pytest.approx(np.mean([correct[[i for i, m in enumerate(metas) if m["tag"] == t]].mean()
                                                     for t in dict.fromkeys(m["tag"] for m in metas)]))
    _, _, shifted, _ = bench.diagnose(sampler, metas, world, 2, seed=params["geneval"]["seed"] + 2)
    assert np.abs(shifted.astype(int) - imgs[:, 2:]).max() <= 1    # seeds 2, 3 of every prompt (other batch)
    quick = C.quick_prompts(root, params)
    q = bench.diagnose(sampler, quick, world, 1, seed=params["quick_eval"]["seed"])[0]
    assert C.quick_geneval(sampler, root, params) == {k: v for k, v in q.items() if v is not None}


def test_small_world_judge_prompts_are_reserved_from_the_eval(tmp_path):
    """The tiny 4 x 4 world's IID prompt space is all in eval_iid: the judge then takes ≤ half of each tag's eval_iid
    prompts (deterministic), and the geneval stage drops exactly those — judge and benchmark never share a prompt.
    The full world (smoke) reserves nothing."""
    from flows.stages._common import SHAPES, judge_prompt_sets, world_cfg
    from sana_core.geneval.dataset import build_dataset
    from sana_core.geneval.layout import read_metadata_jsonl
    params = P.load_profile("tiny")
    params["data"] = {**params["data"], "pool_size": 8}
    build_dataset(world_cfg(params), tmp_path / SHAPES)
    iid = read_metadata_jsonl(tmp_path / SHAPES / "eval_iid.jsonl")
    assert len(iid) == 153
    outside, res = judge_prompt_sets(params, tmp_path)
    train = outside + res
    assert len(res) == len(train) == params["judge"]["n_prompts"] == 60
    assert [m["prompt"] for m in train] == [m["prompt"] for m in res]
    assert res == judge_prompt_sets(params, tmp_path)[1]                     # deterministic
    tags = {t: sum(m["tag"] == t for m in iid) for t in {m["tag"] for m in iid}}
    got = {t: sum(m["tag"] == t for m in res) for t in tags}
    assert all(got[t] <= tags[t] // 2 for t in tags) and got["position"] == 20 and got["single_object"] == 2
    assert {m["prompt"] for m in res} <= {m["prompt"] for m in iid}
    smoke = P.load_profile("smoke")
    build_dataset(world_cfg(smoke), tmp_path / "full" / SHAPES)
    assert judge_prompt_sets(smoke, tmp_path / "full")[1] == []


def test_quick_eval_prompts_cover_the_six_tasks(tmp_path):
    """The stages' quick eval takes quick_eval.n_prompts of eval_iid round-robin over the tags: in the tiny world the
    first 32 in file order covered 4 of the 6 tasks; the quick eval's 32 cover all six, 5-6 each (4 single_object:
    all the world has)."""
    import collections

    from flows.stages._common import SHAPES, quick_prompts, world_cfg
    from sana_core.geneval.dataset import build_dataset
    from sana_core.geneval.layout import read_metadata_jsonl
    from sana_core.geneval.splits import stratified
    params = P.load_profile("tiny")
    params["data"] = {**params["data"], "pool_size": 8}
    build_dataset(world_cfg(params), tmp_path / SHAPES)
    iid = read_metadata_jsonl(tmp_path / SHAPES / "eval_iid.jsonl")
    n = params["quick_eval"]["n_prompts"]
    assert n == 32 and len({m["tag"] for m in iid[:n]}) == 4
    q = quick_prompts(tmp_path, params)
    assert q == stratified(iid, n) and len(q) == n
    counts = collections.Counter(m["tag"] for m in q)
    assert len(counts) == 6 and counts["single_object"] == 4 and all(c in (5, 6) for t, c in counts.items()
                                                                      if t != "single_object")


def test_oracle_judge_lives_in_the_data_world():
    """The oracle = the evaluator of the data's world: the tiny 4 x 4 world at 16-26 px, not the full 64 px world
    (the first tiny run's geneval stage caught the mismatch: folder score 0.229 vs in-memory oracle 0.243)."""
    from flows.stages._common import world
    from flows.stages._common import judge_cfg
    from sana_core.judges import build_judge
    params = P.load_profile("tiny")
    cfg = judge_cfg(params, Path("."), "oracle")
    j = build_judge(dict(cfg))
    assert j.world == world(params) and j.world.shapes == ("circle", "square", "triangle", "cross")


def test_geneval_under_two_processes_matches_one(ev, tmp_path):
    """`geneval.num_processes: 2` and the dvc.yaml command `python -m flows.stages.geneval pretrain_base`: the stage
    re-launches itself under `accelerate launch` (gloo on CPU), the candidates are split between the processes
    (sana_core/parallel.py), the main process writes — the same metrics and the same PNGs as the one-process run of
    the fixture."""
    import subprocess
    import sys

    from flows.stage_runner import launch_command, launch_config
    root, _ = ev
    for rel in ("data/shapes", "models/pretrain_base", "models/judge"):
        shutil.copytree(root / rel, tmp_path / rel)
    d = P.read_yaml(root / "params.yaml", roundtrip=True)
    d["geneval"]["num_processes"] = 2
    P.write_yaml_atomic(d, tmp_path / "params.yaml")
    assert launch_command("geneval", "x", launch_config(P.load(root), "geneval")) is None      # 1 process: in place
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1",
           "SANA15_TRACKING": "0", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "flows.stages.geneval", "pretrain_base"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage geneval: 2 processes: " in r.stderr and "accelerate.commands.launch" in r.stderr
    one, two = _m(root, "geneval_pretrain_base"), _m(tmp_path, "geneval_pretrain_base")
    assert one["best_of"] == two["best_of"] and one["judge_accuracy"] == two["judge_accuracy"]
    assert one["overall"] == two["overall"] and one["flops"] == two["flops"]
    pngs = sorted(p.relative_to(root / "geneval") for p in (root / "geneval").rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(tmp_path / "geneval") for p in (tmp_path / "geneval").rglob("*.png"))
    assert all((root / "geneval" / p).read_bytes() == (tmp_path / "geneval" / p).read_bytes() for p in pngs)
    assert not list((tmp_path / "geneval").glob(".*"))                      # no leftover temp folder


def test_geneval_stage_drops_the_prompts_in_the_judge_folder(tmp_path):
    """The geneval stage scores no prompt the judge trained on, and takes that set from the judge folder
    (models/judge/training_prompts.jsonl, written by stage judge), not from a re-derivation: the tiny world's 60
    reserved eval_iid prompts are dropped, and a hand-written set is dropped exactly; no file → a clear error."""
    from flows.stages._common import JUDGE_DIR, SHAPES, judge_prompt_sets, world_cfg
    from flows.stages.geneval import eval_prompts
    from sana_core.geneval.dataset import build_dataset
    from sana_core.geneval.layout import read_metadata_jsonl
    params = P.load_profile("tiny")
    params["data"] = {**params["data"], "pool_size": 8}
    params["geneval"] = {**params["geneval"], "splits": ["eval_iid", "eval_comp"], "max_prompts": 0}
    build_dataset(world_cfg(params), tmp_path / SHAPES)
    iid = read_metadata_jsonl(tmp_path / SHAPES / "eval_iid.jsonl")
    comp = read_metadata_jsonl(tmp_path / SHAPES / "eval_comp.jsonl")
    with pytest.raises(FileNotFoundError, match="training_prompts.jsonl"):
        eval_prompts(params, tmp_path)
    outside, reserved = judge_prompt_sets(params, tmp_path)
    assert len(reserved) == 60
    (tmp_path / JUDGE_DIR).mkdir(parents=True)
    f = tmp_path / JUDGE_DIR / "training_prompts.jsonl"
    f.write_text("".join(json.dumps(m) + "\n" for m in outside + reserved))
    got = eval_prompts(params, tmp_path)
    res_p = {m["prompt"] for m in reserved}
    assert len(got["eval_iid"]) == len(iid) - 60
    assert got["eval_comp"] == [m for m in comp if m["prompt"] not in res_p]   # untied prompts recur in eval_comp
    assert len(got["eval_comp"]) < len(comp)
    picked = [iid[0], iid[7], comp[3]]                       # what the folder says, whatever the params derive
    f.write_text("".join(json.dumps(m) + "\n" for m in picked))
    got, pp = eval_prompts(params, tmp_path), {m["prompt"] for m in picked}
    assert got["eval_iid"] == [m for m in iid if m["prompt"] not in pp] and len(got["eval_iid"]) <= len(iid) - 2
    assert got["eval_comp"] == [m for m in comp if m["prompt"] not in pp] and len(got["eval_comp"]) < len(comp)


def test_cli_geneval_drops_reserved_prompts(ev, tmp_path, capsys):
    """`sana15 geneval --reserved <file>` (and by default the --judge-path folder's training_prompts.jsonl) never
    scores a reserved prompt."""
    from flows.cli import main
    from sana_core.geneval.layout import iter_layout, read_metadata_jsonl
    root, _ = ev
    iid = read_metadata_jsonl(root / "data/shapes/eval_iid.jsonl")[:5]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(m) + "\n" for m in iid))
    judge_dir = tmp_path / "judge"
    judge_dir.mkdir()
    (judge_dir / "training_prompts.jsonl").write_text("".join(json.dumps(m) + "\n" for m in iid[1:3]))
    base = ["geneval", "--model", str(root / "models/pretrain_base"), "--n", "1", "--k", "1", "--prompts", str(prompts),
            "--judge", "oracle"]
    for i, extra in enumerate((["--reserved", str(judge_dir / "training_prompts.jsonl")], ["--judge-path", str(judge_dir)])):
        out = tmp_path / f"out{i}"
        assert main(base + extra + ["--out", str(out)]) == 0
        assert "dropped 2 of 5 prompts" in capsys.readouterr().out
        assert [m["prompt"] for _, m, _ in iter_layout(out)] == [iid[i]["prompt"] for i in (0, 3, 4)]
