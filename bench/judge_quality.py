"""Can a judge pick? Its yes/no quality and best-of-N curve on candidates of a model for prompts it never saw.

    .venv/bin/python bench/judge_quality.py RUN_ROOT [--model models/pretrain_base] [--judge models/judge]
        [--split eval_iid] [--max-prompts 0] [--ns 1 2 4 8 16] [--k 4] [--threads 1]

RUN_ROOT: a pipeline checkout after `dvc repro` (data/shapes/<split>.jsonl, the model folder, the judge folder of
stage judge). Prompts: the split minus the judge's training prompts (`<judge>/training_prompts.jsonl`), tag-stratified
to --max-prompts. Candidates: N_max = max(--ns) per prompt with **per-prompt seeds** 1000·i + j (prompt i, candidate
j; the same noise is never shared across prompts, so one lucky seed cannot move every prompt's N = 1 together),
sampled as the model folder says (sana15.json), labelled by the exact evaluator of the model's world (= the oracle).
Prints: the judge's balanced accuracy, pooled AUC and within-prompt AUC (mean over prompts whose candidates hold both
classes: what a knockout ranks), then per N the GenEval-Shapes overall of the k kept images with the judge, with the
oracle and for a random pick (the mean correctness of the first N candidates), generation and judge FLOPs per prompt.
Goal (issue 17): the judge's curve rises monotonically and at N = 8 closes ≥ 2/3 of the N = 1 → oracle(N = 8) gap,
judge FLOPs ≤ 10 % of generation. Findings: docs/results.md §9.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flows.commands.geneval import _world_for  # noqa: E402
from sana_core.geneval.layout import read_metadata_jsonl  # noqa: E402
from sana_core.geneval.splits import stratified  # noqa: E402
from sana_core.judges import build_judge  # noqa: E402
from sana_core.judges.base import training_prompts  # noqa: E402
from sana_core.judges.metrics import binary_metrics, within_group_auc  # noqa: E402
from sana_core.sample import check_model_dir, load_sampler  # noqa: E402
from sana_core.scaling import flops_table, generation_flops_per_image, select, verdicts_from_decide  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--model", default="models/pretrain_base")
    ap.add_argument("--judge", default="models/judge", help="a tiny-judge folder written by stage judge")
    ap.add_argument("--split", default="eval_iid")
    ap.add_argument("--max-prompts", type=int, default=0)
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(a.root)
    model, judge_dir = check_model_dir(root / a.model), root / a.judge
    reserved = training_prompts(judge_dir)
    metas = read_metadata_jsonl(root / "data/shapes" / f"{a.split}.jsonl")
    kept = [m for m in metas if m["prompt"] not in reserved]
    metas = stratified(kept, a.max_prompts)
    ns, k = sorted(set(a.ns) | {1}), a.k
    n_max = ns[-1]
    world = _world_for(model)
    judge, oracle = build_judge({"name": "tiny", "path": str(judge_dir)}), build_judge({"name": "oracle", "world": world})
    sampler = load_sampler(model)
    print(f"{a.split}: {len(metas)} prompts ({len(reserved)} reserved for the judge, {len(kept)} left), "
          f"N_max {n_max}, k {k}, seeds 1000·i + j")

    t0 = time.perf_counter()
    seeds = [[1000 * i + j for j in range(n_max)] for i in range(len(metas))]
    imgs = sampler.generate([m["prompt"] for m in metas for _ in range(n_max)], [s for ss in seeds for s in ss])
    imgs = imgs.reshape(len(metas), n_max, *imgs.shape[1:])
    t1 = time.perf_counter()
    vj = [verdicts_from_decide(s, judge.decide(m["prompt"], c, m)) for m, s, c in zip(metas, seeds, imgs)]
    t2 = time.perf_counter()
    vo = [verdicts_from_decide(s, oracle.decide(m["prompt"], c, m)) for m, s, c in zip(metas, seeds, imgs)]
    labels = np.array([[v[s].yes for s in ss] for v, ss in zip(vo, seeds)])
    p_yes = np.array([[v[s].p_yes for s in ss] for v, ss in zip(vj, seeds)])
    bm = binary_metrics(p_yes.ravel() >= 0.5, labels.ravel(), p_yes.ravel())
    wa, n_both = within_group_auc(p_yes.ravel(), labels.ravel(), np.repeat(np.arange(len(metas)), n_max))
    print(f"generate {t1 - t0:.1f} s, judge {t2 - t1:.2f} s; candidates {labels.size}, correct {labels.mean():.3f}")
    print(f"judge: balanced acc {bm['balanced_acc']:.3f} (TPR {bm['tpr']:.3f}, TNR {bm['tnr']:.3f}), AUC {bm['auc']:.3f}, "
          f"within-prompt AUC {wa:.3f} over {n_both} prompts with both classes")

    def score(verdicts, n):
        return float(np.mean([labels[p, select(seeds[p], verdicts[p], n, k)].mean() for p in range(len(metas))]))

    gen = generation_flops_per_image(sampler)
    fl = {r["n"]: r for r in flops_table(ns, gen, float(judge.flops_per_image(sampler.image_size)), k)}
    rows = [{"N": n, "judge": score(vj, n), "oracle": score(vo, n), "random": float(labels[:, :n].mean()),
             "gen_flops": fl[n]["generation_flops"], "judge_flops": fl[n]["judge_flops"],
             "ratio": fl[n]["judge_ratio"]} for n in ns]
    print("\n| N | tiny judge | oracle | random pick | generation FLOPs/prompt | judge FLOPs/prompt | judge/gen |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['N']} | {r['judge']:.3f} | {r['oracle']:.3f} | {r['random']:.3f} | {r['gen_flops']:.3g} | "
              f"{r['judge_flops']:.3g} | {r['ratio']:.4f} |")
    by = {r["N"]: r for r in rows}
    if 8 in by:
        gap = by[8]["oracle"] - by[1]["judge"]
        closed = (by[8]["judge"] - by[1]["judge"]) / gap if gap > 0 else float("nan")
        mono = all(rows[i + 1]["judge"] >= rows[i]["judge"] for i in range(len(rows) - 1))
        print(f"\nN = 8 closes {closed:.2f} of the N = 1 → oracle(8) gap (goal ≥ 0.67); monotone: {mono}; "
              f"max judge/generation FLOPs {max(r['ratio'] for r in rows):.4f} (goal ≤ 0.10)")
    print(json.dumps({"prompts": len(metas), "judge": {**bm, "within_prompt_auc": wa}, "rows": rows}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
