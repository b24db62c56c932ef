"""Bootstrap 95 % intervals of GenEval scores over prompts, and the paired difference of two variants.

GenEval's overall score is the unweighted mean over tasks of each task's accuracy (share of correct images,
`evaluate.summary`). What varies between benchmarks of the same size is the prompts, so the interval resamples
prompts: a **stratified bootstrap** — within each task its n_t prompts are drawn n_t times with replacement (every
task keeps its size, as the benchmark does), all images of a prompt move together (they share the prompt's
difficulty), the task accuracies and their mean are recomputed; the interval is the 2.5 / 97.5 % percentiles of B
such overall scores. The **paired** difference of two variants scored on the same prompts resamples the same prompt
indices for both, so what the two share (a prompt every model fails) cancels; its verdict is "A better" / "B better"
when the interval excludes 0 and "no difference" when it contains it.

Fixed seed, so a report is reproducible; n_boot = 2000 draws, vectorised over B with numpy (milliseconds for GenEval's
553 prompts).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

B_DEFAULT = 2000
SEED_DEFAULT = 0
LEVEL_DEFAULT = 0.95


@dataclass(frozen=True)
class PromptScores:
    """One variant's GenEval results per prompt: prompt keys (the layout's prompt folder names), prompt texts, tags,
    correct images and images per prompt."""
    keys: tuple
    prompts: tuple
    tags: np.ndarray
    correct: np.ndarray
    images: np.ndarray

    @property
    def overall(self) -> float:
        return float(np.mean([self.correct[self.tags == t].sum() / self.images[self.tags == t].sum()
                              for t in dict.fromkeys(self.tags.tolist())]))


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval."""
    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    def as_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


def prompt_scores(rows: Iterable[Mapping]) -> PromptScores:
    """Per-prompt counts from per-image rows (GenEval's results.jsonl: `filename` …/<prompt folder>/samples/<i>.png,
    `tag`, `prompt`, `correct`), prompts in folder order."""
    per: dict[str, list] = {}
    for i, r in enumerate(rows):
        for k in ("filename", "tag", "prompt", "correct"):
            if k not in r:
                raise ValueError(f"results row {i}: no {k!r}")
        key = Path(r["filename"]).parent.parent.name
        p = per.setdefault(key, [r["prompt"], r["tag"], 0, 0])
        if (p[0], p[1]) != (r["prompt"], r["tag"]):
            raise ValueError(f"results row {i}: prompt folder {key} holds two prompts ({p[0]!r}, {r['prompt']!r})")
        p[2] += bool(r["correct"])
        p[3] += 1
    if not per:
        raise ValueError("prompt_scores: no results rows")
    keys = sorted(per, key=lambda k: (len(k), k))
    return PromptScores(tuple(keys), tuple(per[k][0] for k in keys), np.array([per[k][1] for k in keys]),
                        np.array([per[k][2] for k in keys], float), np.array([per[k][3] for k in keys], float))


def read_results(path) -> PromptScores:
    """`prompt_scores` of a results.jsonl file."""
    import json
    path = Path(path)
    try:
        return prompt_scores(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def draws(tags: np.ndarray, n_boot: int = B_DEFAULT, seed: int = SEED_DEFAULT) -> list[np.ndarray]:
    """Per task (in order of first appearance) the resampled prompt indices [n_boot, n_t], drawn within the task."""
    if n_boot < 1:
        raise ValueError(f"bootstrap: n_boot={n_boot} draws must be ≥ 1")
    rng = np.random.default_rng(seed)
    out = []
    for t in dict.fromkeys(np.asarray(tags).tolist()):
        members = np.flatnonzero(np.asarray(tags) == t)
        out.append(members[rng.integers(0, len(members), size=(n_boot, len(members)))])
    return out


def resampled_overall(s: PromptScores, idx: list[np.ndarray]) -> np.ndarray:
    """[n_boot] overall scores: per draw, each task's accuracy over its resampled prompts, averaged over tasks."""
    return np.mean([s.correct[i].sum(1) / s.images[i].sum(1) for i in idx], axis=0)


def _interval(value: float, boot: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"bootstrap: level={level} must be in (0, 1)")
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(value), float(lo), float(hi))


def bootstrap_overall(s: PromptScores, n_boot: int = B_DEFAULT, seed: int = SEED_DEFAULT,
                      level: float = LEVEL_DEFAULT) -> Interval:
    """The overall score with its stratified-bootstrap interval over prompts."""
    return _interval(s.overall, resampled_overall(s, draws(s.tags, n_boot, seed)), level)


def verdict(diff: Interval, a: str = "A", b: str = "B") -> str:
    """"<a> better" / "<b> better" when the interval of a − b excludes 0, else "no difference"."""
    if diff.lo > 0:
        return f"{a} better"
    if diff.hi < 0:
        return f"{b} better"
    return "no difference"


def paired_difference(a: PromptScores, b: PromptScores, n_boot: int = B_DEFAULT, seed: int = SEED_DEFAULT,
                      level: float = LEVEL_DEFAULT) -> tuple[Interval, str]:
    """overall(a) − overall(b) with its paired stratified-bootstrap interval (the same prompt indices resampled for
    both) and the verdict ("A better" / "B better" / "no difference"). Both must hold the same prompts."""
    if a.keys != b.keys or a.prompts != b.prompts or not np.array_equal(a.tags, b.tags):
        only = sorted(set(a.prompts) ^ set(b.prompts))[:3]
        raise ValueError(f"paired_difference: the two variants were scored on different prompts ({len(a.keys)} vs "
                         f"{len(b.keys)}{'; e.g. ' + repr(only) if only else ', other order'})")
    idx = draws(a.tags, n_boot, seed)
    diff = _interval(a.overall - b.overall, resampled_overall(a, idx) - resampled_overall(b, idx), level)
    return diff, verdict(diff)
