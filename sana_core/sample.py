"""Sampling (sana15-method.md §6, stack-notes §5) and model folders that load in stock `diffusers.SanaPipeline`.

- Solvers: "dpm" = Flow-DPM-Solver = diffusers `DPMSolverMultistepScheduler(flow_shift=s, use_flow_sigmas=True,
  prediction_type="flow_prediction")` (2nd-order multistep, SANA's default, 20 steps); "euler" =
  `FlowMatchEulerDiscreteScheduler(shift=s)`. s = 3.0. The model gets the scheduler's timesteps × `timestep_scale`
  (integer σ·1000 for DPM, as SANA truncates).
- CFG (default 4.5): uncond and cond run as one batch `[uncond, cond]`, ε̂ = ε̂_u + w(ε̂_c − ε̂_u); off for w ≤ 1.
  The uncond branch is the null embedding (`""`, no CHI). Its mask: `uncond_mask="prompt"` (default) reuses the
  prompt's mask as SANA does (`SanaMS.forward` repeats the prompt mask; training caption dropout keeps it too);
  `"null"` uses the `""` mask, which is what stock `SanaPipeline` does when it encodes the negative prompt itself.
- Determinism: sample k's initial noise is `randn((1,C,h,w), generator=Generator().manual_seed(seed_k))` — the
  same as diffusers' `randn_tensor` with a list of generators — so an image depends only on its (prompt, seed), not
  on the batch it ran in (to float rounding, < 1e-5 measured).

Model folder (`save_pipeline`): `SanaPipeline.save_pretrained` (transformer, vae=AutoencoderDC, text_encoder +
tokenizer, scheduler, model_index.json) + `sana15.json` with our sampling defaults (steps, guidance, solver, shift,
image size, max_sequence_length, CHI, uncond mask). Stock use: `SanaPipeline.from_pretrained(dir)(prompts,
height=H, width=W, complex_human_instruction=None, use_resolution_binning=False, max_sequence_length=L)`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_dir
from .latents import Codec, to_uint8
from .progress import track
from .text import TextEncoder, from_pipeline_parts

SOLVERS = ("dpm", "euler")
UNCOND_MASKS = ("prompt", "null")
META_FILE = "sana15.json"


@dataclass
class SamplingConfig:
    steps: int = 20
    guidance_scale: float = 4.5
    solver: str = "dpm"
    shift: float = 3.0
    uncond_mask: str = "prompt"
    image_size: int | None = None     # None → transformer.sample_size × codec factor
    batch_size: int = 64              # samples per forward batch (CFG doubles it)

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"sampling.solver: unknown solver {self.solver!r}; choose from {list(SOLVERS)}")
        if self.uncond_mask not in UNCOND_MASKS:
            raise ValueError(f"sampling.uncond_mask: {self.uncond_mask!r} not in {list(UNCOND_MASKS)}")
        if int(self.steps) < 1:
            raise ValueError(f"sampling.steps: {self.steps} must be >= 1")
        if self.shift <= 0:
            raise ValueError(f"sampling.shift: {self.shift} must be > 0")
        if int(self.batch_size) < 1:
            raise ValueError(f"sampling.batch_size: {self.batch_size} must be >= 1")

    @classmethod
    def from_dict(cls, d: dict | None) -> "SamplingConfig":
        d = {k: v for k, v in (d or {}).items() if k not in ("device", "dtype")}   # placement: load_sampler's
        bad = sorted(set(d) - set(cls.__dataclass_fields__))
        if bad:
            raise ValueError(f"sampling: unknown key(s) {bad}; allowed {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def make_scheduler(solver: str = "dpm", shift: float = 3.0):
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
    if solver == "dpm":
        return DPMSolverMultistepScheduler(flow_shift=shift, use_flow_sigmas=True, prediction_type="flow_prediction")
    if solver == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    raise ValueError(f"sampling.solver: unknown solver {solver!r}; choose from {list(SOLVERS)}")


def initial_noise(seeds, shape: tuple[int, int, int]) -> torch.Tensor:
    """[B,C,h,w] noise; row k depends only on seeds[k] (as diffusers' randn_tensor with a list of generators)."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample_latents(transformer, emb: torch.Tensor, mask: torch.Tensor, null_emb: torch.Tensor, noise: torch.Tensor,
                   steps: int = 20, guidance_scale: float = 4.5, solver: str = "dpm", shift: float = 3.0,
                   uncond_mask: str = "prompt", null_mask: torch.Tensor | None = None, on_step=None) -> torch.Tensor:
    """Integrate the flow ODE from `noise` [B,C,h,w] with per-sample text `emb` [B,L,C] / `mask` [B,L].
    `on_step(i, t, x)` is called after each solver step. The model's train/eval mode is restored afterwards."""
    if uncond_mask not in UNCOND_MASKS:
        raise ValueError(f"sampling.uncond_mask: {uncond_mask!r} not in {list(UNCOND_MASKS)}")
    if uncond_mask == "null" and null_mask is None:
        raise ValueError("sampling: uncond_mask='null' needs null_mask")
    B = noise.shape[0]
    null_emb = null_emb.reshape(1, *null_emb.shape[-2:])               # accept [L,C] or [1,L,C]
    if null_mask is not None:
        null_mask = null_mask.reshape(1, -1)
    if emb.shape[0] != B or mask.shape[0] != B:
        raise ValueError(f"sampling: {B} noise rows but emb {tuple(emb.shape)} / mask {tuple(mask.shape)}")
    dev = next(transformer.parameters()).device
    dtype = transformer.dtype
    cfg = guidance_scale > 1.0
    if cfg:
        umask = mask if uncond_mask == "prompt" else null_mask.expand(B, -1)
        enc = torch.cat([null_emb.expand(B, -1, -1), emb]).to(dev, dtype)
        enc_mask = torch.cat([umask, mask]).to(dev)
    else:
        enc, enc_mask = emb.to(dev, dtype), mask.to(dev)
    sched = make_scheduler(solver, shift)
    sched.set_timesteps(steps, device=dev)
    x = noise.to(dev, torch.float32)
    ts = float(getattr(transformer.config, "timestep_scale", 1.0))
    was_training = transformer.training
    transformer.eval()
    try:
        for i, t in enumerate(sched.timesteps):
            xin = torch.cat([x, x]) if cfg else x
            v = transformer(xin.to(dtype), encoder_hidden_states=enc, encoder_attention_mask=enc_mask,
                            timestep=t.expand(xin.shape[0]) * ts, return_dict=False)[0].float()
            if cfg:
                vu, vc = v.chunk(2)
                v = vu + guidance_scale * (vc - vu)
            x = sched.step(v, t, x, return_dict=False)[0]
            if on_step is not None:
                on_step(i, t, x)
    finally:
        transformer.train(was_training)
    return x


class Sampler:
    """Transformer + codec + text encoder + sampling defaults. `generate(prompts, seeds)` → uint8 [B,H,W,3]."""

    def __init__(self, transformer, codec: Codec, text_encoder: TextEncoder, config: SamplingConfig | dict | None = None):
        self.transformer, self.codec, self.text = transformer, codec, text_encoder
        self.config = config if isinstance(config, SamplingConfig) else SamplingConfig.from_dict(config)
        if transformer.config.in_channels != codec.latent_channels:
            raise ValueError(f"sampler: transformer in_channels {transformer.config.in_channels} != codec latent "
                             f"channels {codec.latent_channels}")
        if transformer.config.caption_channels != text_encoder.dim:
            raise ValueError(f"sampler: transformer caption_channels {transformer.config.caption_channels} != text "
                             f"encoder dim {text_encoder.dim}")

    @property
    def image_size(self) -> int:
        return self.config.image_size or int(self.transformer.config.sample_size) * self.codec.factor

    def _cfg(self, overrides: dict) -> SamplingConfig:
        return SamplingConfig.from_dict({**asdict(self.config), **{k: v for k, v in overrides.items() if v is not None}})

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], output: str = "uint8", **overrides):
        """One image per (prompts[k], seeds[k]); `output="float"` gives [B,3,H,W] in [0,1] (SanaPipeline's "pt")."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        seeds = list(seeds)
        if len(prompts) != len(seeds):
            raise ValueError(f"generate: {len(prompts)} prompts but {len(seeds)} seeds")
        c = self._cfg(overrides)
        shape = self.codec.latent_shape(c.image_size or self.image_size)
        uniq = list(dict.fromkeys(prompts))
        self.text._check_lengths(uniq)  # fail before compute
        ue, um = self.text.encode(uniq)
        row = {p: i for i, p in enumerate(uniq)}
        idx = torch.tensor([row[p] for p in prompts])
        null_emb, null_mask = self.text.encode_null()
        outs = []
        starts = range(0, len(prompts), c.batch_size)
        for i in track(starts, "sample", unit="image", weight=lambda i: min(c.batch_size, len(prompts) - i)):
            sl = idx[i:i + c.batch_size]
            z = sample_latents(self.transformer, ue[sl], um[sl], null_emb, initial_noise(seeds[i:i + c.batch_size], shape),
                               steps=c.steps, guidance_scale=c.guidance_scale, solver=c.solver, shift=c.shift,
                               uncond_mask=c.uncond_mask, null_mask=null_mask)
            outs.append(self.codec.decode(z))
        x = torch.cat(outs)
        if output == "float":
            return (x.clamp(-1, 1) + 1) / 2
        return to_uint8(x)

    def generate_grid(self, prompts: list[str], seeds: list[int], **overrides) -> np.ndarray:
        """prompts × seeds → uint8 [P, S, H, W, 3]."""
        pp = [p for p in prompts for _ in seeds]
        ss = [s for _ in prompts for s in seeds]
        imgs = self.generate(pp, ss, **overrides)
        return imgs.reshape(len(prompts), len(seeds), *imgs.shape[1:])


# ------------------------------------------------------------------------------------------------------ model folders
def save_pipeline(out_dir: str | Path, transformer, codec: Codec, text_encoder: TextEncoder,
                  sampling: SamplingConfig | dict | None = None, extra: dict | None = None,
                  shared_store: str | Path | None = None) -> Path:
    """A model folder that stock `SanaPipeline.from_pretrained(out_dir)` loads (atomic: temp folder, then rename).
    With `shared_store`, the text encoder, tokenizer and codec are hard links into that content-addressed store
    (sana_core/components.py: one copy on disk for every folder with the same components); their digests are
    recorded in sana15.json under `shared_components`."""
    from diffusers import SanaPipeline
    cfg = sampling if isinstance(sampling, SamplingConfig) else SamplingConfig.from_dict(sampling)
    if len(transformer.transformer_blocks) != transformer.config.num_layers:  # stack-notes §2 trap
        raise ValueError(f"save_pipeline: transformer has {len(transformer.transformer_blocks)} blocks but config "
                         f"num_layers={transformer.config.num_layers}; call register_to_config(num_layers=...)")
    sampler = Sampler(transformer, codec, text_encoder, cfg)  # validates channel compatibility
    meta = {**{k: v for k, v in asdict(cfg).items() if k != "batch_size"},
            "image_size": sampler.image_size, "height": sampler.image_size, "width": sampler.image_size,
            "max_sequence_length": text_encoder.max_length, "complex_human_instruction": text_encoder.chi,
            "text_encoder": text_encoder.info(), "codec": codec.info(), **(extra or {})}
    pipe = SanaPipeline(tokenizer=text_encoder.tokenizer, text_encoder=text_encoder.model, vae=codec.vae,
                        transformer=transformer, scheduler=make_scheduler(cfg.solver, cfg.shift))

    def write(tmp: Path):
        pipe.save_pretrained(str(tmp))
        if shared_store is not None:
            from .components import SHARED, share
            digests = {c: share(tmp / c, shared_store) for c in SHARED if (tmp / c).is_dir()}
            meta["shared_components"] = {c: d for c, d in digests.items() if d}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))

    return atomic_dir(out_dir, write)


def check_model_dir(model_dir: str | Path) -> Path:
    p = Path(model_dir)
    if not p.is_dir():
        raise FileNotFoundError(f"model folder not found: {p}")
    if not (p / "model_index.json").is_file():
        raise FileNotFoundError(f"not a SanaPipeline model folder (no model_index.json): {p}")
    return p


PLACED = ("transformer", "text_encoder", "vae")


def load_sampler(model_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                 placement: dict | None = None, **overrides) -> Sampler:
    """Load a folder written by `save_pipeline` (or any SanaPipeline folder; defaults then come from SamplingConfig).
    Components go to (`device`, `dtype`) — default CPU fp32, the training stages' starting point — or, per component,
    to `placement[name] = {"device": ..., "dtype": ...}` for name in PLACED (sana_core.device.resolve, `auto` = CUDA +
    bf16 when present); all resolved before anything is loaded, errors naming `<name>.device|dtype`."""
    from diffusers import SanaPipeline
    from .device import resolve
    placement = dict(placement or {})
    bad = sorted(set(placement) - set(PLACED))
    if bad:
        raise ValueError(f"load_sampler.placement: unknown component(s) {bad}; choose from {list(PLACED)}")
    where = {c: resolve(placement.get(c, {}).get("device", device), placement.get(c, {}).get("dtype", dtype), c)
             for c in PLACED}
    p = check_model_dir(model_dir)
    meta = json.loads((p / META_FILE).read_text()) if (p / META_FILE).is_file() else {}
    pipe = SanaPipeline.from_pretrained(str(p))
    for c, (dev, dt) in where.items():
        getattr(pipe, c).to(dev, dt)
    te = from_pipeline_parts(pipe.tokenizer, pipe.text_encoder, int(meta.get("max_sequence_length", 300)),
                             chi=meta.get("complex_human_instruction"))
    cfg = {k: meta[k] for k in ("steps", "guidance_scale", "solver", "shift", "uncond_mask", "image_size") if k in meta}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return Sampler(pipe.transformer.eval(), Codec(pipe.vae.eval(), name=p.name), te, cfg)


def generate_layout(model: str | Path | Sampler, metadata: list[dict], n_per_prompt: int, out_dir: str | Path,
                    seeds: list[int] | None = None, start_index: int = 0, grid: bool = False, **overrides) -> Path:
    """GenEval layout `<out>/<index:05d>/{metadata.jsonl, samples/*.png}` for every metadata row, `n_per_prompt`
    images each with seeds `seeds` (default 0..n-1; the same seeds for every prompt). Prompt folders are written
    atomically by `geneval.layout.write_prompt_folder`; batches span several prompts."""
    from .geneval.layout import validate_metadata, write_prompt_folder
    seeds = list(range(n_per_prompt)) if seeds is None else list(seeds)
    if len(seeds) != n_per_prompt:
        raise ValueError(f"generate_layout: {len(seeds)} seeds for n_per_prompt={n_per_prompt}")
    for i, m in enumerate(metadata):
        validate_metadata(m, f"metadata[{i}]")
    sampler = model if isinstance(model, Sampler) else load_sampler(model)
    sampler.text._check_lengths(list(dict.fromkeys(m["prompt"] for m in metadata)))
    per_batch = max(1, sampler._cfg(overrides).batch_size // n_per_prompt)
    out = Path(out_dir)
    starts = range(0, len(metadata), per_batch)
    for i in track(starts, "sample layout", unit="prompt", weight=lambda i: min(per_batch, len(metadata) - i)):
        chunk = metadata[i:i + per_batch]
        imgs = sampler.generate_grid([m["prompt"] for m in chunk], seeds, **overrides)
        for j, m in enumerate(chunk):
            write_prompt_folder(out, start_index + i + j, m, list(imgs[j]), grid=grid)
    return out
