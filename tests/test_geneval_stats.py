"""Bootstrap intervals over prompts (sana_core/geneval/stats.py) against cases computable by hand: constant scores,
identical and clearly different variants, the binomial width, stratification, pairing, and a slow reference loop."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sana_core.geneval.evaluate import summary
from sana_core.geneval.stats import (PromptScores, bootstrap_overall, draws, paired_difference, prompt_scores,
                                     read_results, verdict, Interval)


def _scores(tags, correct, images=1) -> PromptScores:
    n = len(tags)
    return PromptScores(tuple(f"{i:05d}" for i in range(n)), tuple(f"p{i}" for i in range(n)), np.array(tags),
                        np.asarray(correct, float), np.full(n, float(images)))


def _rows(tags, correct_per_image):
    return [{"filename": f"/x/{p:05d}/samples/{k:05d}.png", "tag": t, "prompt": f"{t} {p}", "correct": bool(c)}
            for p, (t, cs) in enumerate(zip(tags, correct_per_image)) for k, c in enumerate(cs)]


def test_prompt_scores_from_results_rows_give_genevals_overall(tmp_path):
    import pandas as pd
    rng = np.random.default_rng(1)
    tags = ["single_object"] * 3 + ["counting"] * 5 + ["position"] * 4
    cor = rng.random((12, 4)) < 0.4
    rows = _rows(tags, cor)
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))   # any row order
    s = read_results(tmp_path / "results.jsonl")
    assert s.keys == tuple(f"{i:05d}" for i in range(12)) and s.tags.tolist() == tags
    assert s.correct.tolist() == cor.sum(1).tolist() and s.images.tolist() == [4] * 12
    assert s.overall == pytest.approx(summary(pd.DataFrame(rows))["overall"])
    with pytest.raises(ValueError, match="no 'correct'"):
        prompt_scores([{"filename": "a/0/samples/0.png", "tag": "colors", "prompt": "x"}])


def test_constant_scores_give_zero_width_intervals():
    for correct in (np.ones(30), np.zeros(30)):
        iv = bootstrap_overall(_scores(["colors"] * 30, correct))
        assert iv.lo == iv.hi == iv.value == correct[0]
    # stratified: task A always right, task B always wrong → every resample keeps both tasks' sizes → exactly 0.5
    # (an unstratified bootstrap over all 40 prompts would vary the mix; this one must not)
    iv = bootstrap_overall(_scores(["colors"] * 10 + ["counting"] * 30, [1] * 10 + [0] * 30))
    assert iv.value == iv.lo == iv.hi == 0.5
    assert str(iv) == "0.500 [0.500, 0.500]"


def test_identical_variants_make_no_difference_and_a_clear_gap_has_its_verdict():
    rng = np.random.default_rng(0)
    tags = np.repeat(["colors", "counting", "position"], 40)
    a = _scores(tags, rng.integers(0, 5, 120), images=4)
    d, v = paired_difference(a, a)
    assert (d.value, d.lo, d.hi, v) == (0.0, 0.0, 0.0, "no difference")
    good, bad = _scores(tags, np.full(120, 3.0), images=4), _scores(tags, rng.integers(0, 2, 120), images=4)
    d, v = paired_difference(good, bad)
    assert v == "A better" and d.lo > 0.3 and d.value == pytest.approx(0.75 - bad.overall)
    assert paired_difference(bad, good)[1] == "B better"
    assert verdict(Interval(0.1, 0.02, 0.2), "sft", "pretrain_grown") == "sft better"
    # two independent draws of the same model (p = 0.5): the difference is noise
    x, y = _scores(tags, rng.random(120) < 0.5), _scores(tags, rng.random(120) < 0.5)
    d, v = paired_difference(x, y)
    assert v == "no difference" and d.lo < 0 < d.hi


def test_pairing_sees_a_small_consistent_gap_that_two_separate_intervals_do_not():
    """B = A with 15 of A's 200 correct prompts turned wrong: separately the two intervals overlap widely, the paired
    difference (shared prompts cancel) is 0.075 with an interval above 0."""
    rng = np.random.default_rng(3)
    tags = np.repeat(["two_object", "color_attr"], 100)
    ca = (rng.random(200) < 0.5).astype(float)
    cb = ca.copy()
    cb[np.flatnonzero(ca)[rng.permutation(int(ca.sum()))[:15]]] = 0
    a, b = _scores(tags, ca), _scores(tags, cb)
    ia, ib = bootstrap_overall(a), bootstrap_overall(b)
    assert ia.lo < ib.hi                                          # separate intervals: overlap
    d, v = paired_difference(a, b)
    assert v == "A better" and d.value == pytest.approx(a.overall - b.overall) and 0 < d.lo < d.value < d.hi


def test_width_is_the_binomial_one_and_shrinks_like_one_over_sqrt_n():
    """One task, p = 0.5: the 95 % interval is ≈ ±1.96·sqrt(p(1 − p)/n); four times the prompts halve it."""
    tags = ["colors"] * 100
    s = _scores(tags, [1, 0] * 50)
    iv = bootstrap_overall(s, n_boot=4000)
    assert iv.hi - iv.lo == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 100), rel=0.1)
    s4 = _scores(tags * 4, [1, 0] * 200)
    iv4 = bootstrap_overall(s4, n_boot=4000)
    assert (iv.hi - iv.lo) / (iv4.hi - iv4.lo) == pytest.approx(2.0, rel=0.15)
    # two tasks of 100: var(mean of two) = (var_1 + var_2) / 4 → width / sqrt(2) of one task's
    two = _scores(["colors"] * 100 + ["counting"] * 100, [1, 0] * 100)
    iv2 = bootstrap_overall(two, n_boot=4000)
    assert iv2.hi - iv2.lo == pytest.approx((iv.hi - iv.lo) / np.sqrt(2), rel=0.15)


def test_vectorised_bootstrap_equals_a_slow_reference_loop():
    """The same draws, recomputed draw by draw, task by task, image by image."""
    rng = np.random.default_rng(5)
    tags = ["colors"] * 7 + ["position"] * 4 + ["counting"] * 9
    imgs = rng.integers(1, 5, 20).astype(float)
    s = PromptScores(tuple(range(20)), tuple(map(str, range(20))), np.array(tags),
                     np.floor(rng.random(20) * (imgs + 1)), imgs)
    idx = draws(s.tags, 50, seed=9)
    ref = []
    for b in range(50):
        accs = []
        for t_idx in idx:
            right = sum(s.correct[i] for i in t_idx[b])
            total = sum(s.images[i] for i in t_idx[b])
            accs.append(right / total)
            assert all(s.tags[i] == s.tags[t_idx[b][0]] for i in t_idx[b])      # drawn within its task
        ref.append(sum(accs) / len(accs))
    iv = bootstrap_overall(s, n_boot=50, seed=9)
    assert iv.lo == pytest.approx(np.percentile(ref, 2.5)) and iv.hi == pytest.approx(np.percentile(ref, 97.5))
    assert bootstrap_overall(s, n_boot=50, seed=9) == iv                        # fixed seed: reproducible


def test_paired_needs_the_same_prompts():
    a = _scores(["colors"] * 3, [1, 0, 1])
    b = PromptScores(a.keys, ("p0", "p1", "other"), a.tags, a.correct, a.images)
    with pytest.raises(ValueError, match="different prompts"):
        paired_difference(a, b)
