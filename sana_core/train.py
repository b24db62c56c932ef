"""Flow-matching training loop for ``SanaTransformer2DModel`` on cached latents + text embeddings (Accelerate).

Recipe (sana15-method.md §7): shifted logit-normal σ, x_t = (1−σ)x0 + σε, target ε − x0, unweighted MSE, caption
dropout to the null embedding keeping the prompt mask, AdamW/CAME, LR warmup then constant
(``diffusers.optimization.get_constant_schedule_with_warmup``, as SANA: the first step runs at lr 0), gradient
clipping (SANA 0.1). Deviations: continuous σ and float timesteps (see ``sana_core.flow``); no sqrt LR auto-scaling
(the configured lr is the lr); no bf16 (CPU fp32); EMA optional (SANA's released train.py keeps none).

Determinism / resume / DDP:

* The global batch of step ``n`` is a pure function of (seed, n): indices come from a per-epoch permutation seeded
  by (seed, epoch); σ, ε and caption-drop flags for the whole global batch come from a generator seeded by
  (seed, n). Each rank draws the global batch and keeps its contiguous slice, so P processes × B/P equal one
  process × B (up to fp32 reduction order), and a resumed run sees exactly the batches an uninterrupted run sees.
* Checkpoints ``out_dir/checkpoints/step_<n>/``: ``save_pretrained`` safetensors model (+ ``ema/``) and
  ``state.pt`` (optimizer, scheduler, RNG states as tensors, step, samples, flops, data position, config) loadable
  with ``torch.load(weights_only=True)``. Written to a temp dir and renamed, so a kill mid-write keeps the last one.
* A non-finite loss or gradient norm raises :class:`NonFiniteLossError` before the optimizer step; no
  ``out_dir/final`` is written.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import flow
from .flops import forward_flops_per_sample, train_flops

# ----------------------------------------------------------------------------------------------------- config
# key: (types, default). float keys accept ints; None allowed where the default is None or listed in _NULLABLE.
DEFAULTS: dict = {
    "steps": (int, 1000),
    "batch_size": (int, 32),
    "lr": (float, 1e-4),
    "warmup_steps": (int, 0),
    "weight_decay": (float, 0.0),
    "grad_clip": (float, 0.1),  # SANA gradient_clip; None or 0 = no clipping (norm still measured)
    "optimizer": (str, "adamw"),
    # extra keyword arguments of the optimizer's constructor (e.g. betas, eps, clip_threshold, block_size,
    # min_8bit_size, quantizer); names are checked against the optimizer's signature in validate_config
    "optimizer_args": (dict, {}),
    "shift": (float, 3.0),
    "logit_mean": (float, 0.0),
    "logit_std": (float, 1.0),
    "caption_dropout": (float, 0.1),
    "integer_timestep": (bool, False),  # True = SanaMS's truncation of σ·1000
    "checkpoint_every": (int, 0),  # 0 = no intermediate checkpoints
    "keep_checkpoints": (int, 0),  # 0 = keep all
    "seed": (int, 0),
    "ema": (float, None),  # EMA decay, e.g. 0.9999; None = off
    "log_every": (int, 10),
    "compile": (bool, False),  # torch.compile the transformer (long runs only: 1.5-2.5 min first compile)
    # torch.set_num_threads for the run (restored afterwards). Default 1: on the shared 2-core machine 2 threads
    # were 10-40x slower per step than 1 (OpenMP barriers under oversubscription; docs/benchmarks.md); on an
    # idle machine 2 threads are 1.68x faster (measured, docs/benchmarks.md). None = torch's default, or the checkpoint's count when resuming.
    # CPU gradients are bit-identical only at the same thread count, which exact resume needs.
    "num_threads": (int, 1),
    "progress": (bool, True),
}
_NULLABLE = {"grad_clip", "ema", "num_threads"}
# keys that may change between a checkpoint and its resumption
_RESUME_FREE = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "compile", "num_threads", "progress"}


def validate_config(cfg: dict | None) -> dict:
    """Fill defaults and type-check; ValueError names unknown, wrong-typed or out-of-range keys."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown train config key(s): {unknown}; allowed: {sorted(DEFAULTS)}")
    out = {}
    for key, (typ, default) in DEFAULTS.items():
        v = cfg.get(key, default)
        if v is None:
            if key not in _NULLABLE:
                raise ValueError(f"train config key {key!r} must be {typ.__name__}, got None")
            out[key] = None
            continue
        ok = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            raise ValueError(f"train config key {key!r} must be {typ.__name__}, got {type(v).__name__} {v!r}")
        out[key] = dict(v) if isinstance(v, dict) else v
    checks = {
        "steps": out["steps"] >= 1, "batch_size": out["batch_size"] >= 1, "lr": out["lr"] >= 0,
        "warmup_steps": out["warmup_steps"] >= 0, "weight_decay": out["weight_decay"] >= 0,
        "grad_clip": out["grad_clip"] is None or out["grad_clip"] >= 0, "shift": out["shift"] > 0,
        "logit_std": out["logit_std"] > 0, "caption_dropout": 0 <= out["caption_dropout"] <= 1,
        "checkpoint_every": out["checkpoint_every"] >= 0, "keep_checkpoints": out["keep_checkpoints"] >= 0,
        "ema": out["ema"] is None or 0 < out["ema"] < 1, "log_every": out["log_every"] >= 1,
        "num_threads": out["num_threads"] is None or out["num_threads"] >= 1,
    }
    try:
        from .optim import OPTIMIZERS
    except ImportError:
        OPTIMIZERS = ("adamw",)
    checks["optimizer"] = out["optimizer"] in OPTIMIZERS
    bad = [k for k, good in checks.items() if not good]
    if bad:
        raise ValueError(f"train config key(s) out of range: {', '.join(f'{k}={out[k]!r}' for k in bad)}")
    _check_optimizer_args(out)
    return out


def _optimizer_class(name: str):
    if name == "adamw":
        return torch.optim.AdamW
    if name == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit
    from .optim import CAME, CAME8bit

    return CAME if name == "came" else CAME8bit


def _check_optimizer_args(cfg: dict) -> None:
    """``optimizer_args`` names must be keyword parameters of the optimizer's constructor (lr / weight_decay have
    their own keys); values are checked by building the optimizer on a 2×2 dummy parameter and stepping it once.
    ValueError names ``train.optimizer_args.<key>``."""
    import inspect

    args, name = cfg["optimizer_args"], cfg["optimizer"]
    if not args:
        return
    sig = inspect.signature(_optimizer_class(name).__init__).parameters
    allowed = {k for k, p in sig.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {
        "self", "params", "lr", "weight_decay", "fused", "foreach"}
    for k in args:
        if k not in allowed:
            raise ValueError(f"train.optimizer_args.{k}: not an argument of optimizer {name!r} "
                             f"(allowed: {sorted(allowed)}; lr/weight_decay are train keys)")
    dummy = torch.nn.Parameter(torch.zeros(2, 2))
    dummy.grad = torch.ones(2, 2)
    try:  # some optimizers (torch AdamW: betas) only unpack their arguments in step()
        build_train_optimizer(name, [dummy], lr=max(cfg["lr"], 1e-8), weight_decay=cfg["weight_decay"],
                              **args).step()
    except (ValueError, TypeError, RuntimeError) as e:
        key = next((k for k in args if k in str(e)), next(iter(args)))
        raise ValueError(f"train.optimizer_args.{key}: {e}") from e


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss or the gradient norm of a step is NaN/inf (before the optimizer step)."""

    def __init__(self, step: int, loss: float, grad_norm: float):
        self.step, self.loss, self.grad_norm = step, loss, grad_norm
        super().__init__(f"non-finite training step {step}: loss={loss}, grad_norm={grad_norm}; "
                         "stopped without writing a final model (last good checkpoint kept)")


# ------------------------------------------------------------------------------------------------------- data
@dataclass
class TensorData:
    """In-memory training set: latents [N,C,H,W], caption embeddings [U,L,E] with masks [U,L], optional
    ``caption_index`` [N] (image → caption row; identity when None, then U = N), null embedding [L,E].

    Batches are a deterministic function of (seed, step): epoch e uses permutation randperm(N) seeded by
    (seed, e); sample position p = step·B + i maps to epoch p // N, slot p % N (batches may straddle epochs).
    """

    latents: torch.Tensor
    emb: torch.Tensor
    mask: torch.Tensor
    null_emb: torch.Tensor | None = None
    caption_index: torch.Tensor | None = None

    def __post_init__(self):
        n = self.latents.shape[0]
        if self.latents.ndim != 4:
            raise ValueError(f"latents must be [N,C,H,W], got {tuple(self.latents.shape)}")
        if n == 0:
            raise ValueError("training data is empty")
        if self.emb.ndim != 3:
            raise ValueError(f"emb must be [U,L,E], got {tuple(self.emb.shape)}")
        if self.caption_index is None:
            if self.emb.shape[0] != n:
                raise ValueError(f"emb has {self.emb.shape[0]} rows for {n} latents and no caption_index")
        else:
            self.caption_index = self.caption_index.long().reshape(-1)
            if len(self.caption_index) != n or not (0 <= int(self.caption_index.min())
                                                    and int(self.caption_index.max()) < self.emb.shape[0]):
                raise ValueError(f"caption_index must be [N={n}] with values < {self.emb.shape[0]}")
        if tuple(self.mask.shape) != tuple(self.emb.shape[:2]):
            raise ValueError(f"mask must be {tuple(self.emb.shape[:2])}, got {tuple(self.mask.shape)}")
        if self.null_emb is not None:
            self.null_emb = self.null_emb.reshape(-1, self.null_emb.shape[-1]).float()
            if tuple(self.null_emb.shape) != tuple(self.emb.shape[1:]):
                raise ValueError(f"null_emb must be {tuple(self.emb.shape[1:])}, got {tuple(self.null_emb.shape)}")
        self.latents = self.latents.float().contiguous()
        self.emb = self.emb.float().contiguous()
        self.mask = self.mask.long().contiguous()
        self._perm_cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.latents.shape[0]

    def _perm(self, seed: int, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: torch.randperm(len(self), generator=_gen(seed, 0x5EED, epoch))}
        return self._perm_cache[epoch]

    def indices(self, seed: int, step: int, batch_size: int) -> torch.Tensor:
        """Dataset indices of the global batch of ``step``."""
        pos = torch.arange(step * batch_size, (step + 1) * batch_size)
        epochs, slots = pos // len(self), pos % len(self)
        out = torch.empty(batch_size, dtype=torch.long)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._perm(seed, e)[slots[sel]]
        return out

    def batch(self, idx: torch.Tensor):
        """(latents, emb, mask) of dataset indices ``idx``."""
        rows = idx if self.caption_index is None else self.caption_index[idx]
        return self.latents[idx], self.emb[rows], self.mask[rows]


def as_data(data) -> TensorData:
    """Accept a :class:`TensorData`, a ``sana_core.cache.Cache`` or cache directory (``load_cache``), a dict with
    keys latents/emb/mask[/null_emb/caption_index], or a (latents, emb, mask[, null_emb]) tuple."""
    if isinstance(data, TensorData):
        return data
    if isinstance(data, (str, os.PathLike)):
        from .cache import load_cache

        data = load_cache(data)
    if hasattr(data, "latents") and hasattr(data, "caption_index"):  # sana_core.cache.Cache
        return TensorData(data.latents, data.emb, data.mask, data.null_emb, data.caption_index)
    if isinstance(data, dict):
        missing = [k for k in ("latents", "emb", "mask") if k not in data]
        if missing:
            raise ValueError(f"training data dict lacks key(s) {missing}; has {sorted(data)}")
        return TensorData(data["latents"], data["emb"], data["mask"], data.get("null_emb"), data.get("caption_index"))
    if isinstance(data, (tuple, list)) and len(data) in (3, 4):
        return TensorData(*data)
    raise TypeError(f"unsupported training data: {type(data).__name__}")


def _gen(seed: int, stream: int, n: int) -> torch.Generator:
    """Independent generator for (seed, stream, n) (splitmix-style mixing into 63 bits)."""
    x = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + n * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return torch.Generator().manual_seed(x & (2**63 - 1))


# -------------------------------------------------------------------------------------------------- optimizer
def build_train_optimizer(name: str, params, *, lr: float, weight_decay: float, **optimizer_args
                          ) -> torch.optim.Optimizer:
    """Optimizer by name. ``adamw`` = ``torch.optim.AdamW(fused=True)`` (torch defaults betas (0.9, 0.999), eps 1e-8;
    the fused kernel is the same algorithm and on CPU steps 1.8M params in 2.5 ms vs 9 ms foreach / 11.5 ms
    single-tensor); other names (adamw8bit, came, came8bit) via ``sana_core.optim.build_optimizer``.
    ``optimizer_args`` (train key ``optimizer_args``) are passed through to the constructor."""
    if name == "adamw":
        return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay, fused=True, **optimizer_args)
    try:
        from .optim import build_optimizer
    except ImportError as e:
        raise ValueError(f"train config key 'optimizer': {name!r} needs sana_core.optim") from e
    return build_optimizer(name, params, lr=lr, weight_decay=weight_decay, **optimizer_args)


# ------------------------------------------------------------------------------------------------ checkpoints
CKPT_DIR = "checkpoints"
FINAL_DIR = "final"
STATE_FILE = "state.pt"


def _atomic_write_dir(dest: Path, write: Callable[[Path], None]) -> None:
    """Write a directory via ``write(tmp)`` then rename into place (a kill mid-write leaves no ``dest``)."""
    dest = Path(dest)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{os.getpid()}"
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dest)


def list_checkpoints(out_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, path), oldest first. Temp dirs of interrupted writes are ignored."""
    root = Path(out_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.name.startswith("step_") and p.name[5:].isdigit() and (p / STATE_FILE).is_file():
            found.append((int(p.name[5:]), p))
    return sorted(found)


def load_state(ckpt_dir) -> dict:
    return torch.load(Path(ckpt_dir) / STATE_FILE, map_location="cpu", weights_only=True)


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    sd = {}
    for f in files:
        sd.update(load_file(f))
    model.load_state_dict(sd, strict=True)


# ------------------------------------------------------------------------------------------------------ train
def _step_fn(model, x0, emb, mask, sigma, noise, drop, null_emb, cfg):
    x_t, t, target, emb = flow.flow_training_inputs(x0, emb, sigma, noise, drop, null_emb, cfg["integer_timestep"])
    pred = model(x_t, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]
    return flow.flow_loss(pred, target)


def train(model: torch.nn.Module, data, cfg: dict, out_dir, callback: Callable[[int, dict], None] | None = None,
          resume: bool = True, optimizer_factory: Callable | None = None) -> dict:
    """Train ``model`` in place; returns a summary dict (loss, steps, samples, flops, wall_time_s, ...).

    ``callback(step, {"loss", "lr", "grad_norm", "samples_per_s"})`` is called every ``log_every`` steps and on the
    last step (main process only). ``optimizer_factory(params, lr=..., weight_decay=...)`` replaces the named
    optimizer. With ``resume`` the latest complete checkpoint in ``out_dir/checkpoints`` is continued; without it
    existing checkpoints are deleted first.
    """
    cfg = validate_config(cfg)
    data = as_data(data)
    out_dir = Path(out_dir)
    if cfg["caption_dropout"] > 0 and data.null_emb is None:
        raise ValueError("train config key 'caption_dropout' > 0 but the training data has no null embedding")
    mcfg = model.config
    if data.latents.shape[1] != mcfg.in_channels:
        raise ValueError(f"latent channels {data.latents.shape[1]} != model in_channels {mcfg.in_channels}")
    if data.emb.shape[2] != mcfg.caption_channels:
        raise ValueError(f"embedding width {data.emb.shape[2]} != model caption_channels {mcfg.caption_channels}")
    threads_before = torch.get_num_threads()
    threads = cfg["num_threads"]
    ckpts = list_checkpoints(out_dir) if resume else []
    if threads is None and ckpts:  # CPU backward reductions depend on the thread count: resume with the same one
        threads = load_state(ckpts[-1][1]).get("num_threads")
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(model, data, cfg, out_dir, callback, resume, optimizer_factory)
    finally:
        torch.set_num_threads(threads_before)


def _train(model, data, cfg, out_dir, callback, resume, optimizer_factory):
    from accelerate import Accelerator
    from diffusers.optimization import get_constant_schedule_with_warmup

    # resume target checked before anything is deleted or computed
    ckpts = list_checkpoints(out_dir) if resume else []
    st = None
    if ckpts:
        st = load_state(ckpts[-1][1])
        old = {k: st["config"].get(k, DEFAULTS[k][1]) for k in cfg}  # keys added later: their default
        changed = sorted(k for k in cfg if k not in _RESUME_FREE and old[k] != cfg[k])
        if changed:
            raise ValueError(f"cannot resume {ckpts[-1][1]}: train config key(s) changed since the checkpoint: "
                             + ", ".join(f"{k}: {old[k]!r} -> {cfg[k]!r}" for k in changed))
        if st["step"] > cfg["steps"]:
            raise ValueError(f"train config key 'steps'={cfg['steps']} is below the checkpoint's step {st['step']} "
                             f"({ckpts[-1][1]}); raise steps or pass resume=False")

    # cpu=True without CUDA lets a plain `torchrun --nproc_per_node P` launch run as MULTI_CPU (gloo); accelerate's
    # own `accelerate launch --cpu` starts a single process unless MPI is used.
    acc = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
    world, rank = acc.num_processes, acc.process_index
    B = cfg["batch_size"]
    if B % world:
        raise ValueError(f"train config key 'batch_size'={B} is not divisible by {world} processes")
    local = slice(rank * (B // world), (rank + 1) * (B // world))

    if acc.is_main_process:
        if not resume:
            shutil.rmtree(out_dir / CKPT_DIR, ignore_errors=True)
        shutil.rmtree(out_dir / FINAL_DIR, ignore_errors=True)  # never leave a stale final next to a new run
        (out_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
        for p in (out_dir / CKPT_DIR).glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
    acc.wait_for_everyone()

    raw = model
    raw.train()
    fwd_flops = forward_flops_per_sample(raw, data.latents.shape[1:], data.emb.shape[1])
    params = [p for p in raw.parameters() if p.requires_grad]
    make_opt = optimizer_factory or (lambda ps, **kw: build_train_optimizer(cfg["optimizer"], ps, **kw,
                                                                          **cfg["optimizer_args"]))
    optimizer = make_opt(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    # not passed to acc.prepare: AcceleratedScheduler would step once per process (SANA's warmup×P trap)
    scheduler = get_constant_schedule_with_warmup(optimizer, cfg["warmup_steps"])
    ema = copy.deepcopy(raw).requires_grad_(False) if cfg["ema"] else None

    step, samples, flops, wall_prev, resumed_from, loss_resumed = 0, 0, 0.0, 0.0, None, float("nan")
    if st is not None:
        resumed_from, ck = ckpts[-1]
        _load_model_weights(raw, ck)
        if ema is not None:
            _load_model_weights(ema, ck / "ema")
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        _set_rng_state(st["rng"])
        step, samples, flops, wall_prev = st["step"], st["samples"], st["flops"], st["wall_time_s"]
        loss_resumed = st["loss"]
        if st["data_position"] != step * B:
            raise ValueError(f"checkpoint {ck}: data position {st['data_position']} != step×batch {step * B}")

    model, optimizer = acc.prepare(raw, optimizer)
    if cfg["compile"]:
        model = torch.compile(model)
    null_emb = data.null_emb.to(acc.device) if data.null_emb is not None else None
    sample_shape = tuple(data.latents.shape[1:])
    ema_params = [p for p in ema.parameters()] if ema is not None else None

    def save_checkpoint(at_step: int, loss: float):
        if acc.is_main_process:
            state = {
                "step": at_step, "samples": samples, "flops": flops, "flops_per_sample_forward": fwd_flops,
                "data_position": at_step * B, "loss": loss, "wall_time_s": wall_prev + (time.time() - t_start),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                "config": cfg, "world_size": world, "num_threads": torch.get_num_threads(),
            }

            def write(tmp: Path):
                raw.save_pretrained(tmp, safe_serialization=True)
                if ema is not None:
                    ema.save_pretrained(tmp / "ema", safe_serialization=True)
                torch.save(state, tmp / STATE_FILE)

            _atomic_write_dir(out_dir / CKPT_DIR / f"step_{at_step}", write)
            if cfg["keep_checkpoints"]:
                for _, p in list_checkpoints(out_dir)[:-cfg["keep_checkpoints"]]:
                    shutil.rmtree(p, ignore_errors=True)
        acc.wait_for_everyone()

    t_start = time.time()
    t_log, samples_log = time.time(), samples
    loss_val = loss_resumed
    bar = tqdm(total=cfg["steps"], initial=step, desc="train", disable=not (cfg["progress"] and acc.is_main_process))
    while step < cfg["steps"]:
        idx = data.indices(cfg["seed"], step, B)[local]
        x0, emb, mask = (t.to(acc.device, non_blocking=True) for t in data.batch(idx))
        sigma, noise, drop = flow.draw_flow_noise(
            B, sample_shape, generator=_gen(cfg["seed"], 0xF10, step), shift=cfg["shift"],
            logit_mean=cfg["logit_mean"], logit_std=cfg["logit_std"], caption_dropout=cfg["caption_dropout"])
        loss = _step_fn(model, x0, emb, mask, sigma[local], noise[local], drop[local], null_emb, cfg)
        acc.backward(loss)
        max_norm = cfg["grad_clip"] if cfg["grad_clip"] else float("inf")
        grad_norm = float(acc.clip_grad_norm_(params, max_norm))
        loss_val = float(acc.reduce(loss.detach(), reduction="mean")) if world > 1 else float(loss.detach())
        if not (math.isfinite(loss_val) and math.isfinite(grad_norm)):
            bar.close()
            raise NonFiniteLossError(step + 1, loss_val, grad_norm)
        lr_now = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, [p.detach() for p in raw.parameters()], 1.0 - cfg["ema"])
        step += 1
        samples += B
        flops += train_flops(fwd_flops, B)
        bar.update(1)
        if step % cfg["log_every"] == 0 or step == cfg["steps"]:
            now = time.time()
            metrics = {"loss": loss_val, "lr": lr_now, "grad_norm": grad_norm,
                       "samples_per_s": (samples - samples_log) / max(now - t_log, 1e-9)}
            t_log, samples_log = now, samples
            bar.set_postfix(loss=f"{loss_val:.4f}", gn=f"{grad_norm:.3f}")
            if callback is not None and acc.is_main_process:
                callback(step, metrics)
        if cfg["checkpoint_every"] and step % cfg["checkpoint_every"] == 0:
            save_checkpoint(step, loss_val)
    bar.close()

    wall = wall_prev + (time.time() - t_start)
    summary = {"loss": loss_val, "steps": step, "samples": samples, "flops": flops,
               "flops_per_sample_forward": fwd_flops, "wall_time_s": wall, "resumed_from": resumed_from,
               "world_size": world, "config": cfg}
    if acc.is_main_process:
        def write_final(tmp: Path):
            raw.save_pretrained(tmp, safe_serialization=True)
            if ema is not None:
                ema.save_pretrained(tmp / "ema", safe_serialization=True)
            (tmp / "train_summary.json").write_text(json.dumps(summary, indent=2))

        _atomic_write_dir(out_dir / FINAL_DIR, write_final)
    acc.wait_for_everyone()
    return summary
