"""Can a judge pick? Its yes/no quality and best-of-N curve on candidates of a model for prompts it never saw.

    .venv/bin/python bench/judge_quality.py RUN_ROOT [--model models/pretrain_base] [--judge models/judge]
        [--split eval_iid] [--max-prompts 0] [--ns 1 2 4 8 16] [--k 4 1] [--threads 1] [--cache FILE.npz]

RUN_ROOT: a pipeline checkout after `dvc repro` (data/shapes/<split>.jsonl, the model folder, the judge folder of
stage judge). Prompts: the split minus the judge's training prompts (`<judge>/training_prompts.jsonl`), tag-stratified
to --max-prompts. Candidates: N_max = max(--ns) per prompt with **per-prompt seeds** 1000·i + j (prompt i, candidate
j; the same noise is never shared across prompts, so one lucky seed cannot move every prompt's N = 1 together),
sampled as the model folder says (sana15.json), labelled by the exact evaluator of the model's world (= the oracle).
Prints: the judge's balanced accuracy, pooled AUC and within-prompt AUC (mean over prompts whose candidates hold both
classes: what a knockout ranks), then, for each k, per N the GenEval-Shapes overall (task-averaged, as GenEval) of the
kept images with the judge (with its 95 % stratified-bootstrap interval over prompts), with the oracle and for a
random pick, the paired judge − random difference with its interval and verdict, and the generation and judge FLOPs
per prompt. Every N row averages over the
N_max / N disjoint groups of N candidates (candidates 0..N−1, N..2N−1, …), so small N are not one draw of a few
seeds: the random pick is then the mean correctness of all candidates at every N, and N ≤ k (nothing to select)
scores exactly that. k = 4 is GenEval's four images per prompt; k = 1 (top-1 of N) is the curve on which a judge
acts at every N ≥ 2. `--cache` keeps the candidate images (npz; the oracle re-labels them in seconds), so other judges
are measured on the very same images without generating again.
Goal (issue 17): the judge's curve rises monotonically and at N = 8 closes ≥ 2/3 of the N = 1 → oracle(N = 8) gap,
judge FLOPs ≤ 10 % of generation. Findings: docs/results.md §9, §9.1, §14.1.
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
from sana_core.geneval.stats import PromptScores, bootstrap_overall, paired_difference, verdict  # noqa: E402
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
    ap.add_argument("--k", type=int, nargs="+", default=[4, 1], help="images kept per prompt (one table each)")
    ap.add_argument("--cache", type=Path, default=None, help="npz of the candidates: written once, then reused")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(a.root)
    model, judge_dir = check_model_dir(root / a.model), root / a.judge
    reserved = training_prompts(judge_dir)
    metas = read_metadata_jsonl(root / "data/shapes" / f"{a.split}.jsonl")
    kept = [m for m in metas if m["prompt"] not in reserved]
    metas = stratified(kept, a.max_prompts)
    ns = sorted(set(a.ns) | {1})
    n_max = ns[-1]
    if any(n_max % n for n in ns):
        raise SystemExit(f"--ns {ns}: every N must divide N_max = {n_max} (rows average over disjoint groups)")
    world = _world_for(model)
    judge, oracle = build_judge({"name": "tiny", "path": str(judge_dir)}), build_judge({"name": "oracle", "world": world})
    sampler = load_sampler(model)
    print(f"{a.split}: {len(metas)} prompts ({len(reserved)} reserved for the judge, {len(kept)} left), "
          f"N_max {n_max}, k {a.k}, seeds 1000·i + j")

    t0 = time.perf_counter()
    seeds = [[1000 * i + j for j in range(n_max)] for i in range(len(metas))]
    key = np.array([f"{a.model}|{m['prompt']}" for m in metas] + [str(n_max)])
    if a.cache and a.cache.exists():
        z = np.load(a.cache)
        if not np.array_equal(z["key"], key):
            raise SystemExit(f"--cache {a.cache}: written for another model, prompt set or N_max")
        imgs = z["imgs"]
    else:
        imgs = sampler.generate([m["prompt"] for m in metas for _ in range(n_max)], [s for ss in seeds for s in ss])
        imgs = imgs.reshape(len(metas), n_max, *imgs.shape[1:])
        if a.cache:
            np.savez_compressed(a.cache, imgs=np.asarray(imgs), key=key)
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

    gen = generation_flops_per_image(sampler)
    rand = kept_scores(metas, labels.sum(1), np.full(len(metas), float(n_max)))   # a random pick, at every N and k
    tables = {}
    for k in a.k:
        fl = {r["n"]: r for r in flops_table(ns, gen, float(judge.flops_per_image(sampler.image_size)), k)}
        rows = []
        for n in ns:
            js, os_ = (kept_scores(metas, *group_counts(labels, seeds, v, n, k)) for v in (vj, vo))
            ji, (di, _) = bootstrap_overall(js), paired_difference(js, rand)
            dv = verdict(di, "judge", "random")
            rows.append({"N": n, "judge": js.overall, "judge_ci": [ji.lo, ji.hi], "oracle": os_.overall,
                         "random": rand.overall, "judge_minus_random": di.as_dict(), "verdict": dv,
                         "gen_flops": fl[n]["generation_flops"], "judge_flops": fl[n]["judge_flops"],
                         "ratio": fl[n]["judge_ratio"]})
        print(f"\nk = {k} kept per prompt (each row: mean over the {n_max}/N disjoint groups of N candidates)")
        print("| N | tiny judge [95 % CI] | oracle | random pick | judge − random [95 % CI] | generation FLOPs/prompt "
              "| judge FLOPs/prompt | judge/gen |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            d = r["judge_minus_random"]
            print(f"| {r['N']} | {r['judge']:.3f} [{r['judge_ci'][0]:.3f}, {r['judge_ci'][1]:.3f}] | {r['oracle']:.3f} | "
                  f"{r['random']:.3f} | {d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] {r['verdict']} | "
                  f"{r['gen_flops']:.3g} | {r['judge_flops']:.3g} | {r['ratio']:.4f} |")
        by = {r["N"]: r for r in rows}
        if 8 in by:
            gap = by[8]["oracle"] - by[1]["judge"]
            closed = (by[8]["judge"] - by[1]["judge"]) / gap if gap > 0 else float("nan")
            mono = all(rows[i + 1]["judge"] >= rows[i]["judge"] for i in range(len(rows) - 1))
            print(f"N = 8 closes {closed:.2f} of the N = 1 → oracle(8) gap (goal ≥ 0.67); monotone: {mono}; "
                  f"max judge/generation FLOPs {max(r['ratio'] for r in rows):.4f} (goal ≤ 0.10)")
        tables[k] = rows
    print(json.dumps({"prompts": len(metas), "judge": {**bm, "within_prompt_auc": wa}, "tables": tables},
                     default=float))
    return 0


def group_counts(labels: np.ndarray, seeds: list[list[int]], verdicts: list[dict], n: int, k: int):
    """Per prompt: correct and kept images at best-k-of-n over the N_max / n disjoint groups of n candidates (n ≤ k
    keeps the whole group: nothing to select)."""
    correct, images = np.zeros(len(seeds)), np.zeros(len(seeds))
    for p, ss in enumerate(seeds):
        for g in range(0, len(ss), n):
            kept = [g + i for i in select(ss[g:g + n], verdicts[p], n, k)]
            correct[p] += labels[p, kept].sum()
            images[p] += len(kept)
    return correct, images


def kept_scores(metas: list[dict], correct: np.ndarray, images: np.ndarray) -> PromptScores:
    """Per-prompt counts as `geneval.stats.PromptScores`: its overall is GenEval's (mean over tasks)."""
    ps = tuple(m["prompt"] for m in metas)
    return PromptScores(ps, ps, np.array([m["tag"] for m in metas]), np.asarray(correct, float),
                        np.asarray(images, float))


if __name__ == "__main__":
    sys.exit(main())
