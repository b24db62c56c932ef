"""Where and in which precision a model component runs: the one resolver every inference component uses
(text encoder, codec, sampler, block importance, judges).

`resolve(device, dtype, key)` → `(torch.device, torch.dtype)`:
- device `auto` = this process's CUDA device when CUDA is present (`cuda:<LOCAL_RANK>` under `accelerate launch` /
  torchrun, so each process of a split best-of-N run uses its own GPU), else `cpu`; or an explicit `cpu`, `cuda`,
  `cuda:<i>`;
- dtype `auto` = `bfloat16` on CUDA, `float32` on the CPU (the CPU default stays exactly today's fp32 path); or an
  explicit `float32` | `bfloat16` | `float16` (aliases fp32, bf16, fp16).
A bad value, or `cuda` on a machine without it, raises ValueError naming `key` — before anything is loaded.

Only weights change precision: activations that feed a solver or a statistic are cast back to float32 by their users
(the sampler integrates the ODE in fp32, block importance measures cosines in fp64, encoders return fp32).
"""
from __future__ import annotations

import os

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def auto_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None = "auto", key: str = "device") -> torch.device:
    if isinstance(device, torch.device):
        return device
    spec = "auto" if device is None else str(device)
    if spec == "auto":
        return auto_device()
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"{key}: {device!r} is not a device; use auto, cpu, cuda or cuda:<i>") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{key}: {device!r}: only auto, cpu, cuda or cuda:<i> are supported")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}: {device!r} requested but CUDA is not available here (use auto or cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{key}: {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None = "auto", device: torch.device | None = None,
                  key: str = "dtype") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    spec = "auto" if dtype is None else str(dtype)
    if spec == "auto":
        dev = device if device is not None else auto_device()
        return torch.bfloat16 if dev.type == "cuda" else torch.float32
    if spec not in DTYPES:
        raise ValueError(f"{key}: {dtype!r} is not a dtype; use auto or one of {sorted(DTYPES)}")
    return DTYPES[spec]


def resolve(device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto",
            key: str = "") -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of a component; `key` (e.g. "text") prefixes the names in errors ("text.device")."""
    pre = f"{key}." if key else ""
    dev = resolve_device(device, f"{pre}device")
    return dev, resolve_dtype(dtype, dev, f"{pre}dtype")


def check(section: dict, key: str) -> None:
    """Validate the `device`/`dtype` keys of a params section (no loading); ValueError naming `<key>.device|dtype`."""
    resolve(section.get("device", "auto"), section.get("dtype", "auto"), key)


def place(module: torch.nn.Module, device, dtype, key: str = "") -> torch.nn.Module:
    """`module.to(device, dtype)` after resolving; a no-op on the CPU fp32 default."""
    dev, dt = resolve(device, dtype, key)
    return module.to(device=dev, dtype=dt)


def split_spec(cfg: dict) -> tuple[dict, dict]:
    """(cfg without device/dtype, {"device": ..., "dtype": ...}) — for library builders that take a params section."""
    rest = {k: v for k, v in cfg.items() if k not in ("device", "dtype")}
    return rest, {"device": cfg.get("device", "auto"), "dtype": cfg.get("dtype", "auto")}
