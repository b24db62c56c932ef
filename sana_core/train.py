"""Flow-matching training loop for ``SanaTransformer2DModel`` on cached latents + text embeddings (Accelerate).

Recipe (sana15-method.md §7): shifted logit-normal σ, x_t = (1−σ)x0 + σε, target ε − x0, unweighted MSE, caption
dropout to the null embedding keeping the prompt mask, AdamW/CAME (``sana_core.optim.build_optimizer``), LR warmup
then constant (as SANA; or ``lr_schedule`` cosine/linear decay to 0 at ``steps``; diffusers' ``get_scheduler``; the first
step runs at lr 0),
gradient clipping (SANA 0.1). Deviations: continuous σ and float timesteps (see ``sana_core.flow``); no sqrt LR
auto-scaling (the configured lr is the lr); EMA optional (SANA's released train.py keeps none).

Scale-out (train keys): ``mixed_precision`` (accelerate autocast; the weights, the optimizer and the EMA stay fp32
master copies), ``gradient_accumulation_steps``, ``gradient_checkpointing`` (diffusers'
``enable_gradient_checkpointing``), ``distributed`` (``ddp``, or ``fsdp`` = accelerate's FSDP plugin, FSDP2, wrapping
each ``SanaTransformerBlock``). ``num_processes`` and the multi-node keys are read by the stage runner, which
re-launches a training stage under ``accelerate launch`` (flows/stage_runner.py; docs/orchestration.md).

Data: ``train`` consumes only the training-data protocol (``len``, ``indices(seed, step, B)``, ``batch(idx)``,
``latent_shape``, ``text_shape``, ``null_emb``, ``fingerprint()``); :class:`TensorData` is the in-memory one.

Determinism / resume / multi-process:

* The global batch of step ``n`` is a pure function of (seed, n) (``data.indices``); σ, ε and caption-drop flags for
  the whole global batch come from a generator seeded by (seed, n). Each rank keeps its contiguous slice of the
  global batch and splits it into ``gradient_accumulation_steps`` micro-batches, so P processes × G micro-batches of
  B/(P·G) equal one process × one batch of B (up to fp32 reduction order), and a resumed run sees exactly the batches
  an uninterrupted run sees.
* Checkpoints ``out_dir/checkpoints/step_<n>/``: ``save_pretrained`` safetensors model (+ ``ema/``) and
  ``state.pt`` (optimizer, scheduler, RNG states as tensors, step, samples, flops, data position, config) loadable
  with ``torch.load(weights_only=True)`` — a pickled object is refused. Written through ``sana_core.atomic.atomic_dir``,
  so a kill mid-write keeps the last complete one; a truncated or corrupt newest checkpoint is reported (file named)
  and set aside as ``.corrupt-step_<n>``, and the run resumes from the one before.
* A non-finite loss or gradient norm raises :class:`NonFiniteLossError` before the optimizer step; no
  ``out_dir/final`` is written. (Under fp16 a non-finite gradient is the loss scaler's business: the step is skipped
  and the scale lowered, as torch's GradScaler does; a non-finite loss still stops the run.)
* Only the main process writes files; every process takes part in gathering FSDP state for them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import flow
from .atomic import atomic_dir
from .flops import forward_flops_per_sample, train_flops
from .optim import OPTIMIZERS, build_optimizer, check_optimizer_args

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------- config
# key: (types, default). float keys accept ints; None allowed where the default is None or listed in _NULLABLE.
DEFAULTS: dict = {
    "steps": (int, 1000),
    "batch_size": (int, 32),  # the global batch of one optimizer step (all processes × all micro-batches)
    "lr": (float, 1e-4),
    "warmup_steps": (int, 0),
    # after the warm-up: constant (SANA's default) | cosine | linear — both decay to 0 at `steps`
    # (diffusers.optimization.get_scheduler); a decaying schedule's end moves with `steps`
    "lr_schedule": (str, "constant"),
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
    "compile": (bool, False),  # torch.compile the transformer (long runs only; compile time: docs/benchmarks.md)
    # torch.set_num_threads for the run (restored afterwards); None = torch's default, or the checkpoint's count when
    # resuming. CPU gradients are bit-identical only at the same thread count, which exact resume needs. Why the
    # default is 1 on the shared 2-core machine: docs/benchmarks.md.
    "num_threads": (int, 1),
    "progress": (bool, True),  # tqdm bar (main process; quiet when output is not a terminal)
    "mixed_precision": (str, "no"),  # no | bf16 | fp16 (autocast; fp32 master weights, optimizer and EMA)
    "gradient_accumulation_steps": (int, 1),
    "gradient_checkpointing": (bool, False),
    "distributed": (str, "none"),  # none | ddp | fsdp (fsdp: accelerate's FSDP2 plugin, also on CPU/gloo)
    # launch keys, read by flows/stage_runner.py (train() itself runs in whatever processes it was started in):
    "num_processes": (int, 1),  # processes in all (all machines together), as accelerate's --num_processes
    "num_machines": (int, 1),
    "machine_rank": (int, 0),
    "main_process_ip": (str, None),
    "main_process_port": (int, None),
    "accelerate_config": (str, None),  # an accelerate config file; its settings win over the keys above
}
CHOICES = {"optimizer": OPTIMIZERS, "lr_schedule": ("constant", "cosine", "linear"), "mixed_precision": ("no", "bf16", "fp16"), "distributed": ("none", "ddp", "fsdp")}
LAUNCH_KEYS = ("num_processes", "num_machines", "machine_rank", "main_process_ip", "main_process_port",
               "accelerate_config")
_NULLABLE = {"grad_clip", "ema", "num_threads", "main_process_ip", "main_process_port", "accelerate_config"}
# keys that may change between a checkpoint and its resumption (the batch order does not depend on the process count)
RESUME_FREE = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "compile", "num_threads", "progress",
               "gradient_checkpointing", *LAUNCH_KEYS}


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
    for key, allowed in CHOICES.items():
        if out[key] not in allowed:
            raise ValueError(f"train config key {key!r} must be one of {list(allowed)}, got {out[key]!r}")
    procs, accum = out["num_processes"], out["gradient_accumulation_steps"]
    checks = {
        "steps": out["steps"] >= 1, "batch_size": out["batch_size"] >= 1, "lr": out["lr"] >= 0,
        "warmup_steps": out["warmup_steps"] >= 0, "weight_decay": out["weight_decay"] >= 0,
        "grad_clip": out["grad_clip"] is None or out["grad_clip"] >= 0, "shift": out["shift"] > 0,
        "logit_std": out["logit_std"] > 0, "caption_dropout": 0 <= out["caption_dropout"] <= 1,
        "checkpoint_every": out["checkpoint_every"] >= 0, "keep_checkpoints": out["keep_checkpoints"] >= 0,
        "ema": out["ema"] is None or 0 < out["ema"] < 1, "log_every": out["log_every"] >= 1,
        "num_threads": out["num_threads"] is None or out["num_threads"] >= 1,
        "gradient_accumulation_steps": accum >= 1, "num_processes": procs >= 1, "num_machines": out["num_machines"] >= 1,
        "machine_rank": 0 <= out["machine_rank"] < out["num_machines"],
        "main_process_port": out["main_process_port"] is None or 0 < out["main_process_port"] < 65536,
    }
    bad = [k for k, good in checks.items() if not good]
    if bad:
        raise ValueError(f"train config key(s) out of range: {', '.join(f'{k}={out[k]!r}' for k in bad)}")
    if (procs > 1 or out["num_machines"] > 1) and out["distributed"] == "none":
        raise ValueError(f"train config key 'distributed' is 'none' but num_processes={procs}, "
                         f"num_machines={out['num_machines']}: set distributed to ddp or fsdp")
    if out["num_machines"] > 1 and not out["accelerate_config"] and not (out["main_process_ip"]
                                                                         and out["main_process_port"]):
        raise ValueError("train config keys 'main_process_ip' and 'main_process_port' are needed with "
                         f"num_machines={out['num_machines']} (or name an accelerate_config file)")
    if out["batch_size"] % (procs * accum):
        raise ValueError(f"train config key 'batch_size'={out['batch_size']} is not divisible by num_processes × "
                         f"gradient_accumulation_steps = {procs} × {accum}")
    try:
        check_optimizer_args(out["optimizer"], out["optimizer_args"], out["lr"], out["weight_decay"])
    except ValueError as e:
        msg = str(e)
        raise ValueError("train." + msg.replace("optimizer.", "optimizer_args.", 1)
                         if msg.startswith("optimizer.") else msg) from e
    return out


def config_changes(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every key of ``new`` (validated) that differs from the checkpoint's config ``old`` and
    may not change on resume (keys added to train.py later count as their default; ``distributed`` none ⇄ ddp is the
    same maths and checkpoint layout, fsdp is not)."""
    def same(k, a, b):
        return a == b or (k == "distributed" and {a, b} == {"none", "ddp"})

    return [f"{k}: {old.get(k, DEFAULTS[k][1])!r} -> {v!r}" for k, v in new.items()
            if k not in RESUME_FREE and not same(k, old.get(k, DEFAULTS[k][1]), v)]


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss or the gradient norm of a step is NaN/inf (before the optimizer step)."""

    def __init__(self, step: int, loss: float, grad_norm: float):
        self.step, self.loss, self.grad_norm = step, loss, grad_norm
        super().__init__(f"non-finite training step {step}: loss={loss}, grad_norm={grad_norm}; "
                         "stopped without writing a final model (last good checkpoint kept)")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read back (truncated, corrupt, or holding a pickled Python object)."""


# ------------------------------------------------------------------------------------------------------- data
@dataclass
class TensorData:
    """In-memory training set (the training-data protocol): latents [N,C,H,W], caption embeddings [U,L,E] with masks
    [U,L], optional ``caption_index`` [N] (image → caption row; identity when None, then U = N), null embedding [L,E].

    Batches are a deterministic function of (seed, step): epoch e uses permutation randperm(N) seeded by
    (seed, e); sample position p = step·B + i maps to epoch p // N, slot p % N (batches may straddle epochs).
    """

    latents: torch.Tensor
    emb: torch.Tensor
    mask: torch.Tensor
    null_emb: torch.Tensor | None = None
    caption_index: torch.Tensor | None = None
    _perm_cache: dict = field(default_factory=dict, init=False, repr=False)

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

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.latents.shape[1:])

    @property
    def text_shape(self) -> tuple[int, int]:
        return tuple(self.emb.shape[1:])

    def fingerprint(self) -> str:
        """Hash of the samples and captions (shapes + bytes of every tensor)."""
        h = hashlib.blake2b(digest_size=16)
        for t in (self.latents, self.emb, self.mask, self.caption_index, self.null_emb):
            h.update(b"-" if t is None else f"{tuple(t.shape)}{t.dtype}".encode())
            if t is not None:
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()

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


PROTOCOL = ("__len__", "indices", "batch", "latent_shape", "text_shape", "null_emb", "fingerprint")


def as_data(data):
    """Accept any object with the training-data protocol (:data:`PROTOCOL`, e.g. :class:`TensorData`), a
    ``sana_core.cache.Cache`` or cache directory (``load_cache``), a dict with keys latents/emb/mask[/null_emb/
    caption_index], or a (latents, emb, mask[, null_emb]) tuple."""
    if all(hasattr(data, a) for a in PROTOCOL):
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
    raise TypeError(f"unsupported training data: {type(data).__name__} (needs {', '.join(PROTOCOL)})")


def _gen(seed: int, stream: int, n: int) -> torch.Generator:
    """Independent generator for (seed, stream, n) (splitmix-style mixing into 63 bits)."""
    x = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + n * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return torch.Generator().manual_seed(x & (2**63 - 1))


# ------------------------------------------------------------------------------------------------ checkpoints
CKPT_DIR = "checkpoints"
FINAL_DIR = "final"
STATE_FILE = "state.pt"
_STATE_KEYS = ("step", "samples", "flops", "data_position", "loss", "wall_time_s", "optimizer", "scheduler", "rng",
               "config")


def list_checkpoints(out_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, path), oldest first. Temp dirs of interrupted writes and checkpoints set aside as
    corrupt (``.corrupt-step_<n>``) are ignored."""
    root = Path(out_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.name.startswith("step_") and p.name[5:].isdigit() and (p / STATE_FILE).is_file():
            found.append((int(p.name[5:]), p))
    return sorted(found)


def load_state(ckpt_dir) -> dict:
    """A checkpoint's ``state.pt`` (plain tensors and containers only: ``torch.load(weights_only=True)``);
    :class:`CorruptCheckpointError` naming the file when it is truncated, corrupt, incomplete or pickles an object."""
    f = Path(ckpt_dir) / STATE_FILE
    try:
        st = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — torch raises RuntimeError/EOFError/UnpicklingError by failure kind
        if "Weights only load failed" in str(e):
            raise CorruptCheckpointError(f"{f}: refused: it holds a pickled Python object, and a checkpoint may "
                                         "hold only tensors and plain containers (torch.load weights_only)") from None
        raise CorruptCheckpointError(f"{f}: truncated or corrupt checkpoint state ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0] if str(e) else ''})") from None
    missing = [k for k in _STATE_KEYS if not isinstance(st, dict) or k not in st]
    if missing:
        raise CorruptCheckpointError(f"{f}: incomplete checkpoint state, missing {missing}")
    return st


def load_weights(folder) -> dict[str, torch.Tensor]:
    """All tensors of the ``*.safetensors`` files in ``folder``; :class:`CorruptCheckpointError` naming the file when
    one is truncated or corrupt, FileNotFoundError when there is none."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    sd = {}
    for f in files:
        try:
            sd.update(load_file(f))
        except Exception as e:  # noqa: BLE001 — SafetensorError / OSError
            raise CorruptCheckpointError(f"{f}: truncated or corrupt weights ({type(e).__name__}: {e})") from None
    return sd


def load_model_weights(model: torch.nn.Module, folder) -> None:
    """Load a model folder's safetensors weights into ``model`` (strict)."""
    model.load_state_dict(load_weights(folder), strict=True)


@dataclass
class ResumePoint:
    """A checkpoint read back whole: its step, folder, ``state.pt`` and weights (EMA weights when it has ``ema/``)."""

    step: int
    path: Path
    state: dict
    weights: dict
    ema: dict | None


def read_checkpoint(path) -> ResumePoint:
    """Read every file of a checkpoint folder; CorruptCheckpointError naming the first unreadable one."""
    path = Path(path)
    state = load_state(path)
    return ResumePoint(state["step"], path, state, load_weights(path),
                       load_weights(path / "ema") if (path / "ema").is_dir() else None)


def _newest_readable(out_dir) -> ResumePoint | None:
    """The newest checkpoint whose files all read back; unreadable newer ones are logged (file named) and skipped."""
    for _, path in reversed(list_checkpoints(out_dir)):
        try:
            return read_checkpoint(path)
        except CorruptCheckpointError as e:
            log.warning("%s — resuming from the checkpoint before it", e)
    return None


def resume_point(out_dir, cfg: dict) -> ResumePoint | None:
    """The checkpoint ``train(..., resume=True)`` continues (the newest readable one), or None; ValueError, before
    anything is deleted or computed, when it cannot be continued with ``cfg`` (changed keys, steps below it)."""
    cfg = validate_config(cfg)
    point = _newest_readable(out_dir)
    if point is None:
        return None
    changed = config_changes(point.state["config"], cfg)
    if changed:
        raise ValueError(f"cannot resume {point.path}: train config key(s) changed since the checkpoint: "
                         + ", ".join(changed))
    if point.step > cfg["steps"]:
        raise ValueError(f"train config key 'steps'={cfg['steps']} is below the checkpoint's step {point.step} "
                         f"({point.path}); raise steps or pass resume=False")
    if cfg["ema"] and point.ema is None:
        raise ValueError(f"cannot resume {point.path}: train.ema is set but the checkpoint has no ema/ folder")
    return point


def can_resume(out_dir, cfg: dict, inputs: dict | None = None) -> bool:
    """Whether ``out_dir`` holds a readable checkpoint made with the same training config (up to
    :data:`RESUME_FREE`) and the same ``inputs`` (as passed to :func:`train`): the one resume check
    (flows/stages/_common.run_training asks it before training; every process gets the same answer, since nothing is
    written before train's processes meet)."""
    point = _newest_readable(out_dir) if Path(out_dir).exists() else None
    return (point is not None and point.state.get("inputs") == inputs
            and not config_changes(point.state["config"], validate_config(cfg)))


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ------------------------------------------------------------------------------------------------------ train
def cpu_capability() -> str:
    """The vector ISA torch's CPU kernels dispatch to ("AVX512", "AVX2", ...; lowered by ATEN_CPU_CAPABILITY).
    Recorded beside the thread count: CPU weights are reproducible only on the same ISA and thread count
    (docs/results.md §13)."""
    return torch.backends.cpu.get_cpu_capability()


def train(model: torch.nn.Module, data, cfg: dict, out_dir, callback: Callable[[int, dict], None] | None = None,
          resume: bool = True, optimizer_factory: Callable | None = None, name: str = "train",
          inputs: dict | None = None) -> dict:
    """Train ``model`` in place; returns a summary dict (loss, steps, samples, flops, wall_time_s, ...). Under FSDP
    across processes ``model`` stays sharded (:func:`is_sharded`): read the trained weights from ``out_dir/final``.

    ``callback(step, {"loss", "lr", "grad_norm", "samples_per_s"})`` is called every ``log_every`` steps and on the
    last step (main process only), as is a ``logging`` INFO line naming ``name`` (the stage) with step, loss,
    samples/s and ETA. ``optimizer_factory(params, lr=..., weight_decay=...)`` replaces the named optimizer. With
    ``resume`` the newest readable checkpoint in ``out_dir/checkpoints`` is continued; without it existing
    checkpoints are deleted first. ``inputs`` (JSON-able, e.g. data fingerprint + initial weights) is stored in the
    checkpoints for :func:`can_resume`.
    """
    cfg = validate_config(cfg)
    data = as_data(data)
    out_dir = Path(out_dir)
    _check_inputs(model, data, cfg)
    point = resume_point(out_dir, cfg) if resume else None  # checked before anything is deleted or computed
    threads_before = torch.get_num_threads()
    threads = cfg["num_threads"]
    if threads is None and point is not None:  # CPU backward reductions depend on the thread count
        threads = point.state.get("num_threads")
    if threads:
        torch.set_num_threads(threads)
    try:
        run = _Run(model, data, cfg, out_dir, callback, name, inputs)
        run.setup(point, resume, optimizer_factory)
        return run.loop()
    finally:
        torch.set_num_threads(threads_before)


def _check_inputs(model, data, cfg: dict) -> None:
    """Data ⇄ model ⇄ config ⇄ machine mismatches, before any output or compute."""
    if cfg["caption_dropout"] > 0 and data.null_emb is None:
        raise ValueError("train config key 'caption_dropout' > 0 but the training data has no null embedding")
    mcfg = model.config
    if data.latent_shape[0] != mcfg.in_channels:
        raise ValueError(f"latent channels {data.latent_shape[0]} != model in_channels {mcfg.in_channels}")
    if data.text_shape[1] != mcfg.caption_channels:
        raise ValueError(f"embedding width {data.text_shape[1]} != model caption_channels {mcfg.caption_channels}")


def _accelerator(cfg: dict):
    """accelerate's Accelerator for the config: autocast precision (+ loss scaler for fp16), FSDP2 plugin (one unit
    per transformer block, full state dicts for saving) when ``distributed`` is fsdp. ``cpu=True`` without CUDA lets
    a ``torchrun`` / ``accelerate launch --multi_gpu`` start run as MULTI_CPU (gloo)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    # accelerate keeps one process-wide state: a second run in this process with another precision or plugin would
    # be refused, so it is reset (the process group, PartialState, is kept)
    AcceleratorState._reset_state()
    kw = {}
    if cfg["distributed"] == "fsdp":
        from accelerate.utils import FullyShardedDataParallelPlugin

        kw["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["SanaTransformerBlock"], reshard_after_forward=True,
            state_dict_type="FULL_STATE_DICT", cpu_ram_efficient_loading=False)
    acc = Accelerator(mixed_precision=cfg["mixed_precision"], cpu=not torch.cuda.is_available(), **kw)
    if "fsdp_plugin" in kw and acc.distributed_type == DistributedType.MULTI_CPU:
        # accelerate turns the plugin on only for multi-accelerator types and runs CPU processes (MULTI_CPU, gloo) as
        # DDP; its FSDP2 path itself (fully_shard on a CPU device mesh, DTensor gradients, clipping, no_sync) runs on
        # CPU, so the state is set to FSDP as accelerate does for GPUs (docs/orchestration.md)
        if cfg["mixed_precision"] != "no":
            kw["fsdp_plugin"].set_mixed_precision(cfg["mixed_precision"])
        acc.state.distributed_type, acc.state.fsdp_plugin = DistributedType.FSDP, kw["fsdp_plugin"]
    if cfg["mixed_precision"] == "fp16" and acc.device.type == "cpu":
        # accelerate enables fp16 only on accelerators (on the CPU it would silently train fp32: no autocast, no loss
        # scaler); torch's CPU autocast has fp16 kernels and GradScaler("cpu"), so both are switched on as accelerate
        # does on a GPU. On a CPU this is a correctness path (the fp16 tests), not a speed-up
        acc.native_amp, acc.scaler = True, torch.amp.GradScaler("cpu")
    return acc


def _is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor"


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds FSDP2-sharded (DTensor) parameters — after :func:`train` with ``distributed: fsdp``
    across processes, which shards the model in place (torch's ``fully_shard``; the whole trained weights are then in
    ``out_dir/final``)."""
    return any(_is_dtensor(p) for p in model.parameters())


def _gather(tensors: dict, keep: bool) -> dict | None:
    """{name: whole tensor on the CPU}, gathered one tensor at a time by every process (a collective per DTensor);
    only a process with ``keep`` holds the result (the others None), so host memory holds one full copy."""
    out = {}
    for k, t in tensors.items():
        full = t.full_tensor() if _is_dtensor(t) else t
        if keep:
            out[k] = full.detach().cpu()
        del full
    return out if keep else None


# named ranges of a step for torch.profiler (bench/train_step.py --profile-steps); no effect when not profiling
_phase = torch.profiler.record_function


def _step_fn(model, x0, emb, mask, sigma, noise, drop, null_emb, cfg):
    x_t, t, target, emb = flow.flow_training_inputs(x0, emb, sigma, noise, drop, null_emb, cfg["integer_timestep"])
    pred = model(x_t, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]
    return flow.flow_loss(pred, target)


class _Run:
    """One training run in named steps: ``setup`` (accelerator, output folder, optimizer, restore, ``prepare``, EMA)
    → ``loop`` (``optimizer_step`` × steps, ``log``, ``save_checkpoint``) → ``save_final``."""

    def __init__(self, model, data, cfg, out_dir, callback, name, inputs):
        self.raw, self.data, self.cfg, self.out_dir, self.callback, self.name = model, data, cfg, out_dir, callback, name
        self.inputs = inputs
        self.step = self.samples = 0
        self.flops = self.wall_prev = 0.0
        self.resumed_from, self.loss = None, float("nan")
        self.skipped = 0  # fp16 steps the loss scaler skipped

    # -------------------------------------------------------------------------------------------- setup
    def setup(self, point: ResumePoint | None, resume: bool, optimizer_factory) -> None:
        from diffusers.optimization import get_scheduler

        cfg = self.cfg
        self.acc = acc = _accelerator(cfg)
        self.world, rank = acc.num_processes, acc.process_index
        # sharded for real only across processes (one process with distributed=fsdp trains unsharded, as accelerate
        # does on one GPU)
        self.fsdp = acc.distributed_type == "FSDP"
        B, G = cfg["batch_size"], cfg["gradient_accumulation_steps"]
        if B % (self.world * G):
            raise ValueError(f"train config key 'batch_size'={B} is not divisible by {self.world} processes × "
                             f"{G} accumulation steps")
        self.local = slice(rank * (B // self.world), (rank + 1) * (B // self.world))
        self._prepare_out_dir(point, resume)

        raw = self.raw
        raw.train()
        if cfg["gradient_checkpointing"]:
            raw.enable_gradient_checkpointing()
        self.fwd_flops = forward_flops_per_sample(raw, self.data.latent_shape, self.data.text_shape[0])
        make_opt = optimizer_factory or (lambda ps, **kw: build_optimizer(cfg["optimizer"], ps, **kw,
                                                                          **cfg["optimizer_args"]))
        if point is not None:
            raw.load_state_dict(point.weights, strict=True)
        self.optimizer = make_opt([p for p in raw.parameters() if p.requires_grad], lr=cfg["lr"],
                                  weight_decay=cfg["weight_decay"])
        # not passed to acc.prepare: AcceleratedScheduler would step once per process (SANA's warmup×P trap)
        name = {"constant": "constant_with_warmup"}.get(cfg["lr_schedule"], cfg["lr_schedule"])
        self.scheduler = get_scheduler(name, self.optimizer, num_warmup_steps=cfg["warmup_steps"],
                                       num_training_steps=cfg["steps"])
        # model and optimizer together: under FSDP2 prepare shards the parameters and swaps them in the optimizer
        self.model, self.optimizer = acc.prepare(raw, self.optimizer)
        if point is not None:
            self._restore(point)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # EMA after prepare, on the weights' device and in fp32 (the weights are fp32 masters under autocast); under
        # FSDP it is sharded like the weights and gathered when saved
        self.ema = None
        if cfg["ema"]:
            self.ema = [p.detach().clone().float() for p in self.params]
            if point is not None:
                names = [n for n, p in acc.unwrap_model(self.model).named_parameters() if p.requires_grad]
                for e, n in zip(self.ema, names):
                    src = point.ema[n].to(e.dtype)
                    (e.to_local() if _is_dtensor(e) else e).copy_(_local_shard(e, src) if _is_dtensor(e)
                                                                 else src.to(e.device))
        if cfg["compile"]:
            self.model = torch.compile(self.model)
        self.null_emb = self.data.null_emb.to(acc.device) if self.data.null_emb is not None else None

    def _prepare_out_dir(self, point: ResumePoint | None, resume: bool) -> None:
        """Main process: clear what this run replaces (old checkpoints without ``resume``, a stale final, temp dirs
        of killed writes) and set aside checkpoints newer than the resume point (unreadable: ``.corrupt-step_<n>``)."""
        out = self.out_dir
        if self.acc.is_main_process:
            if not resume:
                shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
            shutil.rmtree(out / FINAL_DIR, ignore_errors=True)  # never leave a stale final next to a new run
            (out / CKPT_DIR).mkdir(parents=True, exist_ok=True)
            for p in (out / CKPT_DIR).glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)
            for s, p in list_checkpoints(out):
                if point is None or s > point.step:
                    dest = p.parent / f".corrupt-{p.name}"
                    shutil.rmtree(dest, ignore_errors=True)
                    os.replace(p, dest)
                    log.warning("set aside unreadable checkpoint %s as %s", p, dest.name)
        self.acc.wait_for_everyone()

    def _restore(self, point: ResumePoint) -> None:
        st = point.state
        if self.fsdp:
            _load_sharded_optimizer(self.optimizer, st, self.acc.process_index)
        else:
            self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        _set_rng_state(st["rng"])
        self.step, self.samples, self.flops, self.wall_prev = st["step"], st["samples"], st["flops"], st["wall_time_s"]
        self.loss, self.resumed_from = st["loss"], point.step
        if st["data_position"] != self.step * self.cfg["batch_size"]:
            raise ValueError(f"checkpoint {point.path}: data position {st['data_position']} != step×batch "
                             f"{self.step * self.cfg['batch_size']}")

    # --------------------------------------------------------------------------------------------- step
    def optimizer_step(self) -> tuple[float, float, float]:
        """One optimizer step on the global batch of ``self.step`` (this process's slice, in accumulation
        micro-batches); returns (loss averaged over processes, gradient norm, lr). NonFiniteLossError before the
        update when the loss or gradient norm is NaN/inf."""
        cfg, acc, data, B = self.cfg, self.acc, self.data, self.cfg["batch_size"]
        G = cfg["gradient_accumulation_steps"]
        idx = data.indices(cfg["seed"], self.step, B)[self.local]
        sigma, noise, drop = flow.draw_flow_noise(
            B, tuple(data.latent_shape), generator=_gen(cfg["seed"], 0xF10, self.step), shift=cfg["shift"],
            logit_mean=cfg["logit_mean"], logit_std=cfg["logit_std"], caption_dropout=cfg["caption_dropout"])
        sigma, noise, drop = sigma[self.local], noise[self.local], drop[self.local]
        micro = len(idx) // G
        losses = []
        for g in range(G):
            m = slice(g * micro, (g + 1) * micro)
            sync = contextlib.nullcontext() if g == G - 1 else acc.no_sync(self.model)
            with sync:
                with _phase("data"):
                    x0, emb, mask = (t.to(acc.device, non_blocking=True) for t in data.batch(idx[m]))
                with _phase("forward"):
                    loss = _step_fn(self.model, x0, emb, mask, sigma[m], noise[m], drop[m], self.null_emb, cfg)
                with _phase("backward"):
                    acc.backward(loss / G if G > 1 else loss)
            losses.append(loss.detach())
        loss = losses[0] if G == 1 else torch.stack(losses).mean()
        max_norm = cfg["grad_clip"] if cfg["grad_clip"] else float("inf")
        with _phase("clip"):
            grad_norm = float(acc.clip_grad_norm_(self.params, max_norm))
        loss_val = float(acc.reduce(loss, reduction="mean")) if self.world > 1 else float(loss)
        scaled = acc.scaler is not None  # fp16: an inf/NaN gradient makes the scaler skip the step and lower the scale
        if not (math.isfinite(loss_val) and (math.isfinite(grad_norm) or scaled)):
            raise NonFiniteLossError(self.step + 1, loss_val, grad_norm)
        self.skipped += not math.isfinite(grad_norm)
        lr_now = self.optimizer.param_groups[0]["lr"]
        with _phase("optimizer"):
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            with _phase("ema"), torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1.0 - cfg["ema"])
        return loss_val, grad_norm, lr_now

    # --------------------------------------------------------------------------------------------- loop
    def loop(self) -> dict:
        cfg, acc = self.cfg, self.acc
        B, steps = cfg["batch_size"], cfg["steps"]
        main = acc.is_main_process
        self.t_start = t_log = time.time()
        start_step, samples_log = self.step, self.samples
        bar = tqdm(total=steps, initial=self.step, desc=self.name, mininterval=10.0,
                   disable=None if (cfg["progress"] and main) else True)  # None: quiet when not a terminal
        try:
            while self.step < steps:
                self.loss, grad_norm, lr_now = self.optimizer_step()
                self.step += 1
                self.samples += B
                self.flops += train_flops(self.fwd_flops, B)
                bar.update(1)
                if self.step % cfg["log_every"] == 0 or self.step == steps:
                    now = time.time()
                    metrics = {"loss": self.loss, "lr": lr_now, "grad_norm": grad_norm,
                               "samples_per_s": (self.samples - samples_log) / max(now - t_log, 1e-9)}
                    t_log, samples_log = now, self.samples
                    bar.set_postfix(loss=f"{self.loss:.4f}", gn=f"{grad_norm:.3f}", refresh=False)
                    if main:
                        eta = (now - self.t_start) / (self.step - start_step) * (steps - self.step)
                        log.info("%s: step %d/%d loss %.4f %.1f samples/s ETA %s", self.name, self.step, steps,
                                 self.loss, metrics["samples_per_s"], time.strftime("%H:%M:%S", time.gmtime(eta)))
                        if self.callback is not None:
                            self.callback(self.step, metrics)
                if cfg["checkpoint_every"] and self.step % cfg["checkpoint_every"] == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
        return self.save_final()

    # ------------------------------------------------------------------------------------------- saving
    def _weights(self) -> tuple[dict | None, dict | None]:
        """(model, EMA) state dicts for saving under FSDP (gathered by every process, kept on the main one); (None,
        None) otherwise: the unwrapped model and EMA are saved as they are."""
        if not self.fsdp:
            return None, None
        main, unwrapped = self.acc.is_main_process, self.acc.unwrap_model(self.model)
        names = [n for n, p in unwrapped.named_parameters() if p.requires_grad]
        # gathered here: accelerate's get_state_dict (torch's get_model_state_dict with broadcast_from_rank0) returns
        # the DTensor shards unchanged under torch 2.13
        sd = _gather(unwrapped.state_dict(), main)
        ema = _gather(dict(zip(names, self.ema)), main) if self.ema is not None else None
        return (sd, ema) if main else (None, None)

    def _write_weights(self, folder: Path, sd: dict | None, ema: dict | None) -> None:
        """The model (+ ``ema/``) in ``save_pretrained``'s layout: a plain diffusers folder in every mode."""
        if sd is None:
            self.raw.save_pretrained(folder, safe_serialization=True)
        else:
            self._save_sd(folder, sd)
        if self.ema is not None:
            if ema is None:  # not FSDP: the EMA tensors are whole on this process
                names = [n for n, p in self.raw.named_parameters() if p.requires_grad]
                ema = dict(zip(names, self.ema))
            self._save_sd(folder / "ema", {**(sd if sd is not None else self.raw.state_dict()), **ema})

    def _save_sd(self, folder: Path, sd: dict) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.raw.save_config(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()},
                  folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})

    def save_checkpoint(self) -> None:
        acc, B = self.acc, self.cfg["batch_size"]
        sd, ema = self._weights()
        optim = _gather_sharded_optimizer(self.optimizer, acc) if self.fsdp else self.optimizer.state_dict()
        if acc.is_main_process:
            state = {
                "step": self.step, "samples": self.samples, "flops": self.flops,
                "flops_per_sample_forward": self.fwd_flops, "data_position": self.step * B, "loss": self.loss,
                "wall_time_s": self.wall_prev + (time.time() - self.t_start), "optimizer": optim,
                "scheduler": self.scheduler.state_dict(), "rng": _rng_state(), "config": self.cfg,
                "world_size": self.world, "num_threads": torch.get_num_threads(), "inputs": self.inputs,
            }

            def write(tmp: Path):
                self._write_weights(tmp, sd, ema)
                torch.save(state, tmp / STATE_FILE)

            atomic_dir(self.out_dir / CKPT_DIR / f"step_{self.step}", write)
            if self.cfg["keep_checkpoints"]:
                for _, p in list_checkpoints(self.out_dir)[:-self.cfg["keep_checkpoints"]]:
                    shutil.rmtree(p, ignore_errors=True)
        acc.wait_for_everyone()

    def save_final(self) -> dict:
        acc = self.acc
        summary = {"loss": self.loss, "steps": self.step, "samples": self.samples, "flops": self.flops,
                   "flops_per_sample_forward": self.fwd_flops,
                   "wall_time_s": self.wall_prev + (time.time() - self.t_start), "resumed_from": self.resumed_from,
                   "world_size": self.world, "num_threads": torch.get_num_threads(), "cpu_capability": cpu_capability(),
                   "config": self.cfg}
        if self.skipped:
            summary["fp16_skipped_steps"] = self.skipped
        sd, ema = self._weights()
        if acc.is_main_process:
            def write(tmp: Path):
                self._write_weights(tmp, sd, ema)
                (tmp / "train_summary.json").write_text(json.dumps(summary, indent=2))

            atomic_dir(self.out_dir / FINAL_DIR, write)
        acc.wait_for_everyone()
        return summary


# --------------------------------------------------------------------------------------------- FSDP2 helpers
def _local_shard(dt, full: torch.Tensor) -> torch.Tensor:
    """This process's shard of ``full`` laid out like DTensor ``dt`` (FSDP2 shards dim 0)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(dt.device), dt.device_mesh, dt.placements).to_local()


def _gather_sharded_optimizer(optimizer, acc) -> list[dict] | None:
    """FSDP2: every process's optimizer state with DTensor entries as their local shards, gathered on the main
    process (a list indexed by rank); resume needs the same process count."""
    import torch.distributed as dist

    sd = optimizer.state_dict()
    local = {"param_groups": sd["param_groups"],
             "state": {k: {n: (v.to_local() if _is_dtensor(v) else v).cpu() if torch.is_tensor(v) else v
                           for n, v in s.items()} for k, s in sd["state"].items()}}
    out = [None] * acc.num_processes if acc.is_main_process else None
    dist.gather_object(local, out, dst=0)
    return out


def _load_sharded_optimizer(optimizer, state: dict, rank: int) -> None:
    shards = state["optimizer"]
    if not isinstance(shards, list) or len(shards) <= rank:
        raise ValueError(f"checkpoint optimizer state has {len(shards) if isinstance(shards, list) else 'no'} FSDP "
                         "shards: resume an FSDP run with the process count it was saved with")
    optimizer.load_state_dict(shards[rank])
    from torch.distributed.tensor import DTensor

    for p, st in optimizer.state.items():  # local shards back to DTensors laid out like their parameter
        if _is_dtensor(p):
            for k, v in st.items():
                if torch.is_tensor(v) and not _is_dtensor(v) and v.shape == p.to_local().shape and v.ndim:
                    st[k] = DTensor.from_local(v.to(p.device), p.device_mesh, p.placements, run_check=False)
