"""Can the tiny judge, trained the way the judge stage trains it, rank the candidates of prompts it never saw? Trained
and measured on balanced render sets (`sana_core.judges.contrast`: the prompt and its near misses, labelled by the
evaluator) of the tiny 4 × 4 world, no model needed.

    .venv/bin/python bench/judge_renders.py [--lr 1e-3] [--steps 300] [--per-prompt 8] [--train-prompts 60]
        [--dense 0.0]

Prompts: the tiny world's eval_iid (153), a seeded permutation split into --train-prompts for training and the rest
held out. Renders get σ = 1 px blur + N(0, 4/255) noise. Training: `TinyJudge.fit` (batch 64, seed 0, 1 thread) as
stage judge; `--dense W` > 0 adds the auxiliary per-cell loss of `train_tiny_judge` (weight W; the renders' scenes
are known): the attention logits of the prompt's queries and of one random (shape, colour) query are pushed towards
the 8 × 8 mask of cells inside an object of that shape (and colour), so the image tower learns shape identity from
every cell. Same network, same inference FLOPs. Prints the held-out balanced accuracy, AUC and within-prompt AUC. Findings:
docs/results.md §9.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flows import params as P  # noqa: E402
from sana_core.geneval.dataset import resolve_data_cfg  # noqa: E402
from sana_core.geneval.render import degrade  # noqa: E402
from sana_core.geneval.splits import eval_iid  # noqa: E402
from sana_core.judges.contrast import contrast_set  # noqa: E402
from sana_core.judges.metrics import binary_metrics, within_group_auc  # noqa: E402
from sana_core.judges.tiny import TinyJudge  # noqa: E402


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
    judge, tm = TinyJudge.fit(X, R, Y, {"steps": a.steps, "batch_size": 64, "lr": a.lr, "seed": 0, "dense": a.dense},
                              scenes)
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
