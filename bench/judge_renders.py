"""Can the tiny judge, trained the way the judge stage trains it, rank the candidates of prompts it never saw? Trained
and measured on balanced render sets (`sana_core.judges.contrast`: the prompt and its near misses, labelled by the
evaluator) of the tiny 4 × 4 world, no model needed.

    .venv/bin/python bench/judge_renders.py [--lr 1e-3] [--steps 300] [--per-prompt 8] [--train-prompts 60]
        [--dense 0.0]

Prompts: the tiny world's eval_iid (153), a seeded permutation split into --train-prompts for training and the rest
held out. Renders get σ = 1 px blur + N(0, 4/255) noise. Training: `TinyJudge.fit` (batch 64, seed 0, 1 thread) as
stage judge; `--dense W` > 0 instead trains the same network with an auxiliary dense loss (weight W): for every image,
the attention logits a = ⟨F, q⟩ of its prompt's queries (E_shape + E_colour) and of one random (shape, colour) query
are pushed by BCE towards the 8 × 8 mask of cells whose centre lies in an object of that shape (and colour) — the
renders' scene is known, so the image tower learns shape identity from every cell, not one yes/no per image. Same
network, same inference FLOPs. Prints the held-out balanced accuracy, AUC and within-prompt AUC. Findings:
docs/results.md §9.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from flows import params as P  # noqa: E402
from sana_core.geneval.dataset import resolve_data_cfg  # noqa: E402
from sana_core.geneval.render import degrade  # noqa: E402
from sana_core.geneval.splits import eval_iid  # noqa: E402
from sana_core.judges.contrast import contrast_set  # noqa: E402
from sana_core.judges.metrics import binary_metrics, within_group_auc  # noqa: E402
from sana_core.geneval.world import COLORS, SHAPES  # noqa: E402
from sana_core.judges.tiny import TinyJudge, TinyJudgeConfig, TinyJudgeNet, _text_tensors, _to_input, parse_prompt  # noqa: E402,E501


def cell_masks(scenes, queries, size: int, cells: int) -> torch.Tensor:
    """[B, Q, cells²]: 1 where the cell centre lies in an object of query (shape idx, colour idx or len(COLORS) = any)."""
    c = (np.arange(cells) + 0.5) * size / cells
    X, Y = np.meshgrid(c, c)
    out = np.zeros((len(scenes), queries.shape[1], cells * cells), np.float32)
    for b, objs in enumerate(scenes):
        for q, (s, col) in enumerate(queries[b].tolist()):
            for o in objs:
                if SHAPES.index(o.shape) == s and (col == len(COLORS) or COLORS.index(o.color) == col):
                    inside = (np.abs(X - o.cx) <= o.side / 2) & (np.abs(Y - o.cy) <= o.side / 2)
                    out[b, q] = np.maximum(out[b, q], inside.ravel())
    return torch.from_numpy(out)


def fit_dense(X, R, Y, scenes, steps: int, lr: float, dense: float, world, seed: int = 0) -> TinyJudge:
    """TinyJudgeNet trained on yes/no BCE + `dense` × the per-cell BCE of module docstring (Adam, one-cycle, batch 64)."""
    torch.manual_seed(seed)
    net = TinyJudgeNet(TinyJudgeConfig(image_size=X.shape[1]))
    text = _text_tensors([parse_prompt(m["prompt"]) for m in R])
    rng = np.random.default_rng(seed)
    rq = np.stack([rng.choice([SHAPES.index(s) for s in world.shapes], len(R)),
                   rng.choice([COLORS.index(c) for c in world.colors] + [len(COLORS)], len(R))], 1)
    queries = torch.cat([torch.stack([text["shape"], text["color"]], -1), torch.from_numpy(rq)[:, None]], 1)
    cells = X.shape[1] // 8
    masks = cell_masks(scenes, queries.numpy(), X.shape[1], cells)
    present = torch.cat([(text["count"] > 0).float(), torch.ones(len(R), 1)], 1)
    Xt, Yt = _to_input(X), torch.from_numpy(Y.astype(np.float32))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for step in range(steps):
        idx = torch.randint(len(R), (64,), generator=gen)
        tb = {k: v[idx] for k, v in text.items()}
        fmap = net.image_features(Xt[idx])
        q = net.shape_emb(queries[idx, :, 0]) + net.color_emb(queries[idx, :, 1])
        a = torch.einsum("bqc,bcn->bqn", q, fmap.flatten(2)) / math.sqrt(fmap.shape[1]) + net.bias
        aux = (F.binary_cross_entropy_with_logits(a, masks[idx], reduction="none").mean(-1) * present[idx]).sum() \
            / present[idx].sum()
        loss = F.binary_cross_entropy_with_logits(net(Xt[idx], tb), Yt[idx]) + dense * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return TinyJudge(net.eval())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--per-prompt", type=int, default=8)
    ap.add_argument("--train-prompts", type=int, default=60)
    ap.add_argument("--dense", type=float, default=0.0, help="weight of the auxiliary per-cell loss (0 = stage's fit)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    w = resolve_data_cfg(P.load_profile("tiny")["data"])[1]
    metas = eval_iid(w)
    perm = np.random.default_rng(0).permutation(len(metas))
    tr, te = [metas[i] for i in perm[:a.train_prompts]], [metas[i] for i in perm[a.train_prompts:]]

    def blur(arr):
        return np.stack([degrade(x, np.random.default_rng(i), blur=1.0, noise=4.0) for i, x in enumerate(arr)])

    scenes: list = []
    X, R, Y = contrast_set(tr, w, a.per_prompt, 0, blur, scenes=scenes)
    Xt, Rt, Yt = contrast_set(te, w, 8, 1, blur)
    t = time.perf_counter()
    if a.dense > 0:
        judge = fit_dense(X, R, Y, scenes, a.steps, a.lr, a.dense, w)
        p_tr = judge.p_yes_each([m["prompt"] for m in R], X, R)
        tm = {"steps": a.steps, "train_acc": float(((p_tr >= 0.5) == Y).mean())}
    else:
        judge, tm = TinyJudge.fit(X, R, Y, {"steps": a.steps, "batch_size": 64, "lr": a.lr, "seed": 0})
    secs = time.perf_counter() - t
    p = judge.p_yes_each([m["prompt"] for m in Rt], Xt, Rt)
    bm = binary_metrics(p >= 0.5, Yt, p)
    wa, n = within_group_auc(p, Yt, [m["prompt"] for m in Rt])
    print(f"train: {len(tr)} prompts × {a.per_prompt} renders ({Y.mean():.2f} yes), {tm['steps']} steps at lr {a.lr}, dense {a.dense}, "
          f"{secs:.0f} s, train accuracy {tm['train_acc']:.3f}")
    print(f"held out: {len(te)} prompts, {len(Yt)} renders ({Yt.mean():.2f} yes): balanced accuracy "
          f"{bm['balanced_acc']:.3f}, AUC {bm['auc']:.3f}, within-prompt AUC {wa:.3f} ({n} prompts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
