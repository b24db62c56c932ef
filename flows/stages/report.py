"""DVC stage `report`: `reports/report.md` + PNG figures in `reports/figures/`, rebuilt from `metrics/` and `plots/`
only (seconds; no model is loaded). Every section whose inputs are missing says "not run" instead of failing.

Sections: GenEval-Shapes table per variant (N = 1, IID and compositional, + the largest N per judge); GenEval vs N per
variant (score on the left axis, generation + judge FLOPs per prompt on a log right axis); pruned vs scratch vs base
bars; pruned before/after the healing finetune; growth (strategy, init identity check, pretrain_grown's
loss/grad-norm and whether it hit a non-finite loss); block importance per block (metrics/importance.json, with the blocks
each prune target keeps); training loss curves (plots/<stage>.json from the stage-runner callback); compute (training
FLOPs per stage, generation/judge FLOPs per N); judge accuracy; sample grids (the PNGs the stages name in their
metrics' `sample_grid`: models/<v>/samples.png of the training stages, geneval/<v>/grid.png of the best-of-N picks;
copied into reports/figures so the report stands alone — those files are not DVC deps of this stage).

Uncertainty: every GenEval overall score in the tables carries its 95 % stratified-bootstrap interval over prompts
(`0.323 [0.281, 0.372]`, sana_core/geneval/stats.py), computed from the per-image verdicts the geneval stage wrote
next to its picks (`geneval/<v>/n<N>/<all | judge>/<split>/results.jsonl`; written by the stage that writes
metrics/geneval_<v>.json, so a change there re-runs this stage; without the file the cell has no interval). Section
"Comparisons" gives the paired difference (same prompts resampled for both) of the recipe's three claims at N = 1 —
pruned + finetuned vs compute-matched scratch per target depth, grown vs base, SFT vs its input (pretrain_grown) —
with the verdict "A better" / "B better" / "no difference" (interval contains 0). report() returns them too
(`intervals`, `comparisons`).
"""
from __future__ import annotations

import fnmatch
import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the headless backend is chosen)

from flows import params as P  # noqa: E402
from flows.stage_runner import main
from sana_core.atomic import atomic_dir, write_text_atomic  # noqa: E402
from sana_core.geneval.evaluate import TASKS  # noqa: E402
from sana_core.geneval.stats import (B_DEFAULT, SEED_DEFAULT, bootstrap_overall,  # noqa: E402
                                     paired_difference, read_results)

OUT_MD = Path("reports") / "report.md"
FIG = Path("reports") / "figures"
TRAIN_STAGES = ("pretrain_base", "pretrain_grown", "sft", "finetune", "scratch", "judge")
NOT_RUN = "_not run_ (inputs missing: {what})"


class Unreadable:
    """A metrics/plots file that exists but does not parse (truncated or corrupt): reported as such, not "not run"."""

    def __init__(self, error: Exception):
        self.error = f"{type(error).__name__}: {error}"


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return Unreadable(e)


def _missing(r: "Inputs", what: str) -> str:
    """The line a section prints when its inputs are absent: "not run", or "unreadable" naming each corrupt file that
    matches one of the comma-separated globs in `what` (bare names are under metrics/)."""
    pats = [w.strip().split(" ")[0] for w in what.split(",")]
    pats = [w if "/" in w else f"metrics/{w}" for w in pats]
    bad = [f"`{f}` ({err})" for f, err in r.unreadable.items() if any(fnmatch.fnmatch(f, p + "*") for p in pats)]
    if bad:
        return f"_unreadable inputs_: {'; '.join(bad)} — fix or delete the file and re-run its stage"
    return NOT_RUN.format(what=what)


def _fmt(v, nd=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{nd}f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _variant_order(params: dict, metrics: dict) -> list[str]:
    known = P.model_variants(params)
    return [v for v in known if v in metrics] + sorted(v for v in metrics if v not in known)


def _variants_in_order(targets: list, per_target) -> list[str]:
    """Model variants in report order: the trained lineage (not `grow`), then per target depth its `per_target`
    stages."""
    return [v for v in P.MODEL_STAGES if v != "grow"] + [P.variant_name(s, t) for t in targets for s in per_target]


def collect(root: Path) -> dict:
    """{stem: metrics dict} of metrics/*.json and {stem: rows} of plots/*.json."""
    out = {"metrics": {}, "plots": {}, "unreadable": {}}
    for folder, typ in (("metrics", dict), ("plots", list)):
        for p in sorted((root / folder).glob("*.json")) if (root / folder).is_dir() else []:
            d = _load(p)
            if isinstance(d, typ):
                out[folder][p.stem] = d
            else:
                out["unreadable"][f"{folder}/{p.name}"] = d.error if isinstance(d, Unreadable) else \
                    f"expected a JSON {typ.__name__}, got {type(d).__name__}"
    return out


@dataclass
class Inputs:
    """What every report section reads (metrics/, plots/, params) and the figures it adds."""
    params: dict
    root: Path
    M: dict                      # {stem: metrics/<stem>.json}
    PL: dict                     # {stem: plots/<stem>.json rows}
    unreadable: dict             # {"metrics/<file>": parse error} of files that exist but do not parse
    gen: dict                    # {variant: metrics/geneval_<variant>.json}
    variants: list[str]
    targets: list
    figs: dict = field(default_factory=dict)                 # {file name: matplotlib figure}
    grids: list = field(default_factory=list)                # [(stem, sample grid path)]
    scores: dict = field(default_factory=dict)               # {(variant, N, judge, split key): PromptScores | None}
    intervals: dict = field(default_factory=dict)            # {variant: {"n<N>": {judge: {split key: interval}}}}
    comparisons: dict = field(default_factory=dict)          # {"<a>_vs_<b>": {split key: difference + verdict}}


def shapes(r: Inputs) -> bool:
    return r.params["data"]["source"] == "shapes"


def benchmark(r: Inputs) -> str:
    """What the geneval stage scored: GenEval-Shapes (the shapes world) or GenEval itself (a brought dataset)."""
    return "GenEval-Shapes" if shapes(r) else "GenEval"


def prompt_results(r: Inputs, v: str, n: int, judge: str, key: str):
    """The per-prompt results (stats.PromptScores) behind variant v's score at N = n with `judge` on split `key`
    (iid / comp): geneval/<v>/n<n>/<all when n ≤ k, else judge>/<eval_key or key>/results.jsonl; None if absent or
    unreadable."""
    if (v, n, judge, key) not in r.scores:
        k = int((r.gen.get(v) or {}).get("k") or 1)
        base = r.root / "geneval" / v / f"n{n}" / ("all" if n <= k else judge)
        f = next((base / d / "results.jsonl" for d in (f"eval_{key}", key) if (base / d / "results.jsonl").is_file()),
                 None)
        try:
            r.scores[(v, n, judge, key)] = read_results(f) if f else None
        except (OSError, ValueError) as e:
            r.unreadable[str(f.relative_to(r.root))] = f"{type(e).__name__}: {e}"
            r.scores[(v, n, judge, key)] = None
    return r.scores[(v, n, judge, key)]


def with_interval(r: Inputs, v: str, n: int, judge: str | None, key: str, value):
    """`value` (an overall score of the metrics) as "0.323 [0.281, 0.372]" when its per-prompt results exist (the
    interval is recorded for report()'s return), else the number alone. judge None = the variant's first judge."""
    judge = judge or (r.gen.get(v) or {}).get("judge") or "tiny"
    s = prompt_results(r, v, n, judge, key) if value is not None else None
    if s is None:
        return value
    iv = bootstrap_overall(s)
    r.intervals.setdefault(v, {}).setdefault(f"n{n}", {}).setdefault(judge, {})[key] = iv.as_dict()
    return str(iv)


def geneval_table(r: Inputs) -> list[str]:
    """Section: GenEval table."""
    gen, variants = r.gen, r.variants
    md: list[str] = []
    md += [f"## {benchmark(r)} per variant", ""]
    if gen:
        judges = next((gen[v]["judges"] for v in variants if gen[v].get("judges")), ["tiny", "oracle"])
        rows = []
        for v in variants:
            g = gen[v]
            nmax = str(max(int(n) for n in g.get("best_of", {"1": 0})))
            bo = g.get("best_of", {}).get(nmax, {})
            rows.append([v, with_interval(r, v, 1, None, "iid", g.get("overall")), *(g.get(t) for t in TASKS),
                         with_interval(r, v, 1, None, "comp", (g.get("comp") or {}).get("overall")), nmax,
                         *(with_interval(r, v, int(nmax), j, "iid", (bo.get(j, {}).get("iid") or {}).get("overall"))
                           for j in judges)])
        md += [_table(["variant", "overall (IID)", *TASKS, "overall (comp)", "N max",
                       *(f"best-of-N {j}" for j in judges)], rows), "", intervals_note(r), ""]
    else:
        md += [_missing(r, "metrics/geneval_*.json"), ""]
    return md


def geneval_vs_n(r: Inputs) -> list[str]:
    """Section: GenEval vs N."""
    gen, variants, figs = r.gen, r.variants, r.figs
    md: list[str] = []
    md += ["## GenEval vs N (inference-time scaling)", ""]
    if gen:
        for v in variants:
            g = gen[v]
            ns = sorted(int(n) for n in g.get("best_of", {}))
            if not ns:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.2))
            for j in g.get("judges", []):
                for key, ls in (("iid", "-"), ("comp", "--")):
                    ys = [((g["best_of"][str(n)].get(j) or {}).get(key) or {}).get("overall") for n in ns]
                    if any(y is not None for y in ys):
                        ax.plot(ns, [math.nan if y is None else y for y in ys], ls, marker="o", label=f"{j} {key}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("N candidates per prompt")
            ax.set_ylabel(f"{benchmark(r)} overall")
            ax.set_ylim(-0.02, 1.02)
            fl = g.get("flops", {})
            if fl:
                ax2 = ax.twinx()
                j0 = g.get("judge", "tiny")
                ax2.plot(ns, [fl[str(n)]["generation_flops"] for n in ns], ":", color="gray", label="generation FLOPs")
                ax2.plot(ns, [fl[str(n)]["generation_flops"] + (fl[str(n)].get(j0) or {}).get("judge_flops", 0)
                              for n in ns], ":", color="black", label=f"+ {j0} judge FLOPs")
                ax2.set_yscale("log")
                ax2.set_ylabel("FLOPs per prompt")
                ax2.legend(loc="lower right", fontsize=6)
            ax.legend(loc="upper left", fontsize=6)
            ax.set_title(f"{v}: GenEval vs N (k = {g.get('k')})", fontsize=9)
            fig.tight_layout()
            figs[f"geneval_vs_n_{v}.png"] = fig
            md += [f"![GenEval vs N, {v}](figures/geneval_vs_n_{v}.png)", ""]
            rows = []
            for n in ns:
                for j in g.get("judges", []):
                    b = g["best_of"][str(n)].get(j) or {}
                    f = (fl.get(str(n)) or {})
                    rows.append([n, j, with_interval(r, v, n, j, "iid", (b.get("iid") or {}).get("overall")),
                                 with_interval(r, v, n, j, "comp", (b.get("comp") or {}).get("overall")),
                                 (b.get("iid") or {}).get("prompts_any_correct"), f.get("generation_flops"),
                                 (f.get(j) or {}).get("judge_flops"), (f.get(j) or {}).get("judge_calls")])
            md += [f"**{v}**", "", _table(["N", "judge", "IID", "comp", "prompts with ≥1 correct pick",
                                          "generation FLOPs/prompt", "judge FLOPs/prompt", "judge calls/prompt"],
                                         rows), ""]
    else:
        md += [_missing(r, "metrics/geneval_*.json"), ""]
    return md


def pruned_vs_scratch(r: Inputs) -> list[str]:
    """Section: pruned vs scratch vs base."""
    M, gen, targets, figs = r.M, r.gen, r.targets, r.figs
    md: list[str] = []
    md += ["## Pruned vs scratch vs base", ""]
    bars = [(v, gen[v].get("overall"), (gen[v].get("comp") or {}).get("overall"), "geneval") for v in
            _variants_in_order(targets, P.PER_TARGET_STAGES)
            if v in gen]
    src = f"{benchmark(r)} N = 1 (geneval stage)"
    if not bars:  # fall back to the training stages' quick check
        bars = [(v, (M[v].get("geneval_quick") or {}).get("overall"), None, "quick") for v in
                _variants_in_order(targets, [s for s in P.PER_TARGET_STAGES if s != "prune"])
                if v in M and (M[v].get("geneval_quick") or {}).get("overall") is not None]
        src = "in-stage quick check (quick_eval prompts, N = 1)"
    if bars:
        fig, ax = plt.subplots(figsize=(6, 3))
        xs = range(len(bars))
        ax.bar([x - 0.2 for x in xs], [b[1] or 0 for b in bars], 0.4, label="IID")
        if any(b[2] is not None for b in bars):
            ax.bar([x + 0.2 for x in xs], [b[2] or 0 for b in bars], 0.4, label="comp")
        ax.set_xticks(list(xs), [b[0] for b in bars], rotation=30, fontsize=7)
        ax.set_ylabel("overall")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title(src, fontsize=8)
        fig.tight_layout()
        figs["pruned_vs_scratch.png"] = fig
        cells = [[b[0], b[1], b[2]] if b[3] == "quick" else
                 [b[0], with_interval(r, b[0], 1, None, "iid", b[1]), with_interval(r, b[0], 1, None, "comp", b[2])]
                 for b in bars]
        md += [f"Source: {src}.", "", "![pruned vs scratch vs base](figures/pruned_vs_scratch.png)", "",
               _table(["variant", "IID", "comp"], cells), ""]
    else:
        md += [_missing(r, "metrics/geneval_*.json or geneval_quick of the training stages"), ""]
    return md


def finetune_before_after(r: Inputs) -> list[str]:
    """Section: before / after finetune."""
    M, gen, targets = r.M, r.gen, r.targets
    md: list[str] = []
    md += ["## Pruned models before / after the healing finetune", ""]
    rows = []
    for t in targets:
        f, s, pr = M.get(f"finetune_{t}"), M.get(f"scratch_{t}"), M.get(f"prune_{t}")
        if f or s or pr:
            rows.append([t, (pr or {}).get("source_depth"), ((f or {}).get("geneval_quick_before") or {}).get("overall"),
                         ((f or {}).get("geneval_quick") or {}).get("overall"),
                         ((s or {}).get("geneval_quick") or {}).get("overall"),
                         *(with_interval(r, f"{st}_{t}", 1, None, "iid", (gen.get(f"{st}_{t}") or {}).get("overall"))
                           for st in ("prune", "finetune", "scratch")), (f or {}).get("steps"), (s or {}).get("steps")])
    if rows and not shapes(r):
        md += [f"Quick scores: none for data.source `{r.params['data']['source']}` (the exact evaluator of the "
               "in-stage quick check applies to the shapes world only); GenEval columns from the geneval stage.", ""]
    md += ([_table(["depth", "from depth", "quick: pruned", "quick: finetuned", "quick: scratch", "GenEval: pruned",
                    "GenEval: finetuned", "GenEval: scratch", "finetune steps", "scratch steps"], rows), ""]
           if rows else [_missing(r, "metrics/prune_*, finetune_*, scratch_*"), ""])
    return md


def intervals_note(r: Inputs) -> str:
    return (f"Overall scores: value [95 % interval], stratified bootstrap over prompts ({B_DEFAULT} draws, seed "
            f"{SEED_DEFAULT}; sana_core/geneval/stats.py); a cell without one has no per-prompt results "
            "(geneval/<variant>/…/results.jsonl).")


def claims(r: Inputs) -> list[tuple[str, str, str]]:
    """(claim, A, B): the recipe's comparisons — pruned + finetuned vs compute-matched scratch per target depth, grown
    vs base, SFT vs its input."""
    return ([(f"pruned + finetuned vs scratch at depth {t}", f"finetune_{t}", f"scratch_{t}") for t in r.targets]
            + [("grown vs base", "pretrain_grown", "pretrain_base"), ("SFT vs its input", "sft", "pretrain_grown")])


def comparisons(r: Inputs) -> list[str]:
    """Section: paired differences with intervals and verdicts (N = 1, each split)."""
    md = ["## Comparisons", ""]
    rows, missing = [], []
    for claim, a, b in claims(r):
        for key in ("iid", "comp"):
            sa, sb = (prompt_results(r, v, 1, (r.gen.get(v) or {}).get("judge") or "tiny", key) for v in (a, b))
            if sa is None or sb is None:
                if key == "iid":
                    missing.append(f"{a} vs {b}")
                continue
            try:
                diff, word = paired_difference(sa, sb)
            except ValueError as e:
                rows.append([claim, a, b, key, sa.overall, sb.overall, "–", f"not comparable: {e}"])
                continue
            word = word.replace("A better", f"{a} better").replace("B better", f"{b} better")
            r.comparisons.setdefault(f"{a}_vs_{b}", {})[key] = {**diff.as_dict(), "verdict": word}
            rows.append([claim, a, b, key, sa.overall, sb.overall,
                         f"{diff.value:+.3f} [{diff.lo:+.3f}, {diff.hi:+.3f}]", word])
    if rows:
        md += [f"{benchmark(r)} overall at N = 1; A − B with its 95 % paired stratified-bootstrap interval over the "
               f"shared prompts ({B_DEFAULT} draws, seed {SEED_DEFAULT}); a difference whose interval contains 0 is "
               "\"no difference\".", "",
               _table(["comparison", "A", "B", "split", "A overall", "B overall", "A − B [95 %]", "verdict"], rows),
               ""]
        if missing:
            md += [f"Not evaluated (no per-prompt results of both variants): {', '.join(missing)}.", ""]
    else:
        md += [NOT_RUN.format(what="geneval/<variant>/n1/…/results.jsonl of both variants of "
                              + "; ".join(missing)), ""]
    return md


def growth(r: Inputs) -> list[str]:
    """Section: the growth strategy and what continued pre-training made of it (NaN/inf outcome per strategy; under
    the growth-ablation sweep each experiment's report shows its own strategy)."""
    M, PL = r.M, r.PL
    md: list[str] = []
    md += ["## Growth", ""]
    gm = M.get("grow")
    if gm:
        pg, curve = M.get("pretrain_grown"), [r for r in PL.get("pretrain_grown", []) if "loss" in r]
        losses = [r["loss"] for r in curve if r["loss"] is not None]
        finite = all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses)
        gns = [r["grad_norm"] for r in curve if isinstance(r.get("grad_norm"), (int, float))]
        outcome = ("no (finished)" if pg and finite else
                   "yes: stopped by the NaN guard" if not finite else
                   "pretrain_grown has no metrics: not run, or stopped (NaN guard) — see its log")
        md += [_table(["strategy", "depth", "new blocks", "copied blocks", "init max |diff| vs truncated base",
                       "pretrain_grown steps", "first logged loss", "final loss", "max grad-norm", "non-finite loss",
                       "quick eval"],
                      [[gm.get("strategy"), f"{gm.get('source_depth')} → {gm.get('depth')}", gm.get("n_new_blocks"),
                        gm.get("n_copied_blocks"), gm.get("init_max_abs_diff_vs_truncated"), (pg or {}).get("steps"),
                        losses[0] if losses else None, (pg or {}).get("loss"), max(gns) if gns else None, outcome,
                        ((pg or {}).get("geneval_quick") or {}).get("overall")]]), ""]
    else:
        md += [_missing(r, "metrics/grow.json"), ""]
    return md


def block_importance(r: Inputs) -> list[str]:
    """Section: block importance."""
    M, targets, figs = r.M, r.targets, r.figs
    md: list[str] = []
    md += ["## Block importance", ""]
    imp = M.get("importance")
    if imp and imp.get("bi"):
        bi = imp["bi"]
        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.bar(range(len(bi)), bi, color="tab:blue")
        for t in targets:
            kept = (M.get(f"prune_{t}") or {}).get("kept")
            if kept:
                ax.scatter(kept, [bi[i] for i in kept], marker="v", s=14, label=f"kept at depth {t}", zorder=3)
        ax.set_xlabel("block")
        ax.set_ylabel("BI = 1 − E cos(in, out)")
        ax.set_title(f"block importance of {imp.get('source')} ({len(bi)} blocks)", fontsize=8)
        if any((M.get(f"prune_{t}") or {}).get("kept") for t in targets):
            ax.legend(fontsize=6)
        fig.tight_layout()
        figs["block_importance.png"] = fig
        md += ["![block importance](figures/block_importance.png)", "",
               _table(["block", "BI", "rank"], [[i, b, imp.get("rank", []).index(i) + 1 if i in imp.get("rank", [])
                                                 else None] for i, b in enumerate(bi)]), ""]
    else:
        md += [_missing(r, "metrics/importance.json"), ""]
    return md


def loss_curves(r: Inputs) -> list[str]:
    """Section: loss curves."""
    PL, figs = r.PL, r.figs
    md: list[str] = []
    md += ["## Training loss", ""]
    curves = {k: v for k, v in PL.items() if k.split("_")[0] in {s.split("_")[0] for s in TRAIN_STAGES}
              and not k.startswith("geneval") and any("loss" in r for r in v)}
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3))
        for k, rows_ in curves.items():
            pts = [(r["step"], r["loss"]) for r in rows_ if "loss" in r and r["loss"] is not None
                   and math.isfinite(r["loss"])]
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 20 else None, label=k)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=6)
        fig.tight_layout()
        figs["loss_curves.png"] = fig
        md += ["![training loss](figures/loss_curves.png)", ""]
    else:
        md += [_missing(r, "plots/*.json (training stages)"), ""]
    return md


def compute(r: Inputs) -> list[str]:
    """Section: compute."""
    M, gen, variants = r.M, r.gen, r.variants
    md: list[str] = []
    md += ["## Compute", ""]
    rows = [[k, M[k].get("depth"), M[k].get("steps"), M[k].get("flops")] for k in M
            if isinstance(M[k].get("flops"), (int, float))]
    md += ([_table(["stage", "depth", "steps", "training FLOPs"], rows), ""] if rows
           else [_missing(r, "training FLOPs in metrics/"), ""])
    rows = [[v, gen[v].get("generation_flops_per_image")] for v in variants]
    if rows:
        md += [_table(["variant", "generation FLOPs per image"], rows), ""]
    return md


def judge_quality(r: Inputs) -> list[str]:
    """Section: judge."""
    M, gen, variants = r.M, r.gen, r.variants
    md: list[str] = []
    md += ["## Judge", ""]
    jm = M.get("judge")
    if jm and jm.get("measured") is False:
        md += [f"Judge `{jm.get('judge')}`: pretrained (judge.path), used as is; not measured by the judge stage "
               f"({jm.get('not_measured')}). FLOPs / image: {_fmt(jm.get('flops_per_image'))}.", ""]
    elif jm:
        md += [_table(["judge", "train images", "val images", "val label balance (yes)", "val acc", "val balanced acc",
                       "majority-class acc", "val AUC", "val within-prompt AUC", "FLOPs / image"],
                      [[jm.get("judge"), jm.get("n_train"), jm.get("n_val"), jm.get("val_pos_rate"), jm.get("val_acc"),
                        jm.get("val_balanced_acc"), jm.get("val_majority_acc"), jm.get("val_auc"),
                        jm.get("val_within_prompt_auc"), jm.get("flops_per_image")]]), ""]
    else:
        md += [_missing(r, "metrics/judge.json"), ""]
    rows = [[v, j, sp, a.get("acc"), a.get("balanced_acc"), a.get("pos_rate"), a.get("pred_pos_rate"), a.get("auc"),
             a.get("within_prompt_auc"), a.get("n")]
            for v in variants for j, d in (gen[v].get("judge_accuracy") or {}).items() for sp, a in d.items()]
    if rows:
        md += ["Judge vs the evaluator on every generated candidate (within-prompt AUC: the ranking a knockout uses):",
               "", _table(["variant", "judge", "split", "acc", "balanced acc", "label yes rate", "judge yes rate", "AUC",
                           "within-prompt AUC", "candidates"], rows), ""]
    return md


def sample_grids(r: Inputs) -> list[str]:
    """Section: sample grids."""
    root, M = r.root, r.M
    md: list[str] = []
    md += ["## Samples", ""]
    grids = []
    for stem, d in M.items():
        g = d.get("sample_grid")
        if g and (root / g).is_file():
            grids.append((stem, root / g))
    if grids:
        for stem, p in grids:
            md += [f"**{stem}**", "", f"![{stem}](figures/samples_{stem}.png)", ""]
    else:
        md += [_missing(r, "sample grids named by metrics/*.json"), ""]
    r.grids = grids
    return md

SECTIONS = (geneval_table, geneval_vs_n, comparisons, pruned_vs_scratch, finetune_before_after, growth,
            block_importance, loss_curves, compute, judge_quality, sample_grids)


def report(params: dict, root: Path) -> dict:
    root = Path(root)
    data = collect(root)
    gen = {k[len("geneval_"):]: v for k, v in data["metrics"].items() if k.startswith("geneval_")}
    r = Inputs(params, root, data["metrics"], data["plots"], data["unreadable"], gen, _variant_order(params, gen),
               params["prune"]["targets"])
    md = [f"# {params['report']['title']}", "",
          f"Profile `{params['profile']}`, data.source `{params['data']['source']}`. Generated by "
          "`flows/stages/report.py` from `metrics/` and `plots/`. "
          + ("GenEval-Shapes = GenEval's six tasks scored by the exact rule-based evaluator; " if shapes(r) else
             "GenEval = GenEval's own prompts scored by its official evaluator (Mask2Former + CLIP from "
             "geneval.detector / geneval.clip); ")
          + "N = 1 is plain GenEval (one image per prompt); best-of-N keeps k images per prompt picked by the "
          "judge's knockout tournament.", ""]
    if r.unreadable:
        md += ["**Unreadable inputs** (they exist but do not parse; the sections that need them say so): "
               + "; ".join(f"`{f}` ({err})" for f, err in r.unreadable.items()), ""]
    for section in SECTIONS:
        md += section(r)
    figs, grids = r.figs, r.grids

    # ---- write: figures into a temp folder then renamed; report.md atomically
    def write_figures(tmp: Path):
        for name, fig in figs.items():
            fig.savefig(tmp / name, dpi=110)
            plt.close(fig)
        for stem, p in grids:
            shutil.copyfile(p, tmp / f"samples_{stem}.png")

    atomic_dir(root / FIG, write_figures)
    write_text_atomic(root / OUT_MD, "\n".join(md) + "\n")
    sections = [l[3:] for l in md if l.startswith("## ")]
    not_run = [s for s, body in _sections(md) if any("_not run_" in b for b in body)]
    return {"inputs_unreadable": sorted(r.unreadable), "n_variants_evaluated": len(gen),
            "n_figures": len(figs) + len(grids), "sections": len(sections),
            "sections_not_run": not_run, "report": str(OUT_MD), "intervals": r.intervals,
            "comparisons": r.comparisons}


def _sections(md: list[str]):
    cur, body = None, []
    for l in md:
        if l.startswith("## "):
            if cur:
                yield cur, body
            cur, body = l[3:], []
        elif cur:
            body.append(l)
    if cur:
        yield cur, body


if __name__ == "__main__":
    main("report", report)
    sys.exit(0)
