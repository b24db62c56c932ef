"""The best-of-N chain end to end — judge score → knockout → kept candidates → GenEval score — with candidates whose
correctness is known (renders of the prompt or of a wrong-colour near miss, drawn per (prompt, seed)).

A judge that returns the evaluator's answer must select perfectly; one that returns the negated answer must
anti-select (both within the paper's bracket: one correct image per pair that holds one, at N = 2k); one that says "no" to everything but ranks the correct candidates higher must still select perfectly
(the both-no rule); a constant judge keeps the first of every pair. Issue 17 traced the tiny judge's "anti-selection"
through this chain (docs/results.md §9)."""
import numpy as np
import pytest
import torch

from flows.stages.geneval import score_selection
from sana_core.geneval.prompts import meta_colors, scene_for_metadata
from sana_core.geneval.render import render
from sana_core.geneval.score import score_folder
from sana_core.geneval.world import COLORS
from sana_core.judges import build_judge
from sana_core.judges.base import Judge
from sana_core.scaling import generate_and_judge, select

N, K = 8, 4
SEEDS = list(range(100, 100 + N))
METAS = [meta_colors(s, c) for s, c in [("star", "blue"), ("ring", "red"), ("circle", "green"), ("square", "yellow"),
                                         ("triangle", "purple")]]


def _near_miss(meta):
    wrong = next(c for c in COLORS if c != meta["include"][0]["color"])
    return meta_colors(meta["include"][0]["class"], wrong)


class FakeSampler:
    """generate_grid like sample.Sampler: candidate (prompt i, seed s) is correct iff TRUTH[i, j] (about half), drawn
    in batches of an odd size so candidates of one prompt straddle batch boundaries."""

    class config:
        batch_size = 3

    truth = np.random.default_rng(5).random((len(METAS), N)) < 0.45

    def generate_grid(self, prompts, seeds):
        out = []
        for p in prompts:
            i = next(a for a, m in enumerate(METAS) if m["prompt"] == p)
            out.append([render(scene_for_metadata(METAS[i] if self.truth[i, SEEDS.index(s)] else _near_miss(METAS[i]),
                                                  np.random.default_rng(s))) for s in seeds])
        return np.asarray(out, np.uint8)


class Transformed(Judge):
    """The oracle's verdicts passed through `fn(yes, p_yes) → (yes, p_yes)`; p_no = 1 − p_yes."""

    def __init__(self, fn):
        self.oracle, self.fn = build_judge("oracle"), fn

    def decide(self, prompt, images, metadata=None):
        yes, p, _ = self.oracle.decide(prompt, images, metadata)
        yes, p = self.fn(yes, p)
        return yes, p, 1.0 - p


JUDGES = {
    "oracle": lambda y, p: (y, p),
    "negated": lambda y, p: (~y, 1.0 - p),
    "no_to_everything_ranking_right": lambda y, p: (torch.zeros_like(y), 0.01 + 0.02 * y.float()),
    "constant": lambda y, p: (torch.zeros_like(y), torch.full_like(p, 0.05)),
}


@pytest.fixture(scope="module")
def chain():
    sampler = FakeSampler()
    imgs, verdicts = generate_and_judge(sampler, METAS, SEEDS, {n: Transformed(f) for n, f in JUDGES.items()})
    labels = np.array([[v[s].yes for s in SEEDS] for v in verdicts["oracle"]])
    return imgs, verdicts, labels


def test_candidates_and_verdicts_stay_aligned(chain):
    """The oracle's labels of the candidates are exactly the generator's truth table: no prompt/seed misalignment."""
    _, _, labels = chain
    assert (labels == FakeSampler.truth).all()
    assert 0 < labels.sum() < labels.size and any(0 < r.sum() < K for r in labels)


@pytest.mark.parametrize("name", list(JUDGES))
def test_knockout_keeps_what_the_judge_ranks_first(chain, name, tmp_path):
    imgs, verdicts, labels = chain
    sel = [select(SEEDS, verdicts[name][p], N, K) for p in range(len(METAS))]
    kept = np.array([labels[p, sel[p]].sum() for p in range(len(METAS))])
    # N = 8, k = 4: one round of matches (0, 1), (2, 3), … between sorted seeds (the paper's bracket), so even a
    # perfect judge keeps a correct image only from the pairs that hold one
    pairs = labels.reshape(len(METAS), K, N // K)
    best, worst = pairs.any(-1).sum(-1), pairs.all(-1).sum(-1)
    if name in ("oracle", "no_to_everything_ranking_right"):
        assert (kept == best).all()
    elif name == "negated":
        assert (kept == worst).all() and (worst < best).any()
    else:                                        # exact ties: the earlier sorted seed of every pair
        assert all(s == [0, 2, 4, 6] for s in sel)
    # and the written, re-scored GenEval folder agrees with the in-memory labels
    summ = score_selection(tmp_path / name, METAS, imgs, SEEDS, sel, labels, N, K,
                           lambda f, **kw: score_folder(f, None, **kw))
    assert summ["overall"] == pytest.approx(kept.sum() / (K * len(METAS)))
    assert summ["candidates_correct"] == pytest.approx(labels.mean())


def test_tiny_judge_no_score_keeps_the_ranking_at_extreme_logits():
    """p_no of the tiny judge is sigmoid(−logit), not 1 − sigmoid(logit): in float32 the latter is exactly 1.0 for
    every logit below ≈ −17, so a confident-"no" judge's candidates would all tie and the knockout would keep the
    first of each pair whatever the judge saw."""
    from sana_core.judges.tiny import TinyJudge, TinyJudgeConfig, TinyJudgeNet
    judge = TinyJudge(TinyJudgeNet(TinyJudgeConfig(image_size=64)))
    logits = torch.tensor([-18.0, -20.0, -25.0, -30.0])
    judge.logits = lambda prompts, images: logits
    yes, p_yes, p_no = judge.decide(METAS[0]["prompt"], np.zeros((4, 64, 64, 3), np.uint8))
    assert not yes.any()
    assert bool((p_no[1:] > p_no[:-1]).all()), p_no
    assert torch.allclose(p_yes + p_no, torch.ones(4, dtype=p_no.dtype))


def test_within_prompt_auc_sees_what_the_pooled_auc_hides():
    """A judge that scores each prompt's prior (its share of correct candidates) and ranks the candidates of a
    prompt backwards has a high pooled AUC and a within-prompt AUC of 0 — the knockout anti-selects with it."""
    from sana_core.judges.metrics import auc, within_group_auc
    labels = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0]] * 5)
    prior = labels.mean(1, keepdims=True)
    score = prior + 0.01 * (1 - labels)                       # within a prompt: wrong candidates a bit higher
    groups = np.repeat(np.arange(len(labels)), labels.shape[1])
    assert auc(score.ravel(), labels.ravel()) > 0.55                  # 0.571: above chance, pooled
    assert within_group_auc(score.ravel(), labels.ravel(), groups) == (0.0, 20)
    assert within_group_auc(-score.ravel(), labels.ravel(), groups)[0] == 1.0


def test_contrast_set_is_balanced_and_labelled_by_the_evaluator():
    """Renders of the prompt (yes) and of one-slot near misses (mostly no), in the tiny 4 × 4 world; every label is
    the evaluator's verdict against the original prompt."""
    from flows import params as P
    from flows.stages._common import world_cfg
    from sana_core.geneval.dataset import resolve_data_cfg
    from sana_core.geneval.score import score_image
    from sana_core.geneval.splits import eval_iid
    from sana_core.judges.contrast import contrast_set, near_misses
    w = resolve_data_cfg(world_cfg(P.load_profile("tiny")))[1]
    metas = {m["tag"]: m for m in eval_iid(w)}                    # one prompt per tag
    pos = metas["position"]
    nm = [m["prompt"] for m in near_misses(pos, w)]
    a, rel, b = pos["include"][1]["class"], pos["include"][1]["position"][0], pos["include"][0]["class"]
    assert f"a photo of {'an' if b[0] in 'aeiou' else 'a'} {b} {rel} {'an' if a[0] in 'aeiou' else 'a'} {a}" in nm
    assert f"a photo of a {a}" in nm and pos["prompt"] not in nm
    imgs, rows, labels = contrast_set(list(metas.values()), w, 4, 0)
    assert imgs.shape == (24, 64, 64, 3) and [r["prompt"] for r in rows[:4]] == [list(metas.values())[0]["prompt"]] * 4
    lab = labels.reshape(6, 4)
    assert lab[:, :2].all() and lab[:, 2:].mean() <= 0.25
    assert all(score_image(i, r, w)[0] == l for i, r, l in zip(imgs, rows, labels))
    # degraded = 1: every near-miss slot is the prompt's own scene drawn badly (too small / merged copy / one too
    # many), still labelled by the evaluator, with no scene for the dense loss; degraded = 0 leaves the set unchanged
    sc0, sc1 = [], []
    same = contrast_set(list(metas.values()), w, 4, 0, scenes=sc0, degraded=0.0)
    assert all(np.array_equal(x, y) for x, y in zip(same, (imgs, rows, labels)) if isinstance(x, np.ndarray))
    d_imgs, d_rows, d_lab = contrast_set(list(metas.values()), w, 4, 0, scenes=sc1, degraded=1.0)
    assert [r["prompt"] for r in d_rows] == [r["prompt"] for r in rows]
    assert all(s is not None for s in sc0) and [s is None for s in sc1] == [j >= 2 for _ in range(6) for j in range(4)]
    assert np.array_equal(d_imgs[:2], imgs[:2]) and not np.array_equal(d_imgs[2:4], imgs[2:4])
    assert d_lab.reshape(6, 4)[:, 2:].mean() <= 0.5
    assert all(score_image(i, r, w)[0] == l for i, r, l in zip(d_imgs, d_rows, d_lab))


def test_dense_targets_mark_the_cells_of_the_queried_objects():
    """cell_masks: the 8 × 8 cells whose centre lies in an object's box, for the matching (shape, colour or any)
    query only; the flip augmentation flips the masks with the images."""
    from sana_core.geneval.render import Obj
    from sana_core.geneval.world import SHAPES
    from sana_core.judges.tiny import _random_flip, _text_tensors, cell_masks, parse_prompt
    scene = [Obj("circle", "red", 12.0, 12.0, 16.0), Obj("square", "blue", 48.0, 40.0, 20.0)]
    q = np.array([[[SHAPES.index("circle"), COLORS.index("red")], [SHAPES.index("square"), len(COLORS)],
                   [SHAPES.index("circle"), COLORS.index("blue")]]])
    m = cell_masks([scene, None], np.concatenate([q, q]), 64, 8)
    assert m.shape == (2, 3, 8, 8) and m[1].sum() == 0 and m[0, 2].sum() == 0
    assert set(zip(*np.nonzero(m[0, 0]))) == {(r, c) for r in range(3) for c in range(3)}  # centres 4, 12, 20 ∈ [4, 20]
    assert set(zip(*np.nonzero(m[0, 1]))) == {(r, c) for r in (4, 5) for c in (5, 6)}   # x ∈ [38, 58], y ∈ [30, 50]
    x = torch.rand(2, 3, 64, 64)
    text = _text_tensors([parse_prompt("a photo of a red circle")] * 2)
    masks = torch.from_numpy(m)
    for seed in range(4):
        xf, _, mf = _random_flip(x, text, torch.Generator().manual_seed(seed), masks)
        for b in range(2):
            flipped = bool((xf[b] != x[b]).any())
            assert torch.equal(mf[b], masks[b].flip(-1) if flipped else masks[b])


def test_dense_training_needs_scenes_and_leaves_the_plain_path_unchanged():
    from sana_core.judges.contrast import contrast_set
    from sana_core.judges.tiny import train_tiny_judge
    from sana_core.geneval.world import world_config
    w = world_config(64)
    scenes: list = []
    imgs, rows, labels = contrast_set(METAS[:3], w, 4, 0, scenes=scenes)
    cfg = {"epochs": 2, "batch_size": 4, "val_frac": 0.0, "seed": 0}
    with pytest.raises(ValueError, match="dense"):
        train_tiny_judge(imgs, rows, labels, {**cfg, "dense": 1.0})
    a, _ = train_tiny_judge(imgs, rows, labels, cfg)
    b, _ = train_tiny_judge(imgs, rows, labels, cfg, scenes=scenes)            # dense = 0: scenes ignored
    c, mc = train_tiny_judge(imgs, rows, labels, {**cfg, "dense": 10.0}, scenes=scenes)
    sa, sb, sc = (j.net.state_dict() for j in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert mc["dense"] == 10.0 and mc["flops_per_image"] == a.flops_per_image()


def test_centre_masks_count_the_queried_objects_and_the_centre_judge_trains(tmp_path):
    """centre_masks: one cell per matching object (its centre's cell), so a map's sum is the object count; a judge
    with `centres` trains on them (dense), has the extra weights and the same FLOPs order, and round-trips."""
    from sana_core.geneval.render import Obj
    from sana_core.geneval.world import SHAPES, world_config
    from sana_core.judges.contrast import contrast_set
    from sana_core.judges.tiny import TinyJudge, centre_masks, train_tiny_judge
    scene = [Obj("circle", "red", 12.0, 12.0, 16.0), Obj("circle", "blue", 40.0, 52.0, 18.0),
             Obj("square", "blue", 63.9, 30.0, 20.0)]
    q = np.array([[[SHAPES.index("circle"), len(COLORS)], [SHAPES.index("circle"), COLORS.index("blue")],
                   [SHAPES.index("square"), COLORS.index("red")], [SHAPES.index("square"), len(COLORS)]]])
    m = centre_masks([scene, None], np.concatenate([q, q]), 64, 8)
    assert m.shape == (2, 4, 8, 8) and m[1].sum() == 0
    assert m[0].sum((1, 2)).tolist() == [2, 1, 0, 1]
    assert set(zip(*np.nonzero(m[0, 0]))) == {(1, 1), (6, 5)} and set(zip(*np.nonzero(m[0, 3]))) == {(3, 7)}
    scenes: list = []
    imgs, rows, labels = contrast_set(METAS[:3], world_config(64), 4, 0, scenes=scenes)
    cfg = {"epochs": 2, "batch_size": 4, "val_frac": 0.0, "seed": 0, "dense": 10.0}
    plain, _ = train_tiny_judge(imgs, rows, labels, cfg, scenes=scenes)
    cen, mc = train_tiny_judge(imgs, rows, labels, {**cfg, "centres": True}, scenes=scenes)
    extra = set(cen.net.state_dict()) - set(plain.net.state_dict())
    assert extra == {"shape_emb_c.weight", "color_emb_c.weight", "bias_c"}
    assert plain.flops_per_image() < mc["flops_per_image"] < 1.1 * plain.flops_per_image()
    prompt = rows[0]["prompt"]
    assert torch.equal(TinyJudge.load(cen.save(tmp_path / "j")).logits(prompt, imgs),
                       cen.logits(prompt, imgs))
