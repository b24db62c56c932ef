"""GenEval's sampling procedure: which noise seed each image gets, in one place for every caller (the geneval stage,
the stages' quick eval, `sana15 geneval`, bench/geneval_diagnose.py).

GenEval's generator (`generation/diffusers_generate.py`) calls `seed_everything(seed)` before every prompt and then
draws that prompt's n images from the reseeded stream, so image k of EVERY prompt starts from the same noise. We draw
the same way with one generator per image (an image depends only on its (prompt, seed), sana_core/sample.py): image
k of each prompt, k < n, uses seed `seed + k`. (Another rule, e.g. 1000·prompt + k, draws other noises and so another
score of the same model — docs/results.md §10 — hence one rule for every number we compare.)

`generate_images` runs the prompts in blocks of whole sampler batches (`parallel.prompt_units`): the same batches a
single pass over all prompts forms, whatever the block size, so every caller gets bit-identical pixels for the same
(model, prompts, seed, n, batch size) — float rounding depends on the batch an image ran in.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..parallel import prompt_units


def image_seeds(seed: int, n: int) -> list[int]:
    """The seeds of a prompt's n images, the same for every prompt: [seed, seed + 1, …, seed + n − 1]."""
    if n < 1:
        raise ValueError(f"image_seeds: n={n} images per prompt must be ≥ 1")
    return [int(seed) + k for k in range(int(n))]


def generate_images(sampler, metas: Sequence[dict], seed: int, n: int) -> Iterator[tuple[int, list[dict], np.ndarray]]:
    """(index of the block's first prompt, the block's metadata, uint8 [u, n, H, W, 3]) per block of prompts; image
    [p, k] is prompt p with seed `seed + k` (`image_seeds`), sampled with the sampler's own config."""
    seeds = image_seeds(seed, n)
    start = 0
    for block in prompt_units(list(metas), n, sampler.config.batch_size):
        yield start, block, sampler.generate_grid([m["prompt"] for m in block], seeds)
        start += len(block)


def all_images(sampler, metas: Sequence[dict], seed: int, n: int) -> np.ndarray:
    """Every prompt's n images at once: uint8 [P, n, H, W, 3] (`generate_images` concatenated)."""
    return np.concatenate([imgs for _, _, imgs in generate_images(sampler, metas, seed, n)])
