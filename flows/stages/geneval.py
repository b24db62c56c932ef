"""DVC stage `geneval@<variant>`: GenEval-Shapes of `models/<variant>` with best-of-N inference scaling
(sana15-method.md §11; paper Fig. 5: GenEval vs N, best 4 of N picked by a VLM judge's knockout tournament).

For every split of `geneval.splits` (data/shapes/<split>.jsonl minus every prompt the judge trained on, read from
`models/judge/training_prompts.jsonl` (in a world too small to keep them apart the judge takes some eval_iid prompts:
`splits.judge_training_prompts`); `geneval.max_prompts` > 0 keeps a tag-stratified subset) the model (sampler = params
`sample`: Flow-DPM-Solver, steps, CFG) draws N_max = max({1} ∪ geneval.best_of) candidates per prompt with seeds
`geneval.seed + j`, j = 0..N_max−1, the same for every prompt (GenEval's procedure, `sana_core.geneval.procedure`).
**Nested candidates:** best-of-N for every smaller N uses the first N of them (seeds seed..seed+N−1) — exactly what
a separate run with N candidates would draw, since an image depends only on its (prompt, seed) (sample.py) — so the
curve over N costs one generation at N_max.
Selection, k = geneval.n_images (GenEval: 4): N ≤ k → all N candidates, no judging (N = 1 is plain GenEval with one
image per prompt); N > k → the k survivors of `scaling.tournament` (sorted-seed bracket, paper's match rule) over
the first N candidates. Each candidate is judged once per judge (judges are deterministic and judge each image
alone, so a tournament at any N sees the same verdicts as a run at that N alone).
Judges: `judge.name` (default tiny, models/judge from stage `judge`) and, as the upper-bound row, `oracle` (the
evaluator itself). The selected images are written in GenEval layout
`geneval/<variant>/n<N>/<judge | all when N ≤ k>/<split>/<index:05d>/{metadata.jsonl, samples/*.png}` (+ `selection.jsonl`:
the kept seeds per prompt) and scored by
the evaluator that fits `data.source` (`sana_core.geneval.evaluators.evaluator_for`: `shapes` → the exact evaluator
`score.score_folder`; a real-image source → GenEval's rules with Mask2Former + CLIP from `geneval.detector` /
`geneval.clip`, `official_score.score_folder`), which also writes results.jsonl (one row per image: its prompt
folder, tag, correct — what the report's bootstrap intervals resample) + summary.json there.

A brought dataset (`data.source` ≠ shapes; flows.params.check_brought_eval, before compute): geneval.splits must be
[eval_iid] = GenEval's own 553 prompts (stage data), the judge is the pretrained judge.name (no oracle row: the
oracle is the shapes evaluator), and every candidate's label — for judge_accuracy and the *_any_correct shares — is
the official evaluator's verdict on the in-memory image (`candidate_labels`).

Metrics (`metrics/geneval_<variant>.json`): top level = N = 1 on the first split (eval_iid): overall, six tasks,
n_images; `comp` = N = 1 on eval_comp; `best_of: {N: {judge: {iid: summary, comp: summary}}}` (summary = overall, six
tasks, n_images, prompts_any_correct = share of prompts with ≥ 1 correct selected image, candidates_any_correct =
share with ≥ 1 correct among the first N candidates, candidates_correct = share of correct among them: what a
random pick scores, the baseline a judge must beat); `flops: {N: {...}}` per prompt (generation ∝ N; judge FLOPs of
the knockout at that N, ours = each playing candidate once, official = 2 per match); `judge_accuracy: {judge: {split:
...}}` = the judge's yes/no vs the evaluator on all N_max candidates (accuracy, balanced accuracy, label balance, AUC,
within_prompt_auc = mean AUC over the prompts whose candidates hold both classes: the ranking a knockout uses).
`plots/geneval_<variant>.json`: rows {N, judge, overall, overall_comp, generation_flops, judge_flops} (x = N).

Oracle and N: with the oracle, a selected set contains a correct image iff one of the first N candidates is correct
(yes beats no in every match, so a correct candidate is only ever eliminated by another correct one), hence
`prompts_any_correct` is non-decreasing in N. The *overall* score (share of correct among the k selected images) is
not: for N = k·2^r the i-th survivor is the winner of the i-th block of 2^r sorted candidates, so the oracle's score
is the share of blocks holding a correct candidate, which can drop when blocks merge (k = 2: candidates (✓, ✓, ✗, ✗)
give 2/2 at N = 2 but 1/2 at N = 4). Its expectation, 1 − (1 − p)^(N/k) for i.i.d. candidates, grows with N.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from flows import params as P
from flows.stage_runner import main, write_json_atomic
from flows.stages import _common as C
from sana_core.atomic import atomic_dir
from sana_core.geneval.evaluate import TASKS, summary
from sana_core.geneval.evaluators import evaluator_for, make_scorer
from sana_core.geneval.layout import make_grid, read_metadata_jsonl, write_prompt_folder
from sana_core.geneval.procedure import image_seeds
from sana_core.geneval.splits import stratified
from sana_core.judges import build_judge, judge_class
from sana_core.judges.base import TRAINING_PROMPTS_FILE, training_prompts
from sana_core.judges.metrics import binary_metrics, within_group_auc
from sana_core.parallel import is_main_process
from sana_core.scaling import flops_table, generate_and_judge, generation_flops_per_image, n_list, select

OUT = Path("geneval")


def split_key(split: str) -> str:
    """eval_iid → iid, eval_comp → comp (other names unchanged)."""
    return split[len("eval_"):] if split.startswith("eval_") else split


def eval_prompts(params: dict, root: Path) -> dict[str, list[dict]]:
    """{split: prompts}: each of geneval.splits minus every prompt the judge trained on — read from the judge folder
    (`models/judge/training_prompts.jsonl`, what stage judge actually used), not re-derived — tag-stratified to
    geneval.max_prompts (0 = all)."""
    gp = params["geneval"]
    judge_prompts = training_prompts(C.need(root, C.JUDGE_DIR / TRAINING_PROMPTS_FILE, "judge training prompts, "
                                                                                       "stage judge"))
    out = {}
    for s in gp["splits"]:
        metas = read_metadata_jsonl(C.need(root, C.SHAPES / f"{s}.jsonl", f"split {s}, stage data"))
        out[s] = stratified([m for m in metas if m["prompt"] not in judge_prompts], int(gp["max_prompts"]))
        if not out[s]:
            raise ValueError(f"geneval.splits: {s} has no prompts")
    return out


def check(params: dict, root: Path, item: str | None) -> tuple[int, list[int], list[str], dict, Path]:
    """Every params/input check, before any compute: (k, Ns, judge names, their build_judge configs, model folder)."""
    gp = params["geneval"]
    P.check_brought_eval(params)     # a brought dataset: a pretrained judge, [eval_iid], detector + clip
    if item is None or item not in gp["variants"]:
        raise ValueError(f"geneval: item {item!r} is not one of geneval.variants {gp['variants']}")
    if item not in P.model_variants(params):
        raise ValueError(f"geneval: {item!r} is not a model of this recipe {P.model_variants(params)}")
    k, ns = int(gp["n_images"]), n_list(gp["best_of"])
    if k < 1:
        raise ValueError(f"params: geneval.n_images: {k} must be ≥ 1")
    if not gp["splits"]:
        raise ValueError("params: geneval.splits: empty")
    model_dir = C.need(root, C.model_path(item), f"model of variant {item}")
    # the oracle (the exact GenEval-Shapes evaluator as a judge) is the upper-bound row in the shapes world only
    oracle = ["oracle"] if C.is_shapes(params) and params["judge"]["name"] != "oracle" else []
    names = [params["judge"]["name"]] + oracle
    cfgs = {n: C.judge_cfg(params, root, n) for n in names}
    for n in names:
        if judge_class(n).trainable:
            C.need(root, cfgs[n]["path"], f"{n} judge, stage judge")
    return k, ns, names, cfgs, model_dir


def candidate_labels(score_layout, metas: list[dict], imgs: np.ndarray, verdicts: dict, seeds: list[int]
                     ) -> np.ndarray:
    """The evaluator's label of every candidate [P, N_max]: in the shapes world the oracle's yes (oracle.py: yes ⇔
    score_image correct, already computed); otherwise the official evaluator on the in-memory images
    (`Scorer.labels`, each candidate scored once)."""
    if "oracle" in verdicts:
        return np.array([[v[sd].yes for sd in seeds] for v in verdicts["oracle"]])
    p, n = imgs.shape[:2]
    flat = score_layout.labels(list(imgs.reshape(p * n, *imgs.shape[2:])), [m for m in metas for _ in range(n)])
    return np.array(flat, bool).reshape(p, n)


def judge_accuracy(verdicts: dict, labels: np.ndarray, seeds: list[int], judge_names) -> dict:
    """{judge: binary_metrics} of each judge's yes/no on every candidate against the evaluator's labels."""
    out = {}
    for j in judge_names:
        pred = np.array([[v[sd].yes for sd in seeds] for v in verdicts[j]])
        score = np.array([[v[sd].p_yes for sd in seeds] for v in verdicts[j]])
        out[j] = binary_metrics(pred.ravel(), labels.ravel(), score.ravel())
        # what the knockout uses: the ranking of one prompt's candidates (a pooled AUC can come from the prompt alone)
        out[j]["within_prompt_auc"], out[j]["n_prompts_both_classes"] = within_group_auc(
            score.ravel(), labels.ravel(), np.repeat(np.arange(len(score)), len(seeds)))
        out[j] = C.clean_nan(out[j])
    return out


def score_selection(folder: Path, metas: list[dict], imgs: np.ndarray, seeds: list[int], sel: list,
                    labels: np.ndarray, n: int, k: int, score_layout, exact: bool = True) -> dict:
    """Write the selected images of every prompt in GenEval layout (+ selection.jsonl) unless the folder exists
    (N ≤ k: shared by every judge), score it with `score_layout` (evaluators.make_scorer); with the exact evaluator
    (`exact`) check the score against the in-memory labels; the summary + prompts_any_correct,
    candidates_any_correct, k."""
    if not folder.exists():
        for p, m in enumerate(metas):
            write_prompt_folder(folder, p, m, list(imgs[p, sel[p]]))
        (folder / "selection.jsonl").write_text("".join(
            json.dumps({"index": p, "prompt": m["prompt"], "kept_seeds": [seeds[i] for i in sel[p]]}) + "\n"
            for p, m in enumerate(metas)))
    _, summ = score_layout(folder)
    mem = summary(pd.DataFrame([{"tag": m["tag"], "correct": bool(labels[p, i])}
                                for p, m in enumerate(metas) for i in sel[p]]))
    if exact and not np.isclose(mem["overall"], summ["overall"]):
        raise RuntimeError(f"geneval: {folder} scores {summ['overall']} but the in-memory verdicts give "
                           f"{mem['overall']} (PNG round trip changed an image?)")
    summ = {kk: v for kk, v in summ.items() if v is not None}
    summ["prompts_any_correct"] = float(np.mean([labels[p, sel[p]].any() for p in range(len(metas))]))
    summ["candidates_any_correct"] = float(labels[:, :n].any(axis=1).mean())
    summ["candidates_correct"] = float(labels[:, :n].mean())     # what a random pick of the first n would score
    summ["k"] = min(k, n)
    return summ


def flops_per_n(judges: dict, ns: list[int], gen_fpi: float, k: int, image_size: int) -> dict:
    """{N: {generation_flops, judge: {calls, FLOPs (ours, official), total, ratio}}} per prompt; judge FLOPs per image:
    tiny/vlm/clip measured, oracle 0 (CPU only)."""
    flops = {}
    for j, jd in judges.items():
        fj = float(jd.flops_per_image(image_size))
        for row in flops_table(ns, gen_fpi, fj, k):
            flops.setdefault(str(row["n"]), {"generation_flops": row["generation_flops"]})[j] = {
                x: row[x] for x in ("judge_calls", "judge_calls_official", "judge_flops", "judge_flops_official",
                                    "total_flops", "judge_ratio")}
    return flops


def plot_rows(best: dict, flops: dict, ns: list[int], names: list[str], splits: list[str]) -> list[dict]:
    first = split_key(splits[0])
    rows = []
    for n in ns:
        for j in names:
            r = {"N": n, "judge": j, "overall": best[str(n)][j][first]["overall"],
                 "generation_flops": flops[str(n)]["generation_flops"], "judge_flops": flops[str(n)][j]["judge_flops"]}
            for s in splits[1:]:
                r[f"overall_{split_key(s)}"] = best[str(n)][j][split_key(s)]["overall"]
            rows.append(r)
    return rows


def geneval(params: dict, root: Path, item: str | None) -> dict:
    root = Path(root)
    gp = params["geneval"]
    k, ns, names, cfgs, model_dir = check(params, root, item)
    split_metas = eval_prompts(params, root)
    world = C.world(params)
    # the evaluator that fits the data source: shapes → exact GenEval-Shapes, real images → Mask2Former + CLIP
    evaluator = evaluator_for(params["data"].get("source", "shapes"))
    score_layout = make_scorer(evaluator, world=world, detector=gp.get("detector"), clip=gp.get("clip"),
                               batch_size=int(gp.get("eval_batch_size", 4)))
    judges = {n: build_judge(c) for n, c in cfgs.items()}
    sampler = C.load_model(root, model_dir, params)
    sampler.config = sampler._cfg(C.sampling(params))

    n_max = ns[-1]
    seeds = image_seeds(int(gp["seed"]), n_max)                 # GenEval's rule: the same seeds for every prompt
    gen_fpi = generation_flops_per_image(sampler)
    best: dict = {str(n): {j: {} for j in names} for n in ns}
    jacc: dict = {j: {} for j in names if j != "oracle"}

    # every candidate generated and judged once per judge — split across processes when the stage runs under
    # several (sana_core/parallel.py: the same arrays for any process count); the rest runs on the main process only
    candidates = {s: generate_and_judge(sampler, metas, seeds, judges) for s, metas in split_metas.items()}
    if not is_main_process():
        return {}

    def write(tmp: Path):                           # geneval/<variant>, atomically
        grid_imgs = []
        for s, metas in split_metas.items():
            key = split_key(s)
            imgs, verdicts = candidates[s]                                               # [P, N_max, H, W, 3]
            labels = candidate_labels(score_layout, metas, imgs, verdicts, seeds)             # [P, N_max]
            for j, acc in judge_accuracy(verdicts, labels, seeds, jacc).items():
                jacc[j][key] = acc
            for n in ns:
                for j in names:
                    sel = [select(seeds, verdicts[j][p], n, k) for p in range(len(metas))]
                    folder = tmp / f"n{n}" / ("all" if n <= k else j) / s
                    best[str(n)][j][key] = score_selection(folder, metas, imgs, seeds, sel, labels, n, k,
                                                           score_layout, exact=evaluator == "shapes")
                    if j == names[0] and n == n_max and not grid_imgs:
                        grid_imgs = [imgs[p, i] for p in range(min(4, len(metas))) for i in sel[p][:4]]
        Image.fromarray(make_grid(grid_imgs, cols=min(k, n_max))).save(tmp / "grid.png")

    atomic_dir(root / OUT / item, write)
    flops = flops_per_n(judges, ns, gen_fpi, k, int(params["data"]["image_size"]))

    first = split_key(gp["splits"][0])
    n1 = best["1"][names[0]]
    rec = {**{x: n1[first].get(x) for x in ("overall", *TASKS, "n_images")}}
    for s in gp["splits"][1:]:
        rec[split_key(s)] = {x: n1[split_key(s)].get(x) for x in ("overall", *TASKS)}
    rec.update(judge=names[0], judges=names, k=k, n=ns, n_prompts={split_key(s): len(v) for s, v in split_metas.items()},
               best_of=best, flops=flops, generation_flops_per_image=gen_fpi, judge_accuracy=jacc,
               sample_grid=str(OUT / item / "grid.png"), variant=item)
    write_json_atomic(plot_rows(best, flops, ns, names, gp["splits"]), root / "plots" / f"geneval_{item}.json")
    return C.clean_nan(rec)


if __name__ == "__main__":
    main("geneval", geneval)
    sys.exit(0)
