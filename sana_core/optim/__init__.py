"""Optimizers: ``build_optimizer`` (the one name → optimizer dispatch) for adamw / adamw8bit / came / came8bit,
plus optimizer-state byte accounting.

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
__all__ = ["CAME", "CAME8bit", "OPTIMIZERS", "build_optimizer", "check_optimizer_args", "optimizer_class",
           "optimizer_options", "state_bytes", "predicted_state_bytes",
           "factored_shape", "uses_8bit", "official_quantize", "official_dequantize", "QUANTIZERS"]


def optimizer_class(name: str) -> type:
    """The optimizer class of ``name`` (one of :data:`OPTIMIZERS`); ValueError naming ``optimizer.name`` otherwise."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {list(OPTIMIZERS)}, got {name!r}")
    if name == "adamw":
        return torch.optim.AdamW
    if name == "adamw8bit":
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit
    return CAME if name == "came" else CAME8bit


def optimizer_options(name: str) -> set[str]:
    """Keyword arguments ``build_optimizer(name, ...)`` accepts besides lr / weight_decay: the constructor's own
    keyword parameters (``fused`` / ``foreach`` are chosen here, not configured)."""
    import inspect
    sig = inspect.signature(optimizer_class(name).__init__).parameters
    return {k for k, p in sig.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {
        "self", "params", "lr", "weight_decay", "fused", "foreach"}


def build_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, **kw) -> torch.optim.Optimizer:
    """Build an optimizer by name — the one place the project turns a name into an optimizer (``sana_core.train``,
    the benches and the tests all come here).  ``params``: iterable of tensors or param-group dicts.

    * ``adamw``: ``torch.optim.AdamW(fused=True)`` (torch's defaults betas (0.9, 0.999), eps 1e-8; the fused kernel
      is the same algorithm, faster on CPU and GPU — docs/benchmarks.md); on the meta device, which has no fused
      kernel, ``foreach`` (same state layout, for byte accounting).
    * ``adamw8bit``: ``bitsandbytes.optim.AdamW8bit`` (works on CPU with bitsandbytes >= 0.49; ``min_8bit_size``,
      bnb default 4096).
    * ``came`` / ``came8bit``: :class:`CAME` / :class:`CAME8bit`; betas (b1, b2, b3), eps (eps1, eps2); came8bit
      accepts ``block_size``, ``min_8bit_size``, ``quantizer``.
    ``kw`` are the constructor's keyword arguments (:func:`optimizer_options`); lists (YAML) become tuples. Unknown
    names or unknown keyword arguments raise ``ValueError`` naming ``optimizer.<key>`` before anything is built.
    """
    cls = optimizer_class(name)
    bad = sorted(set(kw) - optimizer_options(name))
    if bad:
        raise ValueError(f"optimizer.{bad[0]} is not an option of optimizer.name={name!r} "
                         f"(allowed: {sorted(optimizer_options(name))}; lr / weight_decay have their own keys)")
    opt = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items() if v is not None}
    if "eps" in opt and not name.startswith("came"):
        opt["eps"] = float(opt["eps"])
    params = list(params)
    if name == "adamw":
        tensors = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
        opt["fused" if all(t.device.type != "meta" for t in tensors) else "foreach"] = True
    return cls(params, lr=lr, weight_decay=weight_decay, **opt)


def check_optimizer_args(name: str, args: dict, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
    """Check ``args`` for ``build_optimizer(name, ..., **args)`` before any compute: names against
    :func:`optimizer_options`, values by building the optimizer on a 2x2 dummy parameter and stepping it once (torch's
    AdamW only unpacks betas in ``step``). ValueError ``optimizer.<key>: ...`` naming the offending key."""
    bad = sorted(set(args) - optimizer_options(name))
    if bad:
        raise ValueError(f"optimizer.{bad[0]}: not an argument of optimizer {name!r} "
                         f"(allowed: {sorted(optimizer_options(name))}; lr / weight_decay have their own keys)")
    if not args:
        return
    dummy = torch.nn.Parameter(torch.zeros(2, 2))
    dummy.grad = torch.ones(2, 2)
    try:
        build_optimizer(name, [dummy], lr=max(lr, 1e-8), weight_decay=weight_decay, **args).step()
    except (ValueError, TypeError, RuntimeError) as e:
        key = next((k for k in args if k in str(e)), next(iter(args)))
        raise ValueError(f"optimizer.{key}: {e}") from e


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
