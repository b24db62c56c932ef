"""GenEval logic (evaluate.py), the rule-based detector (detect.py), folder scoring (score.py) and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sana_core.geneval import detect as D
from sana_core.geneval.evaluate import evaluate, group_by_class, relative_position, summary, task_counts
from sana_core.geneval.layout import write_prompt_folder
from sana_core.geneval.render import Obj, core_box, degrade, render
from sana_core.geneval.score import score_folder, score_image
from sana_core.geneval.shapes import coverage
from sana_core.geneval.world import COLORS, SHAPES, world_config


def det(shape, color, conf, box):
    return D.Detection(shape, color, conf, tuple(box))


# ------------------------------------------------------------------------------------------------ relative_position
def test_relative_position_doc_examples():
    A, B = [10, 10, 26, 26], [40, 40, 56, 56]
    assert relative_position(A, B) == {"left of", "above"}          # diagonal → two relations
    assert relative_position(B, A) == {"right of", "below"}
    # two 16-px boxes whose centres are 7 px apart: |o| = 7, margin 0.1·32 = 3.2, dx = 3.8/7 = 0.543 > 0.5
    assert relative_position([0, 0, 16, 16], [7, 0, 23, 16]) == {"left of"}
    # 6 px apart: dx = 2.8/6 = 0.467 → no relation
    assert relative_position([0, 0, 16, 16], [6, 0, 22, 16]) == set()
    assert relative_position([0, 0, 16, 16], [0, 7, 16, 23]) == {"above"}
    assert relative_position([0, 7, 16, 23], [0, 0, 16, 16]) == {"below"}


def test_relative_position_deadzone_normalisation_and_inputs():
    # identical centres → dead-zone; a purely vertical offset inside the margin → empty set
    assert relative_position([0, 0, 10, 10], [0, 0, 10, 10]) == set()
    assert relative_position([0, 0, 10, 10], [0, 1, 10, 11]) == set()
    # 60° cone: offset (10, 10) with tiny boxes → dx = dy = 0.707-ish − margin → both relations
    assert relative_position([0, 0, 1, 1], [10, 10, 11, 11]) == {"left of", "above"}
    # offset (20, 5), zero-size boxes: dx = −20/20.6 = −0.97, dy = −5/20.6 = −0.24 → left only
    assert relative_position([0, 0, 0, 0], [20, 5, 20, 5]) == {"left of"}
    # a GenEval row [x1, y1, x2, y2, score] and a Detection both work
    assert relative_position([10, 10, 26, 26, 0.99], det("circle", "red", 0.99, [40, 40, 56, 56])) == \
        {"left of", "above"}
    with pytest.raises(ValueError, match="4 numbers"):
        relative_position([1, 2, 3], [0, 0, 1, 1])


# ---------------------------------------------------------------------------------------------------------- evaluate
def meta_two(x, y):
    return {"tag": "two_object", "include": [{"class": x, "count": 1}, {"class": y, "count": 1}], "prompt": "p"}


def test_evaluate_count_reason_and_and_of_includes():
    d = {"circle": [det("circle", "red", 0.99, [0, 0, 10, 10])]}
    assert evaluate(d, meta_two("circle", "square")) == (False, "expected square>=1, found 0")
    d["square"] = [det("square", "blue", 0.95, [20, 0, 30, 10])]
    assert evaluate(d, meta_two("circle", "square")) == (True, "")
    # other classes are ignored
    d["star"] = [det("star", "red", 0.97, [40, 40, 50, 50])] * 3
    assert evaluate(d, meta_two("circle", "square"))[0]
    # both failures, newline-joined in include order
    ok, reason = evaluate({}, meta_two("circle", "square"))
    assert not ok and reason == "expected circle>=1, found 0\nexpected square>=1, found 0"


def test_evaluate_colour_uses_top_count_only():
    meta = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "p"}
    top_blue = {"circle": [det("circle", "blue", 0.99, [0, 0, 10, 10]), det("circle", "red", 0.95, [20, 0, 30, 10])]}
    ok, reason = evaluate(top_blue, meta)
    assert not ok and reason == "expected red circle>=1, found 0 red; and 1 blue"   # lower-ranked red does not rescue
    top_red = {"circle": top_blue["circle"][::-1]}
    assert evaluate(top_red, meta) == (True, "")
    cnt = {"tag": "counting", "include": [{"class": "star", "count": 2, "color": "green"}], "prompt": "p"}
    stars = [det("star", c, 0.99 - i / 100, [i * 12, 0, i * 12 + 10, 10]) for i, c in enumerate(["green", "pink",
                                                                                                "green"])]
    ok, reason = evaluate({"star": stars}, cnt)
    assert not ok and reason == "expected green star>=2, found 1 green; and 1 green, 1 pink"
    assert evaluate({"star": [stars[0], stars[2]]}, cnt)[0]
    with pytest.raises(ValueError, match="colour"):
        evaluate({"circle": [[0, 0, 10, 10, 0.99]]}, meta)


def test_evaluate_position_groups_and_no_target():
    meta = {"tag": "position", "include": [{"class": "square", "count": 1},
                                           {"class": "circle", "count": 1, "position": ["left of", 0]}],
            "prompt": "a photo of a circle left of a square"}
    sq = det("square", "red", 0.99, [40, 20, 56, 36])
    left = det("circle", "blue", 0.99, [4, 20, 20, 36])
    right = det("circle", "blue", 0.98, [60, 20, 63, 36])
    assert evaluate({"square": [sq], "circle": [left]}, meta) == (True, "")
    ok, reason = evaluate({"square": [sq], "circle": [right, left]}, meta)    # only the top circle is checked
    assert not ok and reason == "expected circle left of target, found right of target"
    ok, reason = evaluate({"circle": [left]}, meta)                         # group 0 failed → no target
    assert not ok and reason == "expected square>=1, found 0\nno target for circle to be left of"
    # diagonal layouts satisfy two relations; the requested one is enough
    diag = det("circle", "blue", 0.99, [20, 0, 36, 16])
    assert relative_position(diag, sq) == {"left of", "above"} and evaluate({"square": [sq], "circle": [diag]},
                                                                             meta)[0]
    # a colour failure skips the position check (GenEval: `if 'position' in req and matched`)
    meta_c = {"tag": "position", "include": [meta["include"][0], dict(meta["include"][1], color="red")],
              "prompt": "p"}
    ok, reason = evaluate({"square": [sq], "circle": [right]}, meta_c)
    assert not ok and reason.count("\n") == 0 and reason.startswith("expected red circle>=1")


def test_evaluate_exclude_makes_counting_exact():
    meta = {"tag": "counting", "include": [{"class": "heart", "count": 3}], "exclude": [{"class": "heart", "count": 4}],
            "prompt": "a photo of three hearts"}
    hearts = [det("heart", "red", 0.99, [i * 12, 0, i * 12 + 10, 10]) for i in range(5)]
    assert evaluate({"heart": hearts[:3]}, meta) == (True, "")
    assert evaluate({"heart": hearts[:2]}, meta) == (False, "expected heart>=3, found 2")
    assert evaluate({"heart": hearts[:4]}, meta) == (False, "expected heart<4, found 4")
    ok, reason = evaluate({"heart": hearts}, meta)
    assert not ok and reason == "expected heart<4, found 5"


def test_group_by_class_threshold_sort_cap():
    dets = [det("circle", "red", 0.5 + i / 100, [i, 0, i + 1, 1]) for i in range(40)]
    dets.append(det("square", "red", 0.93, [0, 0, 1, 1]))
    g = group_by_class(dets, threshold=0.6)
    assert set(g) == {"circle", "square"}
    confs = [d.conf for d in g["circle"]]
    assert len(confs) == 16 and confs == sorted(confs, reverse=True) and min(confs) > 0.6
    assert confs[0] == pytest.approx(0.89)
    assert "square" not in group_by_class(dets, threshold=0.93)          # strict >


# ----------------------------------------------------------------------------------------------------------- summary
def test_summary_sd15_readme_check_and_unequal_counts():
    scores = dict(single_object=0.97, two_object=0.38, counting=0.35, colors=0.76, position=0.04, color_attr=0.06)
    rows = []
    for i, (tag, s) in enumerate(scores.items()):
        n = 100 * (i + 1)                                  # unequal image counts: per-tag means, not pooled
        k = round(s * n)
        rows += [(tag, True)] * k + [(tag, False)] * (n - k)
    df = pd.DataFrame(rows, columns=["tag", "correct"])
    s = summary(df)
    assert s["overall"] == pytest.approx(0.42667, abs=5e-6) and f"{s['overall']:.2f}" == "0.43"
    for t, v in scores.items():
        assert s[t] == pytest.approx(v)
    assert s["n_images"] == len(df) == 2100
    assert df["correct"].mean() != pytest.approx(s["overall"], abs=1e-3)   # pooled accuracy is a different number
    assert task_counts(df)["color_attr"] == 600
    # tags absent → None and left out of the mean (GenEval averages the tags present)
    s2 = summary(df[df.tag.isin(["single_object", "counting"])])
    assert s2["overall"] == pytest.approx((0.97 + 0.35) / 2) and s2["position"] is None
    with pytest.raises(ValueError, match="unknown tag"):
        summary(pd.DataFrame({"tag": ["bogus"], "correct": [True]}))
    with pytest.raises(ValueError, match="empty"):
        summary(pd.DataFrame({"tag": [], "correct": []}))


# ---------------------------------------------------------------------------------------------------------- detector
def test_fast_coverage_matches_shapes_coverage():
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        diffs = []
        for _ in range(10):
            s = rng.uniform(12, 20)
            cx, cy = rng.uniform(12, 20, 2)
            a, b = coverage(shape, cx, cy, s, (32, 32)), D.fast_coverage(shape, cx, cy, s, (32, 32))
            diffs.append(np.abs(a - b).sum())
        if shape in D.RASTER_SHAPES:
            assert np.mean(diffs) < 0.3 and max(diffs) < 1.0, shape   # ≪ 1 px of area on a ~150 px shape
        else:
            assert max(diffs) == 0, shape                              # same formula, same sub-samples
    # a box partly outside the window
    for shape in SHAPES:
        a, b = coverage(shape, 2.0, 3.0, 12, (20, 20)), D.fast_coverage(shape, 2.0, 3.0, 12, (20, 20))
        assert np.abs(a - b).sum() < 0.5


def test_unmix_is_exact_on_antialiased_edges():
    img = render([Obj("circle", "orange", 31.3, 30.7, 17.0)], 64)
    alpha, label = D.unmix(img, COLORS)
    cov = coverage("circle", 31.3, 30.7, 17.0, 64)
    oi = COLORS.index("orange")
    edge = (cov > 0.3) & (cov < 0.999)
    assert np.abs(alpha[..., oi][edge] - cov[edge]).max() < 0.02          # rounding to uint8 only
    assert (label[cov >= 0.3] == oi).all() and (label[cov == 0] == D.BG_LABEL).all()


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_every_shape_detected_with_shape_colour_and_box(sigma):
    rng = np.random.default_rng(int(sigma * 10) + 1)
    w = world_config(64)
    for shape in SHAPES:
        for side, (cx, cy) in [(12.0, (9.3, 10.8)), (16.3, (40.2, 22.7)), (20.0, (50.1, 51.4))]:
            color = COLORS[rng.integers(len(COLORS))]
            o = Obj(shape, color, cx, cy, side)
            img = degrade(render([o], 64), rng, blur=sigma)
            dets = D.detect(img, world=w)
            assert len(dets) == 1, (shape, side, sigma, D.analyse(img, w))
            d = dets[0]
            assert (d.shape, d.color) == (shape, color) and d.conf > D.THRESHOLD
            if sigma == 0:
                assert list(d.box) == core_box(o, 64)          # box = mask2bbox of the α ≥ 0.5 core
                assert d.conf > 0.96
            else:                                                  # thin tips may leave the core under blur
                cb = core_box(o, 64)
                assert max(abs(a - b) for a, b in zip(d.box, cb)) <= 2
                assert abs(d.box[0] + d.box[2] - cb[0] - cb[2]) <= 2 and abs(d.box[1] + d.box[3] - cb[1] - cb[3]) <= 2


def test_background_drift_and_world_restriction():
    objs = [Obj("star", "yellow", 16, 16, 18), Obj("ring", "purple", 44, 44, 18)]
    img = render(objs, 64, bg=(110, 140, 120))                     # background drift: border median follows it
    got = {(d.shape, d.color) for d in D.detect(img)}
    assert got == {("star", "yellow"), ("ring", "purple")}
    small = world_config(64, shapes=("circle", "square", "triangle"), colors=("red", "blue"))
    img2 = render([Obj("star", "red", 16, 16, 18), Obj("circle", "blue", 44, 44, 16),
                   Obj("square", "yellow", 44, 14, 14)], 64)
    dets = D.analyse(img2, small)
    assert all(d.shape in small.shapes and d.color in small.colors for d in dets)
    assert ("circle", "blue") in {(d.shape, d.color) for d in D.detect(img2, world=small)}
    assert "star" not in {d.shape for d in D.detect(img2, world=small)}    # a star is no circle/square/triangle
    assert D.detect(np.full((64, 64, 3), 128, np.uint8)) == []
    with pytest.raises(ValueError, match="RGB"):
        D.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        D.detect(np.zeros((64, 64, 3), np.float32))


def test_touching_same_colour_objects_merge_and_are_not_counted():
    # geneval.md §6.6 known failure mode: two touching same-colour squares form one low-Dice component
    img = render([Obj("square", "red", 20, 32, 16), Obj("square", "red", 35.5, 32, 16)], 64)
    assert D.detect(img) == []
    apart = render([Obj("square", "red", 14, 32, 16), Obj("square", "red", 40, 32, 16)], 64)
    assert [d.shape for d in D.detect(apart)] == ["square", "square"]


# ---------------------------------------------------------------------------------------------------- score / folder
def _position_meta():
    return {"tag": "position", "include": [{"class": "square", "count": 1},
                                           {"class": "circle", "count": 1, "position": ["left of", 0]}],
            "prompt": "a photo of a circle left of a square"}


def test_score_image_details_and_counting_threshold(monkeypatch):
    img = render([Obj("circle", "blue", 14, 30, 16), Obj("square", "red", 46, 30, 16)], 64)
    ok, reason, details = score_image(img, _position_meta())
    assert ok and reason == "" and set(details) == {"circle", "square"}
    assert score_image(img, _position_meta(), world_config(64)) == (ok, reason, details)   # default world = 64 px
    row = details["circle"][0]
    assert len(row) == 5 and row[:4] == core_box(Obj("circle", "blue", 14, 30, 16), 64) and row[4] > D.THRESHOLD
    ok, reason, _ = score_image(img[:, ::-1].copy(), _position_meta())
    assert not ok and reason == "expected circle left of target, found right of target"
    # the counting tag uses COUNTING_THRESHOLD
    meta = {"tag": "counting", "include": [{"class": "circle", "count": 1}], "exclude": [{"class": "circle",
                                                                                           "count": 2}], "prompt": "p"}
    assert score_image(img, meta)[0]
    monkeypatch.setattr(D, "COUNTING_THRESHOLD", 0.9999)
    assert score_image(img, meta)[1] == "expected circle>=1, found 0"
    assert score_image(img, dict(meta, tag="single_object"))[0]


def _write_layout(root, n_bad=0):
    rng = np.random.default_rng(0)
    metas = [{"tag": "single_object", "include": [{"class": "heart", "count": 1}], "prompt": "a photo of a heart"},
             _position_meta(),
             {"tag": "counting", "include": [{"class": "cross", "count": 2}], "exclude": [{"class": "cross",
                                                                                            "count": 3}],
              "prompt": "a photo of two crosses"}]
    scenes = [[Obj("heart", "pink", 30, 30, 18)],
              [Obj("circle", "blue", 14, 30, 16), Obj("square", "red", 46, 30, 16)],
              [Obj("cross", "green", 16, 16, 16), Obj("cross", "black", 46, 46, 16)]]
    wrong = [[Obj("ring", "pink", 30, 30, 18)],
             [Obj("circle", "blue", 46, 30, 16), Obj("square", "red", 14, 30, 16)],
             [Obj("cross", "green", 16, 16, 16)]]
    for i, (m, sc, wr) in enumerate(zip(metas, scenes, wrong)):
        good = render(sc, 64)
        big = np.kron(good, np.ones((2, 2, 1), np.uint8))          # 128 px: BOX-resized back to exactly `good`
        write_prompt_folder(root, i, m, [good, big, render(wr, 64), degrade(good, rng, blur=1.0, noise=4.0)])
    return metas


def test_score_folder_writes_geneval_results(tmp_path):
    root = tmp_path / "imgs"
    _write_layout(root)
    (root / "notes").mkdir()                                        # non-digit folders are ignored
    df, summ = score_folder(root)
    assert len(df) == 12 and summ["n_images"] == 12
    # per prompt: good, upscaled good, wrong, degraded good → 3/4 correct in every task present
    assert summ["single_object"] == summ["position"] == summ["counting"] == pytest.approx(0.75)
    assert summ["overall"] == pytest.approx(0.75) and summ["colors"] is None
    lines = (root / "results.jsonl").read_text().splitlines()
    assert len(lines) == 12
    rec = json.loads(lines[2])
    assert list(rec) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert rec["correct"] is False and rec["reason"] == "expected heart>=1, found 0"
    assert json.loads(rec["metadata"])["prompt"] == "a photo of a heart"
    assert "ring" in json.loads(rec["details"])
    assert json.loads((root / "summary.json").read_text()) == summ


def test_score_folder_errors_before_writing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        score_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no prompt folders"):
        score_folder(tmp_path / "empty")
    root = tmp_path / "imgs"
    _write_layout(root)
    (root / "00001" / "metadata.jsonl").write_text('{"tag": "position", "include": [')
    with pytest.raises(ValueError, match=r"00001/metadata\.jsonl"):
        score_folder(root)
    assert not (root / "results.jsonl").exists() and not (root / "summary.json").exists()
    (root / "00001" / "metadata.jsonl").write_text(json.dumps(
        {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"}))
    with pytest.raises(ValueError, match=r"00001/metadata\.jsonl.*'dog'"):
        score_folder(root)
    (root / "00001" / "metadata.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="00001"):
        score_folder(root)
    assert not (root / "results.jsonl").exists()


def test_cli_geneval_score(tmp_path, capsys):
    from flows.cli import main

    root = tmp_path / "imgs"
    _write_layout(root)
    out = tmp_path / "out" / "summ.json"
    assert main(["geneval-score", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "position" in text and "0.7500" in text and "overall" in text
    assert json.loads(out.read_text())["n_images"] == 12 and (out.parent / "results.jsonl").is_file()
    assert main(["geneval-score", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
