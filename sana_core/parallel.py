"""Inference work split across the processes of a run (best-of-N generation and judging), on accelerate.

Under `accelerate launch` / torchrun (gloo on CPU, NCCL on GPUs) `map_split(fn, units)` gives each process a contiguous
share of `units` (accelerate's `PartialState.split_between_processes`), runs `fn` on it and returns every process the
full list of results in the original order (`accelerate.utils.gather_object`); in a plain single process it is
`[fn(u) for u in units]` and accelerate initialises nothing.

Identical results for any number of processes: a unit must be computed exactly as the one-process run computes it.
An image depends only on its (prompt, seed) (per-sample seeded noise, sample.py) but its float rounding also depends
on the batch it ran in, so a unit is a run of whole sampler batches: `prompt_units` cuts the prompt list into blocks
of u prompts, u·N a multiple of the sampler's batch B (u = B / gcd(B, N)), so the (prompt, seed) pairs of a block fill
exactly the batches a single `generate_grid` over all prompts would form. Text embeddings do not depend on the batch
(MiniLM measured bit-identical at 1, 5, 8 and 40 prompts per call) and judges see one prompt at a time. Each
process must run with the same thread count as the reference run (CPU kernels round differently at 1 vs 2 threads).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence


def state():
    """accelerate's PartialState (a no-op single process unless launched under accelerate / torchrun); without
    CUDA it is told `cpu=True`, which is what makes accelerate use gloo between CPU processes."""
    import torch
    from accelerate import PartialState
    return PartialState(cpu=not torch.cuda.is_available())


def num_processes() -> int:
    import os
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1                           # plain run: do not touch accelerate's global state
    return state().num_processes


def is_main_process() -> bool:
    return num_processes() == 1 or state().is_main_process


def map_split(fn: Callable[[Any], Any], units: Sequence) -> list:
    """[fn(u) for u in units], the units split contiguously between processes; results on every process, in order."""
    units = list(units)
    if num_processes() == 1:
        return [fn(u) for u in units]
    from accelerate.utils import gather_object
    st = state()
    with st.split_between_processes(units) as mine:
        out = [fn(u) for u in mine]
    return gather_object(out)


def prompt_units(items: Sequence, n_per_prompt: int, batch_size: int) -> list[list]:
    """`items` (one per prompt) in blocks of u = batch_size / gcd(batch_size, n_per_prompt) prompts: a block's
    u·n_per_prompt (prompt, seed) pairs are whole batches of `batch_size` pairs, the same batches a single pass over
    all prompts forms (the last block may end in a partial batch, as the single pass does)."""
    if n_per_prompt < 1 or batch_size < 1:
        raise ValueError(f"prompt_units: n_per_prompt={n_per_prompt} and batch_size={batch_size} must be ≥ 1")
    u = batch_size // math.gcd(batch_size, n_per_prompt)
    items = list(items)
    return [items[i:i + u] for i in range(0, len(items), u)]
