"""Depth pruning by block importance (SANA-1.5 §2.4; sana15-method.md §10) and the compute helper
for the equal-compute from-scratch baseline.

:func:`prune` removes the lowest-importance blocks until ``target_depth`` remain, keeping the
survivors in their original order (the paper sorts by BI and drops the least important; 60 → 40,
30, 20). **Ties** are broken by index: among blocks with equal BI the one with the *higher* index
is removed first (so, e.g., the exact-identity blocks appended by growth, which all have BI = 0,
are removed from the end backwards). The pruned model is a new model; the source is untouched;
``num_layers`` is re-registered so ``save_pretrained``/``from_pretrained`` round-trips the depth.
Recovery (the paper's 100-step fine-tune) is the training loop's job.
"""
from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Mapping, Sequence

from .surgery_io import check_depth, with_blocks


def _scores(importance, n: int) -> list[float]:
    if isinstance(importance, Mapping) and "bi" in importance:
        importance = importance["bi"]
    if isinstance(importance, Mapping):
        if sorted(importance) != list(range(n)):
            raise ValueError(f"importance must have one score per block 0..{n - 1}, got keys {sorted(importance)}")
        importance = [importance[i] for i in range(n)]
    scores = [float(s) for s in importance]
    if len(scores) != n:
        raise ValueError(f"importance has {len(scores)} scores but the model has {n} blocks")
    if any(math.isnan(s) for s in scores):
        raise ValueError(f"importance contains NaN: {scores}")
    return scores


def kept_blocks(importance: Sequence[float], target_depth: int) -> list[int]:
    """Indices (ascending) of the ``target_depth`` most important blocks; ties drop the higher index first."""
    n = len(importance)
    if isinstance(target_depth, bool) or not isinstance(target_depth, int) or not 0 < target_depth < n:
        raise ValueError(f"prune.targets: target depth must be an int in [1, {n - 1}] for a {n}-block model, "
                         f"got {target_depth!r}")
    drop_order = sorted(range(n), key=lambda i: (importance[i], -i))
    return sorted(drop_order[n - target_depth:])


def prune(model, importance, target_depth: int):
    """Return ``(new_model, kept_indices)`` with only the ``target_depth`` most important blocks.

    ``importance``: the dict from :func:`sana_core.importance.block_importance` (its ``"bi"``), a
    sequence of per-block scores, or a mapping ``{block index: score}``. Errors (before any copy):
    target ≥ depth or ≤ 0 → ValueError naming ``prune.targets``; wrong number of scores or NaN.
    """
    n = check_depth(model)
    if isinstance(target_depth, bool) or not isinstance(target_depth, int) or not 0 < target_depth < n:
        raise ValueError(f"prune.targets: target depth must be an int in [1, {n - 1}] for a {n}-block model, "
                         f"got {target_depth!r}")
    keep = kept_blocks(_scores(importance, n), target_depth)
    new = with_blocks(model, [copy.deepcopy(model.transformer_blocks[i]) for i in keep])
    new.train(model.training)
    return new, keep


def scratch_steps_for_compute(flops_budget: float, flops_per_sample: float, batch_size: int) -> int:
    """Optimizer steps a from-scratch run may take within ``flops_budget`` training FLOPs.

    steps = ⌊flops_budget / (flops_per_sample · batch_size)⌋ — the largest step count whose compute
    does not exceed the budget — evaluated exactly in rational arithmetic, except that a quotient
    less than min(1e-9·q, 1e-3) steps below an integer rounds up to it (so a budget summed in floating
    point to ``n · flops_per_sample · batch_size`` gives back ``n``). ``flops_per_sample`` is the training
    cost of one sample (forward + backward) for the baseline's architecture, as counted by the
    training loop; the budget is the lineage's summed training FLOPs (base + grown + SFT + finetune).
    """
    for name, v in (("flops_budget", flops_budget), ("flops_per_sample", flops_per_sample)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite positive number, got {v!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    q = Fraction(flops_budget) / (Fraction(flops_per_sample) * batch_size)
    steps = math.floor(q)
    tol = min(Fraction(1, 10**9) * q, Fraction(1, 1000))  # float round-off just below an integer, < 1/1000 step
    if q != steps and (steps + 1) - q <= tol:
        steps += 1
    return steps
