"""Knockout tournament, byes, FLOP accounting and best-of-N (sana_core/scaling.py)."""
import random

import numpy as np
import pytest
import torch

from sana_core.scaling import (Verdict, best_of_n, flops_table, generation_flops, judge_flops, knockout, match,
                               n_matches, players, sampler_flops_per_image, tournament, verdicts_from_decide)

Y = lambda p: Verdict(True, p, 1 - p)            # noqa: E731
N_ = lambda q: Verdict(False, 1 - q, q)           # noqa: E731  (q = p_no)


# ------------------------------------------------------------------------------------------------------------ match rules
def test_yes_beats_no_even_with_lower_scores():
    assert match(0, 1, Verdict(False, 0.49, 0.01), Verdict(True, 0.01, 0.9)) == (1, "yes beats no")
    assert match(0, 1, Verdict(True, 0.01, 0.9), Verdict(False, 0.49, 0.01))[0] == 0


def test_both_yes_higher_yes_score_wins():
    assert match(0, 1, Y(0.7), Y(0.9)) == (1, "both yes: higher p_yes")
    assert match(0, 1, Y(0.9), Y(0.7))[0] == 0


def test_both_no_lower_no_score_wins():
    assert match(0, 1, N_(0.8), N_(0.6)) == (1, "both no: lower p_no")
    assert match(0, 1, N_(0.6), N_(0.8))[0] == 0
    # the no-score decides, not the yes-score (VLM: p_yes + p_no < 1)
    assert match(0, 1, Verdict(False, 0.3, 0.5), Verdict(False, 0.1, 0.4))[0] == 1


def test_exact_tie_goes_to_lower_sorted_id():
    assert match(3, 7, Y(0.5), Y(0.5)) == (3, "tie: earlier sorted id")
    assert knockout([7, 3], {3: Y(0.5), 7: Y(0.5)}, k=1) == [3]
    assert knockout(["b", "a"], {"a": N_(0.5), "b": N_(0.5)}, k=1) == ["a"]


# -------------------------------------------------------------------------------------------------------- bracket shape
def test_power_of_two_bracket_pairs_sorted_neighbours():
    dec = {i: Y(i / 100) for i in range(16)}                   # higher id = better
    t = tournament(list(reversed(range(16))), dec, k=4)
    assert [(a, b) for a, b, _, _ in t.rounds[0]] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13),
                                                       (14, 15)]
    assert [(a, b) for a, b, _, _ in t.rounds[1]] == [(1, 3), (5, 7), (9, 11), (13, 15)]
    assert t.winners == [3, 7, 11, 15] and t.n_matches == 12 == n_matches(16, 4)
    assert t.official_judge_calls == 24 and len(t.judged) == 16 == players(16, 4)


@pytest.mark.parametrize("n,k,matches,byes,survivors", [
    (3, 1, [[(0, 1)], [(0, 2)]], [[2], []], 1),
    (3, 2, [[(0, 1)]], [[2]], 2),
    (5, 4, [[(0, 1)]], [[2, 3, 4]], 4),
    (6, 4, [[(0, 1), (2, 3)]], [[4, 5]], 4),
    (7, 4, [[(0, 1), (2, 3), (4, 5)]], [[6]], 4),
    (7, 2, [[(0, 1), (2, 3), (4, 5)], [(0, 2), (4, 6)]], [[6], []], 2),
])
def test_byes_for_non_power_of_two(n, k, matches, byes, survivors):
    dec = {i: N_(0.5) for i in range(n)}                       # all ties → earlier id wins every match
    t = tournament(range(n), dec, k)
    assert [[(a, b) for a, b, _, _ in r] for r in t.rounds] == matches
    assert t.byes == byes
    assert len(t.winners) == survivors == min(k, n)
    assert t.n_matches == n_matches(n, k) == n - survivors
    assert len(t.judged) == players(n, k)


def test_bye_candidate_can_win_later():
    # n=5, k=2: round 1 plays (0,1),(2,3), 4 has a bye; round 2 plays (w01, w23), 4 advances again -> 4 survives
    dec = {0: N_(0.9), 1: N_(0.8), 2: Y(0.6), 3: N_(0.1), 4: N_(0.99)}
    t = tournament(range(5), dec, 2)
    assert t.winners == [2, 4] and t.byes == [[4], [4]]


@pytest.mark.parametrize("n,k", [(1, 4), (3, 4), (4, 4), (2, 8)])
def test_n_le_k_returns_all_without_judging(n, k):
    t = tournament(range(n), {}, k)                            # no decisions needed
    assert t.winners == list(range(n)) and t.n_matches == 0 and players(n, k) == 0


def test_players_counts():
    assert [players(n, 4) for n in (4, 5, 6, 7, 8, 9, 16, 2048)] == [0, 2, 4, 6, 8, 8, 16, 2048]
    assert players(3, 1) == 3 and players(9, 4) == 8           # n=9: 8 play, 1 bye; the 5 survivors -> 1 more match


# ---------------------------------------------------------------------------------------------- determinism, properties
def test_winners_independent_of_input_order():
    rng = random.Random(0)
    for n in (5, 8, 13, 32):
        dec = {f"{i:05d}": Verdict(rng.random() < 0.4, round(rng.random(), 2), round(rng.random(), 2))
               for i in range(n)}                              # rounded scores -> exact ties happen
        ref = knockout(list(dec), dec, 4)
        for _ in range(5):
            ids = list(dec)
            rng.shuffle(ids)
            assert knockout(ids, {i: dec[i] for i in ids}, 4) == ref
            assert knockout(ids, [dec[i] for i in ids], 4) == ref     # aligned sequence form


def test_dominant_candidates_always_survive():
    rng = random.Random(1)
    for _ in range(50):
        n, k = rng.randint(2, 40), rng.randint(1, 5)
        dec = {i: N_(rng.random()) for i in range(n)}
        star = rng.randrange(n)
        dec[star] = Y(0.2)                       # the only "yes" never loses
        assert star in knockout(range(n), dec, k)
        # several yes: the one with the strictly highest p_yes never loses
        yes = rng.sample(range(n), min(n, 3))
        for j, i in enumerate(yes):
            dec[i] = Y(0.5 + j / 10)
        assert yes[-1] in knockout(range(n), dec, k)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unique"):
        knockout([1, 1, 2], {1: Y(1), 2: Y(1)}, 1)
    with pytest.raises(KeyError, match="candidate 5"):
        knockout(range(6), {i: Y(0.1) for i in range(5)}, 1)
    with pytest.raises(ValueError, match="knockout.k"):
        knockout(range(3), {}, 0)
    with pytest.raises(ValueError, match="2 decisions for 3"):
        knockout([0, 1, 2], [Y(1), Y(1)], 1)


def test_verdicts_from_decide_alignment():
    v = verdicts_from_decide([5, 2], (torch.tensor([True, False]), torch.tensor([0.9, 0.2]), torch.tensor([0.1, 0.7])))
    assert v[5] == Verdict(True, pytest.approx(0.9), pytest.approx(0.1)) and v[2].yes is False
    with pytest.raises(ValueError, match="3 candidates"):
        verdicts_from_decide([1, 2, 3], (torch.tensor([True]),) * 3)


# ------------------------------------------------------------------------------------------------------ FLOP accounting
def test_flop_accounting_arithmetic():
    assert sampler_flops_per_image(1e6, steps=20, cfg=True) == 40e6
    assert sampler_flops_per_image(1e6, steps=20, cfg=False, decode_flops=5.0) == 20e6 + 5
    assert generation_flops(8, 3.0) == 24.0
    assert judge_flops(8, 2.0, 4, "ours") == 16.0 and judge_flops(8, 2.0, 4, "official") == 2 * 4 * 2.0
    assert judge_flops(4, 2.0, 4, "ours") == 0 == judge_flops(4, 2.0, 4, "official")
    assert judge_flops(6, 1.0, 4, "ours") == 4 and judge_flops(6, 1.0, 4, "official") == 4
    with pytest.raises(ValueError, match="scheme"):
        judge_flops(8, 1.0, 4, "paper")
    # the paper's setting: best 4 of 2048, 4088 judge calls; NVILA 4,518 GFLOPs vs SANA 49,140 GFLOPs per image
    row = flops_table([2048], 49140e9, 4518e9, k=4)[0]
    assert row["matches"] == 2044 and row["judge_calls_official"] == 4088 and row["judge_calls"] == 2048
    assert row["judge_ratio_official"] == pytest.approx(4088 * 4518 / (2048 * 49140))
    assert row["judge_ratio"] == pytest.approx(4518 / 49140)
    rows = flops_table([1, 4, 8, 32], 100.0, 3.0, k=4)
    assert [r["judge_flops"] for r in rows] == [0, 0, 24.0, 96.0]
    assert [r["judge_flops_official"] for r in rows] == [0, 0, 24.0, 168.0]
    assert all(r["total_flops"] == r["generation_flops"] + r["judge_flops"] for r in rows)


# ---------------------------------------------------------------------------------------------------------- best-of-N
class FakeGen:
    """Image pixels encode (prompt index, seed); records the batches it was called with."""

    def __init__(self, prompts):
        self.index = {p: i for i, p in enumerate(prompts)}
        self.calls = []

    def __call__(self, prompts, seeds):
        self.calls.append(len(prompts))
        out = np.zeros((len(prompts), 8, 8, 3), np.uint8)
        for j, (p, s) in enumerate(zip(prompts, seeds)):
            out[j, ..., 0], out[j, ..., 1] = self.index[p], s
        return out


class FakeJudge:
    """yes iff the seed is in good[prompt]; p_yes grows with the seed; counts images judged."""

    def __init__(self, good):
        self.good, self.judged = good, 0

    def decide(self, prompt, images, metadata=None):
        seeds = torch.as_tensor(np.asarray(images)[:, 0, 0, 1].astype(np.int64))
        self.judged += len(seeds)
        yes = torch.tensor([int(s) in self.good[prompt] for s in seeds])
        p = 0.5 + seeds.float() / 1000
        p_yes = torch.where(yes, p, 1 - p)
        return yes, p_yes, 1 - p_yes


def test_best_of_n_selects_expected_candidates():
    prompts = ["a photo of a circle", "a photo of a red square", "a photo of two stars"]
    good = {prompts[0]: {3, 6}, prompts[1]: set(), prompts[2]: {0, 1, 2, 3, 4, 5, 6, 7}}
    gen, judge = FakeGen(prompts), FakeJudge(good)
    res = best_of_n(gen, judge, prompts, n=8, k=2, batch_size=5, gen_flops_per_image=100.0, judge_flops_per_image=2.0)
    # prompt 0: the two yes images sit in different halves -> both survive
    # prompt 1: all "no", p_no = 0.5 + seed/1000: lower p_no = lower seed -> 0,2,4,6 then 0,4
    # prompt 2: all "yes", p_yes = 0.5 + seed/1000: higher seed wins -> 1,3,5,7 then 3,7
    assert res.selected == [[3, 6], [0, 4], [3, 7]]
    assert res.images.shape == (3, 2, 8, 8, 3)
    assert res.images[:, :, 0, 0, 1].tolist() == res.selected           # the images are the selected seeds'
    assert res.images[:, :, 0, 0, 0].tolist() == [[0, 0], [1, 1], [2, 2]]
    assert gen.calls == [5, 5, 5, 5, 4]                                  # 24 (prompt, seed) pairs in chunks of 5
    assert judge.judged == 24 == res.stats["judge_calls"]               # each candidate judged once
    assert res.stats["judge_calls_official"] == 3 * 2 * 6 and res.stats["matches"] == 18
    assert res.stats["per_prompt_generation_flops"] == 800.0 and res.stats["per_prompt_judge_flops"] == 16.0
    assert res.stats["per_prompt_judge_flops_official"] == 24.0


def test_best_of_n_seed_order_and_byes():
    prompts = ["a photo of a circle"]
    judge = FakeJudge({prompts[0]: {11}})
    seeds = [14, 10, 12, 11, 13]                                        # n=5, k=4: only sorted 10 vs 11 plays
    res = best_of_n(FakeGen(prompts), judge, prompts, n=5, k=4, seeds=seeds)
    assert res.selected == [[11, 12, 13, 14]] and judge.judged == 2 == res.stats["judge_calls"]
    res2 = best_of_n(FakeGen(prompts), FakeJudge({prompts[0]: {11}}), prompts, n=5, k=4, seeds=sorted(seeds))
    assert res2.selected == res.selected and np.array_equal(res2.images, res.images)
    # n <= k: everything, no judging
    j = FakeJudge({prompts[0]: set()})
    assert best_of_n(FakeGen(prompts), j, prompts, n=3, k=4).selected == [[0, 1, 2]] and j.judged == 0


def test_best_of_n_bad_inputs():
    p = ["a photo of a circle"]
    with pytest.raises(ValueError, match="seeds"):
        best_of_n(FakeGen(p), FakeJudge({p[0]: set()}), p, n=3, seeds=[1, 1, 2])
    with pytest.raises(ValueError, match="metadata"):
        best_of_n(FakeGen(p), FakeJudge({p[0]: set()}), p, metadata=[{}, {}], n=3)
    with pytest.raises(ValueError, match="generate_fn returned"):
        best_of_n(lambda ps, ss: np.zeros((len(ps), 8, 8), np.uint8), FakeJudge({p[0]: set()}), p, n=3)
