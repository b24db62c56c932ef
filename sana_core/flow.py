"""Rectified-flow maths used by SANA / SANA-1.5 training (sana15-method.md §7).

Paper/code recipe (NVlabs/Sana `gaussian_diffusion.py`, `respace.py`):

* u = sigmoid(N(logit_mean, logit_std)) per sample (SD3 "logit_normal" density), mean 0, std 1.
* shifted noise level σ' = s·σ/(1 + (s−1)·σ) with s = flow_shift = 3.0 (same map as sampling).
* x_t = (1 − σ')·x0 + σ'·ε, ε ~ N(0, I); target (flow velocity) ε − x0.
* loss = squared error averaged over C, H, W, then over the batch; no loss weighting.
* caption dropout p = 0.1 per sample to the null embedding (``""``), keeping the prompt's attention mask.
* the model sees t = σ'·1000.

Deviations (documented choices):

* SANA draws an integer index i = floor(u·1000) and SanaMS truncates the model timestep to an integer.
  We keep σ continuous and pass the float σ'·1000 (as diffusers' Sana training scripts and SanaPipeline do),
  so the noise level and the timestep the model sees agree exactly. ``model_timestep(..., integer=True)`` (train
  config ``integer_timestep``) reproduces SanaMS's truncation of the model input; the noise level itself stays
  continuous (SANA also quantises it to i/1000 before the shift). Note: DPMSolver sampling (sana_core.sample) feeds
  integer-valued timesteps; at 1000 levels the difference is ≤ 1/1000 of the range.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

TIMESTEP_SCALE = 1000.0


def logit_normal(n: int, mean: float = 0.0, std: float = 1.0, *, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    """u = sigmoid(N(mean, std)), shape (n,), float32 in (0, 1)."""
    z = torch.randn(n, generator=generator, device=device, dtype=torch.float32)
    return torch.sigmoid(z * std + mean)


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3/SANA time shift σ' = s·σ / (1 + (s−1)·σ): monotone, fixes 0 and 1, s > 1 moves mass to noise."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def unshift_sigma(sigma_shifted: torch.Tensor, shift: float) -> torch.Tensor:
    """Inverse of :func:`shift_sigma`: σ = σ' / (s − (s−1)·σ')."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return sigma_shifted / (shift - (shift - 1.0) * sigma_shifted)


def sample_sigmas(n: int, *, shift: float = 3.0, logit_mean: float = 0.0, logit_std: float = 1.0,
                  generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Training noise levels: shifted logit-normal σ', shape (n,)."""
    return shift_sigma(logit_normal(n, logit_mean, logit_std, generator=generator, device=device), shift)


def _bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim)) if sigma.ndim else sigma


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 − σ)·x0 + σ·ε; σ is a scalar or one value per sample."""
    s = _bcast(sigma, x0)
    return (1.0 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Flow-matching target dx/dσ = ε − x0."""
    return noise - x0


def flow_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Unweighted MSE: mean over all non-batch dims (SANA's ``mean_flat``), then over the batch."""
    err = (pred.float() - target.float()).pow(2)
    return err.flatten(1).mean(1).mean()


def model_timestep(sigma: torch.Tensor, *, integer: bool = False) -> torch.Tensor:
    """Timestep fed to the transformer: σ·1000 (float, diffusers); ``integer=True`` truncates like SanaMS."""
    t = sigma * TIMESTEP_SCALE
    return t.floor() if integer else t


def drop_captions(emb: torch.Tensor, null_emb: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Replace the caption embedding of samples where ``drop`` is True by the null embedding.

    ``null_emb`` is [L, C] (or [1, L, C]); the prompt's attention mask is kept unchanged by the caller (SANA's
    ``CaptionEmbedder.token_drop`` replaces only the caption tensor).
    """
    null_emb = null_emb.reshape(1, *emb.shape[1:]).to(emb)
    return torch.where(drop.reshape(-1, 1, 1), null_emb, emb)


def euler_integrate(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x1: torch.Tensor,
                    sigmas: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Integrate dx/dσ = v(x, σ) with explicit Euler along ``sigmas`` (e.g. 1 → 0): x ← x + (σ_next − σ)·v."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).tolist()
    x = x1
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (s_next - s) * velocity(x, torch.tensor(s, dtype=x.dtype))
    return x


def sampling_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    """Uniform grid 1 → 0 with ``steps`` intervals, then shifted (SANA's ``time_uniform_flow`` + flow_shift)."""
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def draw_flow_noise(n: int, sample_shape: Sequence[int], *, generator: torch.Generator, shift: float = 3.0,
                    logit_mean: float = 0.0, logit_std: float = 1.0, caption_dropout: float = 0.0):
    """Draw all randomness of one (global) batch from ``generator`` in a fixed order: σ' (n,), ε (n, *shape),
    caption-drop flags (n,) bool.

    Drawing the whole global batch on every rank from the same generator and slicing it keeps a data-parallel run
    identical to a single process with the same global batch.
    """
    sigma = sample_sigmas(n, shift=shift, logit_mean=logit_mean, logit_std=logit_std, generator=generator)
    noise = torch.randn((n, *sample_shape), generator=generator, dtype=torch.float32)
    drop = torch.rand(n, generator=generator) < caption_dropout
    return sigma, noise, drop


def flow_training_inputs(x0: torch.Tensor, emb: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                         drop: torch.Tensor | None = None, null_emb: torch.Tensor | None = None,
                         integer_timestep: bool = False):
    """(x_t, model timestep, target ε − x0, caption embedding after dropout) for one batch."""
    sigma, noise = sigma.to(x0), noise.to(x0)
    if drop is not None and bool(drop.any()):
        if null_emb is None:
            raise ValueError("caption dropout needs a null embedding (data has none)")
        emb = drop_captions(emb, null_emb, drop.to(emb.device))
    return (interpolate(x0, noise, sigma), model_timestep(sigma, integer=integer_timestep),
            velocity_target(x0, noise), emb)
