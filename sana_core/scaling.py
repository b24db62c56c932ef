"""Inference-time scaling: best-k-of-N by a knockout tournament of judge decisions (sana15-method.md §11).

Paper/official script (`tools/inference_scaling/nvila_sana_pick.py`): N candidates per prompt, pair neighbours
(0,1), (2,3), …, the match winner advances, rounds repeat until `pick_number` (4) remain; N and k forced to powers of
two; candidates in `os.listdir` (filesystem) order; each image judged alone in every match (≈ 2N judge calls).

Match rule (`match`), each image judged independently with (yes, p_yes, p_no):
1. answers differ → the "yes" image wins (a VLM first token that is neither yes nor no counts as "no");
2. both yes → the higher p_yes wins;  3. both no → the lower p_no wins;
4. exact tie → the candidate earlier in sorted-id order wins (official: the second file wins a tie — order-dependent).

Our deviations, all for determinism and cost:
- candidates are sorted (`sorted(ids)`) before pairing, never taken in filesystem/input order, so the result does not
  depend on how the caller lists them;
- N not a power of two: a round with m > k candidates plays min(⌊m/2⌋, m − k) matches between sorted neighbours from
  the front and the remaining tail candidates get byes (advance unplayed), so exactly min(k, N) survive; N = k·2^r
  gives the paper's bracket. N ≤ k → all candidates, no judging;
- every candidate is judged once and its decision reused in later rounds (our judges are deterministic, so
  re-judging returns the same numbers): judge calls = candidates that play ≤ N, vs the official 2 × (N − k)
  (one match eliminates one candidate). `flops_table` reports both.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .flops import forward_flops_per_sample
from .judges.base import count_flops


@dataclass(frozen=True)
class Verdict:
    """One candidate's judge result."""

    yes: bool
    p_yes: float
    p_no: float


def _as_verdict(v: Any) -> Verdict:
    if isinstance(v, Verdict):
        return v
    yes, p_yes, p_no = v
    return Verdict(bool(yes), float(p_yes), float(p_no))


def verdicts_from_decide(ids: Sequence[Hashable], decision: tuple) -> dict:
    """{id: Verdict} from a judge's `decide` output (yes [B], p_yes [B], p_no [B]) aligned with `ids`."""
    yes, p_yes, p_no = (torch.as_tensor(x).reshape(-1).tolist() for x in decision)
    if not (len(ids) == len(yes) == len(p_yes) == len(p_no)):
        raise ValueError(f"decisions: {len(yes)} judge results for {len(ids)} candidates")
    return {i: Verdict(bool(a), float(b), float(c)) for i, a, b, c in zip(ids, yes, p_yes, p_no)}


def match(a: Hashable, b: Hashable, va: Verdict, vb: Verdict) -> tuple[Hashable, str]:
    """Winner of a match between a and b, a earlier in sorted order, and the rule that decided it."""
    if va.yes != vb.yes:
        return (a if va.yes else b), "yes beats no"
    if va.yes:
        if va.p_yes != vb.p_yes:
            return (a if va.p_yes > vb.p_yes else b), "both yes: higher p_yes"
    elif va.p_no != vb.p_no:
        return (a if va.p_no < vb.p_no else b), "both no: lower p_no"
    return a, "tie: earlier sorted id"


@dataclass
class Tournament:
    winners: list
    rounds: list = field(default_factory=list)     # per round: [(a, b, winner, rule), …]
    byes: list = field(default_factory=list)       # per round: ids advancing unplayed

    @property
    def n_matches(self) -> int:
        return sum(len(r) for r in self.rounds)

    @property
    def judged(self) -> list:
        """Sorted ids that played at least one match (each judged once here)."""
        return sorted({x for r in self.rounds for a, b, _, _ in r for x in (a, b)})

    @property
    def official_judge_calls(self) -> int:
        return 2 * self.n_matches


def _sorted_ids(candidates: Sequence[Hashable]) -> list:
    ids = list(candidates)
    if len(set(ids)) != len(ids):
        raise ValueError("knockout: candidate ids must be unique")
    try:
        return sorted(ids)
    except TypeError as e:
        raise ValueError(f"knockout: candidate ids must be mutually sortable ({e})") from None


def tournament(candidates: Sequence[Hashable], decisions: Mapping | Sequence, k: int = 4) -> Tournament:
    """Run the knockout (module docstring). `decisions`: {id: Verdict or (yes, p_yes, p_no)}, or a sequence aligned
    with `candidates`. Only the candidates that play need a decision."""
    if int(k) < 1:
        raise ValueError(f"knockout.k: {k} must be ≥ 1")
    if not isinstance(decisions, Mapping):
        decisions = list(decisions)
        if len(decisions) != len(candidates):
            raise ValueError(f"knockout: {len(decisions)} decisions for {len(candidates)} candidates")
        decisions = dict(zip(candidates, decisions))
    alive = _sorted_ids(candidates)
    t = Tournament(winners=[])
    while len(alive) > k:
        n_m = min(len(alive) // 2, len(alive) - k)
        played, nxt = [], []
        for i in range(n_m):
            a, b = alive[2 * i], alive[2 * i + 1]
            for x in (a, b):
                if x not in decisions:
                    raise KeyError(f"knockout: no judge decision for candidate {x!r}")
            w, rule = match(a, b, _as_verdict(decisions[a]), _as_verdict(decisions[b]))
            played.append((a, b, w, rule))
            nxt.append(w)
        t.rounds.append(played)
        t.byes.append(alive[2 * n_m:])
        alive = nxt + alive[2 * n_m:]
    t.winners = alive
    return t


def knockout(candidates: Sequence[Hashable], decisions: Mapping | Sequence, k: int = 4) -> list:
    """The min(k, N) tournament survivors, in sorted-id order."""
    return sorted(tournament(candidates, decisions, k).winners)


def players(n: int, k: int = 4) -> int:
    """How many of n sorted candidates ever play a match (the never-playing ones are a tail of byes); outcome-free."""
    return len(tournament(range(n), {i: Verdict(False, 0.0, 0.0) for i in range(n)}, k).judged) if n > k else 0


def n_list(best_of: Iterable) -> list[int]:
    """The sorted distinct N of a best-of-N curve, always with N = 1 (plain GenEval); ValueError for N < 1."""
    ns = sorted({1, *(int(n) for n in best_of)})
    if ns[0] < 1:
        raise ValueError(f"params: geneval.best_of: N must be ≥ 1, got {list(best_of)}")
    return ns


def select(seeds: list[int], verdicts: dict, n: int, k: int) -> list[int]:
    """Indices (into seeds) of the candidates kept at N = n: all of the first n when n ≤ k, else the k knockout
    survivors over the first n (sorted-seed order). Candidates are nested: best-of-n uses the first n seeds."""
    if n <= k:
        return list(range(n))
    t = tournament(seeds[:n], {s: verdicts[s] for s in seeds[:n]}, k)
    return sorted(seeds.index(s) for s in t.winners)


# ------------------------------------------------------------------------------------------------------ FLOP accounting
def n_matches(n: int, k: int = 4) -> int:
    """Matches in a best-k-of-n knockout: every match eliminates one candidate → max(n − k, 0)."""
    return max(int(n) - int(k), 0)


def sampler_flops_per_image(forward_flops: float, steps: int = 20, cfg: bool = True, decode_flops: float = 0.0) -> float:
    """One image: steps × (2 with CFG) × transformer forward + one decode (Flow-DPM-Solver multistep: one model
    evaluation per step; paper: 20 steps, CFG 4.5)."""
    return float(steps) * (2 if cfg else 1) * float(forward_flops) + float(decode_flops)


def generation_flops_per_image(sampler) -> float:
    """One image of a `sample.Sampler` as configured: transformer forward FLOPs × steps × (2 with CFG) + one decode,
    each measured with FlopCounterMode."""
    shape = sampler.codec.latent_shape(sampler.image_size)
    fwd = forward_flops_per_sample(sampler.transformer, shape, sampler.text.max_length)
    dec = count_flops(sampler.codec.decode, torch.zeros(1, *shape))
    c = sampler.config
    return sampler_flops_per_image(fwd, c.steps, c.guidance_scale > 1.0, dec)


def generation_flops(n: int, flops_per_image: float) -> float:
    """Generating n candidates for one prompt."""
    return int(n) * float(flops_per_image)


def judge_flops(n: int, flops_per_image: float, k: int = 4, scheme: str = "ours") -> float:
    """Judging for one prompt. "ours": every playing candidate judged once; "official": both images of every match
    judged (2 × (n − k) calls; paper Fig.: 2N × 4,518 GFLOPs vs N × 49,140 GFLOPs generation)."""
    if scheme == "ours":
        return players(n, k) * float(flops_per_image)
    if scheme == "official":
        return 2 * n_matches(n, k) * float(flops_per_image)
    raise ValueError(f"judge_flops.scheme: {scheme!r}; choose 'ours' or 'official'")


def flops_table(ns: Sequence[int], gen_flops_per_image: float, judge_flops_per_image: float, k: int = 4) -> list[dict]:
    """Per prompt, for every N: generation FLOPs, judge FLOPs both ways, calls both ways and judge/generation ratios
    (the paper's compute axis for GenEval vs N)."""
    rows = []
    for n in ns:
        g = generation_flops(n, gen_flops_per_image)
        jo, jf = judge_flops(n, judge_flops_per_image, k, "ours"), judge_flops(n, judge_flops_per_image, k, "official")
        rows.append(dict(n=int(n), k=int(k), matches=n_matches(n, k), judge_calls=players(n, k),
                         judge_calls_official=2 * n_matches(n, k), generation_flops=g, judge_flops=jo,
                         judge_flops_official=jf, total_flops=g + jo, total_flops_official=g + jf,
                         judge_ratio=jo / g if g else 0.0, judge_ratio_official=jf / g if g else 0.0))
    return rows


# -------------------------------------------------------------------------------------------------------------- best-of-N
@dataclass
class BestOfN:
    images: np.ndarray            # uint8 [P, min(k, n), H, W, 3], selected candidates in sorted-seed order
    selected: list                # per prompt: the selected seeds
    verdicts: list                # per prompt: {seed: Verdict} for every judged candidate
    tournaments: list             # per prompt: Tournament
    stats: dict


def best_of_n(generate_fn: Callable[[list, list], Any], judge, prompts: Sequence[str],
              metadata: Sequence[Mapping] | None = None, n: int = 4, k: int = 4, seeds: Sequence[int] | None = None,
              batch_size: int = 64, judge_batch_size: int = 64, gen_flops_per_image: float | None = None,
              judge_flops_per_image: float | None = None) -> BestOfN:
    """Best-k-of-n per prompt.

    generate_fn(prompts: list[str], seeds: list[int]) -> uint8 [len, H, W, 3]: one image per (prompt, seed) pair (the
    sampler's batched function; candidates of all prompts × seeds are generated in chunks of `batch_size` pairs).
    Candidate j of every prompt uses seeds[j] (default 0..n−1) and is identified by that seed, so the tournament
    order is the sorted seed order. `metadata[i]` is passed to the judge (the oracle needs it).
    Each candidate that plays is judged once (`judge.decide`, one prompt at a time, chunks of `judge_batch_size`).
    stats: n, k, prompts, generated, judge_calls, judge_calls_official, matches, seconds_generate, seconds_judge, and,
    when the per-image FLOPs are given, the generation/judge FLOPs per prompt both ways."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("best_of_n: no prompts")
    if int(n) < 1 or int(k) < 1:
        raise ValueError(f"best_of_n: n={n} and k={k} must be ≥ 1")
    seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n or len(set(seeds)) != n:
        raise ValueError(f"best_of_n.seeds: need {n} distinct seeds, got {len(seeds)} ({len(set(seeds))} distinct)")
    if metadata is not None and len(metadata) != len(prompts):
        raise ValueError(f"best_of_n.metadata: {len(metadata)} entries for {len(prompts)} prompts")
    if int(batch_size) < 1:
        raise ValueError(f"best_of_n.batch_size: {batch_size} must be ≥ 1")

    pairs = [(p, s) for p in prompts for s in seeds]
    t0 = time.perf_counter()
    chunks = []
    for i in range(0, len(pairs), batch_size):
        ps, ss = zip(*pairs[i:i + batch_size])
        out = generate_fn(list(ps), list(ss))
        out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        if out.ndim != 4 or out.shape[0] != len(ps) or out.shape[-1] != 3 or out.dtype != np.uint8:
            raise ValueError(f"best_of_n: generate_fn returned {out.dtype} {tuple(out.shape)}, expected uint8 "
                             f"[{len(ps)}, H, W, 3]")
        chunks.append(out)
    images = np.concatenate(chunks).reshape(len(prompts), n, *chunks[0].shape[1:])
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    order = np.argsort(seeds, kind="stable")
    n_play = players(n, k)
    play_seeds = [seeds[j] for j in order[:n_play]]               # the never-playing tail needs no judging
    sel_imgs, selected, verdicts, tours = [], [], [], []
    for i, prompt in enumerate(prompts):
        meta = metadata[i] if metadata is not None else None
        v = {}
        if n_play:
            cand = images[i, order[:n_play]]
            dec = [judge.decide(prompt, cand[j:j + judge_batch_size], meta)
                   for j in range(0, len(cand), judge_batch_size)]
            v = verdicts_from_decide(play_seeds, tuple(torch.cat([torch.as_tensor(d[m]) for d in dec])
                                                       for m in range(3)))
        t = tournament(seeds, v, k)
        win = sorted(t.winners)
        selected.append(win)
        verdicts.append(v)
        tours.append(t)
        sel_imgs.append(images[i, [seeds.index(s) for s in win]])
    t_judge = time.perf_counter() - t0

    stats = dict(n=int(n), k=int(k), prompts=len(prompts), generated=len(pairs), judge_calls=n_play * len(prompts),
                 judge_calls_official=2 * n_matches(n, k) * len(prompts), matches=n_matches(n, k) * len(prompts),
                 seconds_generate=round(t_gen, 4), seconds_judge=round(t_judge, 4))
    if gen_flops_per_image is not None and judge_flops_per_image is not None:
        stats.update({f"per_prompt_{key}": val for key, val in
                      flops_table([n], gen_flops_per_image, judge_flops_per_image, k)[0].items()
                      if key.endswith("flops") or key.endswith("official") or key.startswith("judge_ratio")})
    return BestOfN(np.stack(sel_imgs), selected, verdicts, tours, stats)
