"""Optimizers: ``build_optimizer`` for adamw / adamw8bit / came / came8bit, plus optimizer-state byte accounting.

``state_bytes(opt)`` measures the bytes of every tensor in ``opt.state`` (shared tensors such as bitsandbytes' qmaps
counted once); ``predicted_state_bytes`` computes the same number from parameter shapes alone, so it can be evaluated
for the paper configs on the meta device.
"""
from __future__ import annotations

import math

import torch

from .came import CAME, CAME8bit, QUANTIZERS, factored_shape, official_dequantize, official_quantize, uses_8bit

OPTIMIZERS = ("adamw", "adamw8bit", "came", "came8bit")
ADAMW8BIT_BLOCK = 256  # bitsandbytes' fixed block size for 8-bit optimizer states
__all__ = ["CAME", "CAME8bit", "OPTIMIZERS", "build_optimizer", "state_bytes", "predicted_state_bytes",
           "factored_shape", "uses_8bit", "official_quantize", "official_dequantize", "QUANTIZERS"]


def build_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, betas=None, eps=None, **kw):
    """Build an optimizer by name.  ``params``: iterable of tensors or param-group dicts.

    * ``adamw``: ``torch.optim.AdamW(foreach=True)``; betas (β1, β2), eps a float.
    * ``adamw8bit``: ``bitsandbytes.optim.AdamW8bit`` (works on CPU with bitsandbytes ≥ 0.49; ``min_8bit_size`` kw,
      bnb default 4096).
    * ``came`` / ``came8bit``: :class:`CAME` / :class:`CAME8bit`; betas (β1, β2, β3), eps (eps1, eps2); came8bit
      accepts ``block_size``, ``min_8bit_size``, ``quantizer``.
    Unknown names or unknown keyword arguments raise ``ValueError`` naming ``optimizer.*`` before anything is built.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {list(OPTIMIZERS)}, got {name!r}")
    allowed = {"adamw": {"amsgrad"}, "adamw8bit": {"min_8bit_size", "optim_bits", "percentile_clipping"},
               "came": {"clip_threshold"}, "came8bit": {"clip_threshold", "block_size", "min_8bit_size", "quantizer"}}
    bad = sorted(set(kw) - allowed[name])
    if bad:
        raise ValueError(f"optimizer.{bad[0]} is not an option of optimizer.name={name!r} "
                         f"(allowed: {sorted(allowed[name])})")
    opt = dict(lr=lr, weight_decay=weight_decay, **kw)
    if betas is not None:
        opt["betas"] = tuple(betas)
    if eps is not None:
        opt["eps"] = tuple(eps) if name.startswith("came") else float(eps)
    if name == "adamw":
        return torch.optim.AdamW(params, foreach=True, **opt)
    if name == "adamw8bit":
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit(params, **opt)
    return (CAME if name == "came" else CAME8bit)(params, **opt)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of all tensors held in ``optimizer.state`` (each distinct tensor once; python scalars count 0)."""
    seen, total = set(), 0
    for st in optimizer.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                key = (v.device, v.data_ptr(), v.numel(), v.dtype) if v.device.type != "meta" else id(v)
                if key not in seen:
                    seen.add(key)
                    total += v.numel() * v.element_size()
    return total


def predicted_state_bytes(name: str, shapes, min_8bit_size: int | None = None, block_size: int = 2048,
                          quantizer: str = "bnb") -> int:
    """Exact optimizer-state bytes from parameter ``shapes`` (all trainable, fp32 params, after the first step).

    ``min_8bit_size`` defaults to 16384 for came8bit (SANA) and 4096 for adamw8bit (bitsandbytes);
    ``block_size``/``quantizer`` apply to came8bit (adamw8bit uses bnb's fixed 256-element blocks).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {list(OPTIMIZERS)}, got {name!r}")
    shapes = [tuple(s) for s in shapes]
    total = 0
    if name == "adamw":  # exp_avg + exp_avg_sq fp32 + a 0-d fp32 step tensor per parameter
        return sum(8 * math.prod(s) + 4 for s in shapes)
    if name == "adamw8bit":
        mins = 4096 if min_8bit_size is None else min_8bit_size
        any8 = False
        for s in shapes:
            n = math.prod(s)
            if n < mins:
                total += 8 * n
            else:
                any8 = True
                total += 2 * n + 8 * -(-n // ADAMW8BIT_BLOCK)
        return total + (2 * 256 * 4 if any8 else 0)  # the shared signed + unsigned dynamic maps
    mins = 16384 if min_8bit_size is None else min_8bit_size
    for s in shapes:
        n = math.prod(s)
        fs = factored_shape(s)
        if fs is None:
            total += 8 * n  # exp_avg + exp_avg_sq
            continue
        total += 8 * (fs[0] + fs[1])  # row/col second moment + row/col instability
        if name == "came8bit" and n > mins:
            total += n + (4 * -(-n // block_size) if quantizer == "bnb" else 8 * -(-fs[0] // block_size))
        else:
            total += 4 * n
    return total
