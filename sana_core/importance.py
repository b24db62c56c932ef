"""Block importance (SANA-1.5 §2.4, Eq. 3, after Minitron/ShortGPT; sana15-method.md §10).

    BI_i = 1 − E_(X,t)[ cos(X_(i,t), X_(i+1,t)) ]

where X_(i,t) is the input of block i and X_(i+1,t) its output at timestep t. Choices the paper
leaves open, made here and recorded in the result:

* **Per-token cosine** over the hidden dim (Minitron/ShortGPT), averaged over tokens, batch,
  calibration prompts and timesteps with equal weight per (prompt, timestep, token).
* **CFG off**: only the conditional branch (prompt embedding + its mask) is run; the unconditional
  half of a CFG batch is not part of the statistic.
* **Inputs**: x_t = (1 − σ)·x0 + σ·ε (the training interpolation, sana15-method.md §7) with x0
  supplied by the caller (e.g. latents of ground-truth renders of the calibration prompts) and ε
  drawn once per calibration sample from a generator seeded with ``seed`` (the same ε at every σ,
  independent of ``batch_size``). The paper probably used the model's own sampling trajectory; we
  use noised reference latents so BI does not depend on the sampler — documented deviation.
* **Timesteps**: the caller passes σ ∈ [0, 1], normally the sampler's grid
  (:func:`sampler_sigmas`, = diffusers' ``DPMSolverMultistepScheduler(flow_shift=s,
  use_flow_sigmas=True)``: 20 steps, shift 3). The model receives ``σ·1000`` as a float
  (diffusers does not truncate to an integer as SanaMS does).
* Numerics: 1 − cos is computed as ½‖x̂ − ŷ‖² on unit-normalised float64 vectors (identical
  mathematically, free of cancellation near cos = 1), so an exact identity block has BI = 0 exactly.

Statistics are gathered with forward hooks on ``transformer_blocks`` under ``torch.no_grad()`` in
eval mode; hooks are always removed and the training mode restored, even on exceptions.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .atomic import atomic_file
from .flow import interpolate, model_timestep, sampling_sigmas
from .surgery_io import check_depth


def sampler_sigmas(steps: int = 20, shift: float = 3.0) -> list[float]:
    """σ's at which a ``steps``-step flow sampler evaluates the model (noise → data, the final σ=0 excluded).

    t_i = 1 − i/steps, σ_i = s·t_i / (1 + (s − 1)·t_i), i = 0 … steps−1 (sana15-method.md §6;
    :func:`sana_core.flow.sampling_sigmas` without its last point).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"importance.steps must be a positive int, got {steps!r}")
    if not shift > 0:
        raise ValueError(f"importance.shift must be > 0, got {shift!r}")
    return sampling_sigmas(steps, shift)[:-1].tolist()


def token_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 − cos(x, y) per token over the last dim, as ½‖x̂ − ŷ‖² in float64; in [0, 2]."""
    xh = F.normalize(x.double(), dim=-1)
    yh = F.normalize(y.double(), dim=-1)
    return (0.5 * (xh - yh).pow(2).sum(-1)).clamp_(0.0, 2.0)


def _validate(model, calib, timesteps, batch_size, n_buckets):
    for key in ("emb", "x0"):
        if key not in calib:
            raise ValueError(f"importance.calib.{key} missing (calibration needs 'emb', 'x0' and optional 'mask')")
    emb, x0, mask = calib["emb"], calib["x0"], calib.get("mask")
    cfg = model.config
    if emb.ndim != 3 or emb.shape[-1] != cfg.caption_channels:
        raise ValueError(f"importance.calib.emb must be [P, L, {cfg.caption_channels}], got {tuple(emb.shape)}")
    p = emb.shape[0]
    if p == 0:
        raise ValueError("importance.calib.emb is empty (no calibration prompts)")
    if x0.ndim != 4 or x0.shape[0] != p or x0.shape[1] != cfg.in_channels:
        raise ValueError(f"importance.calib.x0 must be [{p}, {cfg.in_channels}, H, W], got {tuple(x0.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(emb.shape[:2]):
        raise ValueError(f"importance.calib.mask must be {tuple(emb.shape[:2])}, got {tuple(mask.shape)}")
    sig = [float(s) for s in timesteps]
    if not sig or any(not 0.0 <= s <= 1.0 for s in sig):
        raise ValueError(f"importance.timesteps must be a non-empty list of σ in [0, 1], got {sig}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"importance.batch_size must be a positive int, got {batch_size!r}")
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 1:
        raise ValueError(f"importance.n_buckets must be a positive int, got {n_buckets!r}")
    return emb, x0, mask, sig


def block_importance(model, calib: Mapping[str, torch.Tensor], timesteps: Sequence[float],
                     batch_size: int = 16, seed: int = 0, n_buckets: int = 4) -> dict:
    """Block importance of every transformer block; returns a JSON-serialisable dict.

    ``calib``: ``{"emb": [P, L, caption_channels], "mask": [P, L] (1 = token, optional),
    "x0": [P, in_channels, H, W]}``; ``timesteps``: σ values in [0, 1].

    Result keys: ``bi`` (per block, averaged over all σ), ``per_timestep`` (``sigmas`` and ``bi``
    [block][σ]), ``buckets`` (``n_buckets`` equal-width σ intervals of [0, 1], each with ``lo``,
    ``hi``, the ``sigmas`` that fell in it and per-block ``bi``, or None when empty), plus the
    settings (``n_prompts``, ``n_tokens``, ``seed``, ``cfg``, ``x_t``).
    """
    n_blocks = check_depth(model)
    emb, x0, mask, sig = _validate(model, calib, timesteps, batch_size, n_buckets)
    ref = next(model.parameters())
    dev, dt = ref.device, ref.dtype
    P = emb.shape[0]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)

    sums = torch.zeros(n_blocks, len(sig), dtype=torch.float64)
    counts = torch.zeros(len(sig), dtype=torch.float64)
    state = {"j": 0}

    def hook(i):
        def f(_mod, args, out):
            sums[i, state["j"]] += token_dissimilarity(args[0], out).sum().cpu()
        return f

    was_training = model.training
    handles = []
    try:
        for i, blk in enumerate(model.transformer_blocks):
            handles.append(blk.register_forward_hook(hook(i)))
        model.eval()
        with torch.no_grad():
            for j, s in enumerate(sig):
                state["j"] = j
                for a in range(0, P, batch_size):
                    sl = slice(a, a + batch_size)
                    xt = interpolate(x0[sl].float(), eps[sl], torch.tensor(s)).to(dev, dt)
                    b = xt.shape[0]
                    m = None if mask is None else mask[sl].to(dev)
                    out = model(xt, emb[sl].to(dev, dt), model_timestep(torch.full((b,), s, device=dev, dtype=dt)),
                                encoder_attention_mask=m, return_dict=False)[0]
                    p = model.config.patch_size
                    counts[j] += b * (out.shape[-2] // p) * (out.shape[-1] // p)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    per_t = sums / counts  # [block, σ]
    bi = per_t.mean(1)
    buckets = []
    for k in range(n_buckets):
        lo, hi = k / n_buckets, (k + 1) / n_buckets
        idx = [j for j, s in enumerate(sig) if lo <= s < hi or (k == n_buckets - 1 and s == 1.0)]
        buckets.append({"lo": lo, "hi": hi, "sigmas": [sig[j] for j in idx],
                        "bi": per_t[:, idx].mean(1).tolist() if idx else None})
    return {
        "bi": bi.tolist(),
        "per_timestep": {"sigmas": sig, "bi": per_t.tolist()},
        "buckets": buckets,
        "n_blocks": n_blocks,
        "n_prompts": P,
        "n_tokens": int(x0.shape[-2] // model.config.patch_size * (x0.shape[-1] // model.config.patch_size)),
        "seed": seed,
        "cfg": "off (conditional branch only)",
        "x_t": "(1-sigma)*x0 + sigma*eps, x0 from caller, eps seeded once per calibration sample",
        "metric": "1 - mean per-token cosine(block input, block output)",
    }


def plot_importance(result: Mapping, path: str | os.PathLike) -> Path:
    """Bar chart (PNG) of per-block BI: one bar per σ bucket plus the overall BI as a black marker.

    Uses matplotlib's Agg canvas directly (no global backend change); written via temp file + rename.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bi = list(result["bi"])
    n = len(bi)
    buckets = [b for b in result.get("buckets", []) if b.get("bi") is not None]
    fig = Figure(figsize=(max(6.0, 0.35 * n + 2), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(buckets))
    for k, b in enumerate(buckets):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(n)]
        close = "]" if b["hi"] >= 1.0 else ")"
        ax.bar(xs, b["bi"], width=width, label=f"σ∈[{b['lo']:.2f},{b['hi']:.2f}{close} n={len(b['sigmas'])}")
    ax.plot(range(n), bi, "k_", markersize=12, markeredgewidth=2, linestyle="none", label="overall")
    ax.set_xlabel("block index")
    ax.set_ylabel("BI = 1 − cos(in, out)")
    ax.set_title(f"Block importance ({n} blocks, {result.get('n_prompts', '?')} prompts)")
    ax.set_xticks(range(n))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_file(path, lambda tmp: fig.savefig(tmp, format="png"))
