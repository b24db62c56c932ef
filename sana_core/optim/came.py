"""CAME and CAME-8bit (SANA-1.5 §2.3; NVlabs/Sana ``diffusion/utils/optimizer.py``).

CAME (Luo et al., 2023) is Adafactor with a confidence-guided update.  Per parameter, gradient ``g`` (cast to fp32):

1. Shape class.  2-D weights and 4-D 1×1 conv kernels (viewed as out×in) are *factored*; everything else
   (1-D biases/norm weights, 3×3 depthwise kernels, scalars) keeps *full* statistics.
2. ``u = g² + eps1``.  Factored: row/column EMAs ``r ← β2·r + (1−β2)·mean_cols(u)``, ``c ← β2·c + (1−β2)·mean_rows(u)``,
   ``U = g ⊙ rsqrt(r / mean(r)) ⊗ rsqrt(c)``.  Full: ``v ← β2·v + (1−β2)·u``, ``U = g ⊙ rsqrt(v)``.
3. RMS clip ``U ← U / max(1, RMS(U) / clip_threshold)``.
4. ``m ← β1·m + (1−β1)·U``.
5. Instability ``R = (U − m)² + eps2``; factored: row/column EMAs with β3, ``update = m ⊙ rsqrt(R_r/mean) ⊗ rsqrt(R_c)``;
   full: ``update = m``.
6. Decoupled weight decay ``p ← p − lr·wd·p``, then ``p ← p − lr·update``.  No bias correction.

``CAME8bit`` keeps ``m`` of factored tensors with more than ``min_8bit_size`` elements as uint8 codes (the paper's
"8-bit first-order moments, 32-bit second-order statistics"); all row/column statistics stay fp32.  As in the
official code, step 5 uses the fp32 ``m`` from *before* re-quantisation; the next step starts from the dequantised one.

Quantisers (``quantizer=``):

* ``"bnb"`` (default): bitsandbytes blockwise dynamic quantisation (``bitsandbytes.functional.quantize_blockwise``) over
  the flattened tensor in blocks of ``block_size`` elements — uint8 codes + one fp32 absmax per block.  This is the
  paper's "independent scaling for each block of 2048" but with bnb's signed dynamic (non-linear) code instead of the
  paper's linear min–max (Eq. 1); bitsandbytes has CPU and CUDA kernels for it.  On CPU the codes/absmax are written
  in place through bnb's native CPU kernels (the same ones the functional API calls, minus the output allocation).
* ``"official"``: reproduces NVlabs' ``CAME8BitWrapper._quantize_state`` for comparison — linear min–max
  ``q = round((x − min)/scale)``, ``scale = (max − min)/255``, ``x̂ = q·scale + min``, over ``tensor.split(block_size)``
  of the *unflattened* tensor, i.e. chunks of ``block_size`` **rows** (a 6720×2240 qkv weight has 4 chunks sharing
  one min/scale each).  Deviation: an all-zero (constant) chunk gets codes 0 instead of the official NaN-before-byte-cast.

Deviations from NVlabs / came-pytorch, all numerically within fp32 rounding of the reference:
the RMS-clip factor ``1/k`` is folded into its two uses (``m ← β1·m + (1−β1)/k·U``, ``R = (U/k − m)²``) instead of a
separate division pass, ``mean(g² + eps1)`` is computed as ``mean(g²) + eps1`` (same for eps2),
and the unused ``state["RMS"]`` is not kept.  Same-shape small factored tensors (≤ ``_STACK_MAX`` elements) are
stacked and updated with batched ops to cut per-tensor Python overhead; the maths is identical.  Temporaries live in
up to four fp32 scratch buffers the size of the largest (stacked) factored tensor, kept on the optimizer (not in the
state, not checkpointed).

Differences to ``came_pytorch.CAME`` (0.1.3), which factors *every* tensor with ndim ≥ 2 over its **last two dims**:
2-D weights are identical; a 1×1 conv ``(out, in, 1, 1)`` is factored there over the trailing ``(1, 1)`` dims, so its
"row/col" statistics are full-size tensors (no memory saving and a different, per-element second moment) — here, as in
SANA, it is factored as ``out × in`` (equal to came-pytorch on the reshaped 2-D weight); a 3×3 depthwise
``(C, 1, 3, 3)`` is factored over ``(3, 3)`` there and kept full here (as in SANA); a 3-D tensor is factored per
leading index there and kept full here.
"""
from __future__ import annotations

import ctypes
import math

import torch

_STACK_MAX = 1 << 18  # factored tensors up to this many elements are stacked by shape and stepped together
_BNB_BLOCKS = (64, 128, 256, 512, 1024, 2048, 4096)
QUANTIZERS = ("bnb", "official")


def factored_shape(shape) -> tuple[int, int] | None:
    """(rows, cols) if a tensor of ``shape`` gets factored statistics (2-D, or 4-D 1×1 kernel), else None."""
    shape = tuple(shape)
    if len(shape) == 2:
        return shape
    if len(shape) == 4 and shape[2] == 1 and shape[3] == 1:
        return shape[0], shape[1]
    return None


def uses_8bit(shape, min_8bit_size: int) -> bool:
    """SANA rule: only factored (Linear / 1×1 conv) tensors with more than ``min_8bit_size`` elements."""
    fs = factored_shape(shape)
    return fs is not None and fs[0] * fs[1] > min_8bit_size


class CAME(torch.optim.Optimizer):
    """CAME with SANA's shape rules (see module docstring).

    Args: ``lr`` (SANA-1.5 uses 2e-5), ``betas=(β1, β2, β3)`` for first moment / squared gradient / instability,
    ``eps=(eps1, eps2)`` for squared gradient / instability, ``clip_threshold`` for the RMS clip and decoupled
    ``weight_decay``.  State per parameter: ``step`` (int), ``exp_avg``; factored: ``exp_avg_sq_row/col`` and
    ``exp_avg_res_row/col`` (fp32 vectors); full: ``exp_avg_sq``.
    """

    def __init__(self, params, lr: float = 2e-5, betas=(0.9, 0.999, 0.9999), eps=(1e-30, 1e-16),
                 clip_threshold: float = 1.0, weight_decay: float = 0.0, **extra):
        if not lr > 0.0:
            raise ValueError(f"optimizer.lr must be > 0, got {lr}")
        betas, eps = tuple(float(b) for b in betas), tuple(float(e) for e in eps)
        if len(betas) != 3 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"optimizer.betas must be three values in [0, 1), got {betas}")
        if len(eps) != 2 or not all(e >= 0.0 for e in eps):
            raise ValueError(f"optimizer.eps must be two values >= 0, got {eps}")
        if not clip_threshold > 0.0:
            raise ValueError(f"optimizer.clip_threshold must be > 0, got {clip_threshold}")
        if weight_decay < 0.0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, clip_threshold=clip_threshold, weight_decay=weight_decay, **extra)
        super().__init__(params, defaults)
        self._scratch: dict = {}

    # ------------------------------------------------------------------ first-moment storage (fp32 here, 8-bit in CAME8bit)
    def _init_m(self, state, n, m, device, group):
        state["exp_avg"] = torch.zeros((n, m), dtype=torch.float32, device=device)

    def _load_m(self, state, group, out=None):  # fp32 m (n, m) of one factored tensor (the state itself if no out)
        return state["exp_avg"] if out is None else out.copy_(state["exp_avg"])

    def _store_m(self, state, m, group):
        state["exp_avg"].copy_(m)

    # ------------------------------------------------------------------ helpers
    def _buffer(self, key, numel, device):
        buf = self._scratch.get((key, device))
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=torch.float32, device=device)
            self._scratch[(key, device)] = buf
        return buf[:numel]

    def __setstate__(self, state):
        super().__setstate__(state)
        self._scratch = {}

    def load_state_dict(self, state_dict):
        """Torch's loader casts every state tensor to the parameter's dtype (uint8 codes → float, fp32 stats → bf16
        for bf16 params); restore the saved dtypes exactly (codes uint8, statistics fp32), on the parameter's device."""
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params):
            for k, v in state_dict["state"].get(pid, {}).items():
                if torch.is_tensor(v):
                    self.state[p][k] = v.to(device=p.device, copy=True)

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sharded = [p for g in self.param_groups for p in g["params"] if type(p).__name__ == "DTensor"]
        if sharded:
            self._step_sharded(sharded)
        else:
            self._step_local()
        return loss

    def _step_sharded(self, sharded):
        """FSDP2 (DTensor parameters sharded along dim 0): CAME's factored statistics need whole rows and columns,
        so each sharded parameter and its gradient are gathered, stepped as a whole tensor with the same code as one
        process (its state kept whole and identical on every process), and this process's shard of the result is
        written back. Numerically the single-process step; costs an all-gather of parameters and gradients per step
        and whole (not sharded) optimizer state — small for CAME-8bit (~1 byte/parameter)."""
        from torch.distributed.tensor import distribute_tensor

        proxies = {}
        for p in sharded:  # every process walks the same parameter list: the collectives line up
            if p.grad is None:
                continue
            q = p.full_tensor().detach().clone()
            q.grad = p.grad.full_tensor()
            proxies[p] = q
            if p in self.state:
                self.state[q] = self.state.pop(p)
        groups = [g["params"] for g in self.param_groups]
        for g in self.param_groups:
            g["params"] = [proxies.get(p, p) for p in g["params"]]
        try:
            self._step_local()
        finally:
            for g, ps in zip(self.param_groups, groups):
                g["params"] = ps
            for p, q in proxies.items():
                self.state[p] = self.state.pop(q)
                p.to_local().copy_(distribute_tensor(q, p.device_mesh, p.placements).to_local())

    def _step_local(self):
        for group in self.param_groups:
            full, factored = [], {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("CAME does not support sparse gradients")
                fs = factored_shape(p.shape)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    if fs is None:
                        state["exp_avg"] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                        state["exp_avg_sq"] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                    else:
                        self._init_m(state, *fs, p.device, group)
                        for k, size in (("exp_avg_sq_row", fs[0]), ("exp_avg_sq_col", fs[1]),
                                        ("exp_avg_res_row", fs[0]), ("exp_avg_res_col", fs[1])):
                            state[k] = torch.zeros(size, dtype=torch.float32, device=p.device)
                state["step"] += 1
                if fs is None:
                    full.append(p)
                else:
                    stack = fs[0] * fs[1] <= _STACK_MAX
                    key = (fs, p.device, p.dtype, "exp_avg" in state) if stack else id(p)
                    factored.setdefault(key, []).append(p)
            if full:
                self._step_full(full, group)
            for ps in factored.values():
                self._step_factored(ps, group)

    def _step_full(self, params, group):
        """Unfactored tensors: plain foreach maths, op for op as came-pytorch."""
        b1, b2, _ = group["betas"]
        e1 = group["eps"][0]
        lr, wd, clip = group["lr"], group["weight_decay"], group["clip_threshold"]
        grads = [p.grad.float() for p in params]
        ms = [self.state[p]["exp_avg"] for p in params]
        vs = [self.state[p]["exp_avg_sq"] for p in params]
        u = torch._foreach_mul(grads, grads)
        torch._foreach_add_(u, e1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_add_(vs, u, alpha=1.0 - b2)
        u = torch._foreach_rsqrt(vs)
        torch._foreach_mul_(u, grads)
        norms = torch.stack(torch._foreach_norm(u))
        sqrt_n = torch.tensor([math.sqrt(max(p.numel(), 1)) for p in params], device=norms.device)
        fac = (norms / sqrt_n / clip).clamp_(min=1.0)
        torch._foreach_div_(u, fac.tolist() if fac.device.type == "cpu" else list(fac.unbind(0)))  # CPU: scalar list
        torch._foreach_mul_(ms, b1)
        torch._foreach_add_(ms, u, alpha=1.0 - b1)
        if wd != 0:
            torch._foreach_add_(params, params, alpha=-wd * lr)
        upd = torch._foreach_mul(ms, lr)
        if all(p.dtype == torch.float32 for p in params):
            torch._foreach_sub_(params, upd)
        else:
            for p, d in zip(params, upd):
                p.sub_(d.to(p.dtype))

    def _step_factored(self, params, group):
        """k same-shape factored tensors as one (k, n, m) problem (k = 1: views, no copies)."""
        b1, b2, b3 = group["betas"]
        e1, e2 = group["eps"]
        lr, wd, clip = group["lr"], group["weight_decay"], group["clip_threshold"]
        n, m = factored_shape(params[0].shape)
        k, dev = len(params), params[0].device
        states = [self.state[p] for p in params]
        W = self._buffer("w", k * n * m, dev).view(k, n, m)
        if k == 1:
            G = params[0].grad.reshape(1, n, m)
            G = G if G.dtype == torch.float32 else G.float()
            R, C = states[0]["exp_avg_sq_row"][None], states[0]["exp_avg_sq_col"][None]
            RR, RC = states[0]["exp_avg_res_row"][None], states[0]["exp_avg_res_col"][None]
        else:
            G = torch.stack([p.grad.reshape(n, m).float() for p in params],
                            out=self._buffer("g", k * n * m, dev).view(k, n, m))
            R, C, RR, RC = (torch.stack([s[key] for s in states]) for key in
                            ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_res_row", "exp_avg_res_col"))
        inplace_m = k == 1 and "exp_avg" in states[0]  # fp32 m of a single tensor: update the state directly
        if inplace_m:
            M = states[0]["exp_avg"][None]
        else:
            M = self._buffer("m", k * n * m, dev).view(k, n, m)
            if all("exp_avg" in s for s in states):
                torch.stack([s["exp_avg"] for s in states], out=M)
            else:
                for i, s in enumerate(states):
                    self._load_m(s, group, out=M[i])
        # 2. factored second moment
        torch.mul(G, G, out=W)
        R.mul_(b2).add_(W.mean(2).add_(e1), alpha=1.0 - b2)
        C.mul_(b2).add_(W.mean(1).add_(e1), alpha=1.0 - b2)
        rf = (R / R.mean(1, keepdim=True)).rsqrt_()
        cf = C.rsqrt()
        torch.mul(G, rf[:, :, None], out=W)
        W.mul_(cf[:, None, :])  # W = U before the clip
        # 3. RMS clip, folded into the two uses of U: ik = 1 / max(1, RMS(U) / clip)
        ik = (torch.linalg.vector_norm(W, dim=(1, 2)) / (math.sqrt(n * m) * clip)).clamp_(min=1.0).reciprocal_()
        ik = ik[:, None, None]
        # 4. first moment
        M.mul_(b1).addcmul_(W, ik, value=1.0 - b1)
        if not inplace_m and all("exp_avg" in s for s in states):
            torch._foreach_copy_([s["exp_avg"] for s in states], list(M.unbind(0)))
        elif not inplace_m:
            for i, s in enumerate(states):
                self._store_m(s, M[i], group)
        # 5. instability (U/k − m)², with the fp32 m
        torch.addcmul(M, W, ik, value=-1.0, out=W).square_()
        RR.mul_(b3).add_(W.mean(2).add_(e2), alpha=1.0 - b3)
        RC.mul_(b3).add_(W.mean(1).add_(e2), alpha=1.0 - b3)
        sr = (RR / RR.mean(1, keepdim=True)).rsqrt_().mul_(-lr)
        sc = RC.rsqrt()
        # 6. decoupled weight decay, then p -= lr * update
        torch.mul(M, sr[:, :, None], out=W)
        if k == 1:
            p = params[0]
            if wd != 0:
                p.add_(p, alpha=-wd * lr)
            p.view(1, n, m).addcmul_(W, sc[:, None, :])
        else:
            W.mul_(sc[:, None, :])
            if wd != 0:
                torch._foreach_add_(params, params, alpha=-wd * lr)
            if params[0].dtype == torch.float32:
                torch._foreach_add_([p.view(n, m) for p in params], list(W.unbind(0)))
            else:
                for p, d in zip(params, W.unbind(0)):
                    p.view(n, m).add_(d.to(p.dtype))
            for key, X in (("exp_avg_sq_row", R), ("exp_avg_sq_col", C), ("exp_avg_res_row", RR),
                           ("exp_avg_res_col", RC)):
                torch._foreach_copy_([s[key] for s in states], list(X.unbind(0)))


class CAME8bit(CAME):
    """CAME with 8-bit first moments for factored tensors with more than ``min_8bit_size`` elements.

    8-bit state per such tensor: ``exp_avg_codes`` (uint8, out×in) and, for ``quantizer="bnb"``, ``exp_avg_absmax``
    (fp32, one per ``block_size`` elements of the flattened tensor); for ``quantizer="official"``, ``exp_avg_min`` and
    ``exp_avg_scale`` (fp32, one per chunk of ``block_size`` rows).  Everything else as :class:`CAME`.
    """

    def __init__(self, params, lr: float = 2e-5, betas=(0.9, 0.999, 0.9999), eps=(1e-30, 1e-16),
                 clip_threshold: float = 1.0, weight_decay: float = 0.0, block_size: int = 2048,
                 min_8bit_size: int = 16384, quantizer: str = "bnb"):
        if quantizer not in QUANTIZERS:
            raise ValueError(f"optimizer.quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
        if quantizer == "bnb" and block_size not in _BNB_BLOCKS:
            raise ValueError(f"optimizer.block_size must be one of {_BNB_BLOCKS} for bitsandbytes, got {block_size}")
        if not (isinstance(block_size, int) and block_size > 0):
            raise ValueError(f"optimizer.block_size must be a positive int, got {block_size!r}")
        if not (isinstance(min_8bit_size, int) and min_8bit_size >= 0):
            raise ValueError(f"optimizer.min_8bit_size must be an int >= 0, got {min_8bit_size!r}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, clip_threshold=clip_threshold,
                         weight_decay=weight_decay, block_size=block_size, min_8bit_size=min_8bit_size,
                         quantizer=quantizer)
        self._codes: dict = {}

    def _dynamic_code(self, device):
        code = self._codes.get(device)
        if code is None:
            import bitsandbytes.functional as bnbF
            code = self._codes[device] = bnbF.create_dynamic_map(signed=True).to(device)
        return code

    def _init_m(self, state, n, m, device, group):
        if n * m <= group["min_8bit_size"]:
            return super()._init_m(state, n, m, device, group)
        state["exp_avg_codes"] = torch.zeros((n, m), dtype=torch.uint8, device=device)
        bs = group["block_size"]
        if group["quantizer"] == "bnb":
            state["exp_avg_absmax"] = torch.zeros(-(-n * m // bs), dtype=torch.float32, device=device)
        else:
            state["exp_avg_min"] = torch.zeros(-(-n // bs), dtype=torch.float32, device=device)
            state["exp_avg_scale"] = torch.zeros(-(-n // bs), dtype=torch.float32, device=device)

    def _load_m(self, state, group, out=None):
        if "exp_avg" in state:
            return state["exp_avg"] if out is None else out.copy_(state["exp_avg"])
        codes, bs = state["exp_avg_codes"], group["block_size"]
        if "exp_avg_absmax" in state:
            code, absmax = self._dynamic_code(codes.device), state["exp_avg_absmax"]
            native = _bnb_cpu() if codes.device.type == "cpu" else None
            if native is not None and out is not None:  # bnb's CPU kernel straight into our buffer
                lib, ptr = native
                lib.cdequantize_blockwise_cpu_fp32(ptr(code), ptr(codes), ptr(absmax), ptr(out),
                                                   ctypes.c_longlong(bs), ctypes.c_longlong(codes.numel()))
                return out
            import bitsandbytes.functional as bnbF  # (bnb has no CPU out= kernel: a fresh tensor)
            m = bnbF.dequantize_blockwise(codes, absmax=absmax, code=code, blocksize=bs)
            return m if out is None else out.copy_(m)
        return official_dequantize(codes, state["exp_avg_min"], state["exp_avg_scale"], bs, out=out)

    def _store_m(self, state, m, group):
        if "exp_avg" in state:
            return state["exp_avg"].copy_(m)
        if "exp_avg_absmax" in state:
            code, bs = self._dynamic_code(m.device), group["block_size"]
            codes, absmax = state["exp_avg_codes"], state["exp_avg_absmax"]
            native = _bnb_cpu() if m.device.type == "cpu" else None
            if native is not None and m.is_contiguous() and m.dtype == torch.float32:  # in place, no allocation
                lib, ptr = native
                lib.cquantize_blockwise_cpu_fp32(ptr(code), ptr(m), ptr(absmax), ptr(codes),
                                                 ctypes.c_longlong(bs), ctypes.c_longlong(m.numel()))
                return
            import bitsandbytes.functional as bnbF
            codes, qs = bnbF.quantize_blockwise(m, code=code, blocksize=bs)
            state["exp_avg_codes"], state["exp_avg_absmax"] = codes.view(state["exp_avg_codes"].shape), qs.absmax
        else:
            work = self._buffer("q", m.numel(), m.device).view(m.shape)
            _, mn, sc = official_quantize(m, group["block_size"], out=state["exp_avg_codes"], work=work)
            state["exp_avg_min"], state["exp_avg_scale"] = mn, sc


_BNB_NATIVE: list = []


def _bnb_cpu():
    """(lib, get_ptr) of bitsandbytes' native CPU library, or None (then the public functional API is used).
    The same kernels ``bitsandbytes.functional.(de)quantize_blockwise`` call on CPU, minus the output allocation."""
    if not _BNB_NATIVE:
        try:
            from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib
            from bitsandbytes.functional import get_ptr
            ok = not isinstance(lib, ErrorHandlerMockBNBNativeLibrary) and all(
                hasattr(lib, f) for f in ("cquantize_blockwise_cpu_fp32", "cdequantize_blockwise_cpu_fp32"))
            _BNB_NATIVE.append((lib, get_ptr) if ok else None)
        except Exception:
            _BNB_NATIVE.append(None)
    return _BNB_NATIVE[0]


def _row_chunks(n: int, rows: int, device):
    return torch.arange(n, device=device) // rows


def official_quantize(x: torch.Tensor, rows: int = 2048, out: torch.Tensor | None = None,
                      work: torch.Tensor | None = None):
    """NVlabs' min–max quantiser, vectorised: chunks of ``rows`` rows of a 2-D ``x`` (= ``x.split(rows)``).

    Returns (uint8 codes like ``x``, per-chunk min, per-chunk scale = (max − min)/255).  Bit-identical to the
    official loop except that a constant chunk (scale 0) gets codes 0 instead of NaN → undefined byte.
    ``out`` (uint8) and ``work`` (fp32, like ``x``) are optional preallocated buffers.
    """
    n = x.shape[0]
    nch = -(-n // rows)
    x2 = x.reshape(n, -1)
    lo, hi = x2.amin(1), x2.amax(1)
    pad = nch * rows - n
    if pad:
        lo = torch.cat([lo, lo.new_full((pad,), math.inf)])
        hi = torch.cat([hi, hi.new_full((pad,), -math.inf)])
    mn, mx = lo.view(nch, rows).amin(1), hi.view(nch, rows).amax(1)
    scale = (mx - mn) / 255
    idx = _row_chunks(n, rows, x.device)
    shape = (n,) + (1,) * (x.ndim - 1)
    div = torch.where(scale == 0, torch.ones_like(scale), scale)
    work = torch.empty_like(x, dtype=torch.float32) if work is None else work
    torch.sub(x, mn[idx].view(shape), out=work).div_(div[idx].view(shape)).round_()
    out = torch.empty(x.shape, dtype=torch.uint8, device=x.device) if out is None else out
    out.copy_(work)
    return out, mn, scale


def official_dequantize(codes, mn, scale, rows: int = 2048, out=None):
    """``x̂ = q·scale + min`` per chunk of ``rows`` rows (NVlabs' ``_dequantize_state``)."""
    n = codes.shape[0]
    idx = _row_chunks(n, rows, codes.device)
    shape = (n,) + (1,) * (codes.ndim - 1)
    out = torch.empty(codes.shape, dtype=torch.float32, device=codes.device) if out is None else out
    torch.mul(codes, scale[idx].view(shape), out=out)
    return out.add_(mn[idx].view(shape))
