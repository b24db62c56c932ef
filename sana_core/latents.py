"""Image codecs: diffusers `AutoencoderDC` only (sana15-method.md §5, stack-notes §6), so every model folder reloads
with stock `SanaPipeline.from_pretrained`.

- Paper profile: a local DC-AE folder (`dc-ae-f32c32-sana-1.x-diffusers`), `load_codec(path)`; latents = `encode(x)
  .latent × config.scaling_factor` (0.41407 for f32c32), decode `z / scaling_factor`. Deterministic (no sampling).
- Tiny profiles: small all-ResBlock AutoencoderDCs trained here (`train_codec`, AdamW, loss MSE + 0.5·L1, cosine LR);
  after training the scaling factor is set to 1/std of the training latents (SANA uses the DC-AE's fixed 0.41407;
  ours is calibrated, like SD's VAE factor) and stored in the AutoencoderDC config. `f4c16`: 32 px → 16×8×8
  (1.21 M params); `f8c16s`: 64 px → 16×8×8 (0.62 M); `f8c8s` / `f8c4s`: the same with 8 / 4 latent channels (a
  tiny DiT learns fewer channels faster, docs/results.md §7); `smoke`: untrained f4c16 with (8,16,16) channels.
  The DiT's in/out channels follow the codec (flows/stages/_common.new_transformer).

Pixel convention: float [-1, 1], NCHW; `to_pixels`/`to_uint8` convert from/to uint8 NHWC.
Placement: a loaded codec goes to params `codec.device` / `codec.dtype` (default `auto` = CUDA + bf16 when present,
CPU fp32 otherwise; sana_core/device.py); inputs are cast to the codec's dtype, outputs come back float32 on the CPU.
A freshly built codec (to be trained) stays on the CPU in fp32.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from .atomic import atomic_dir
from .progress import Progress
from diffusers import AutoencoderDC

_RES = dict(in_channels=3, encoder_block_types="ResBlock", decoder_block_types="ResBlock", decoder_norm_types="rms_norm",
            decoder_act_fns="silu", scaling_factor=1.0)


def _dc(chs, latent=16):
    n = len(chs)
    return dict(_RES, latent_channels=latent, encoder_block_out_channels=tuple(chs), decoder_block_out_channels=tuple(chs),
                encoder_layers_per_block=(1,) * n, decoder_layers_per_block=(1,) * n,
                encoder_qkv_multiscales=((),) * n, decoder_qkv_multiscales=((),) * n)


CODEC_PROFILES: dict[str, dict] = {
    "smoke": _dc((8, 16, 16)),            # f4c16, untrained, tests only
    "f4c16": _dc((32, 64, 128)),          # 32 px world → 16×8×8
    "f8c16s": _dc((16, 32, 64, 64)),      # 64 px world → 16×8×8
    "f8c8s": _dc((16, 32, 64, 64), 8),    # 64 px world → 8×8×8: easier for a tiny DiT (docs/results.md §7)
    "f8c4s": _dc((16, 32, 64, 64), 4),    # 64 px world → 4×8×8
}
_KEYS = {"profile", "path", "seed", "device", "dtype"}


def to_pixels(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,3] → float32 [N,3,H,W] in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images: expected uint8 [N,H,W,3], got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N,3,H,W] in [-1, 1] → uint8 [N,H,W,3] (clamped, rounded)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two [-1,1] images (peak-to-peak 2), clamped first."""
    mse = (x.clamp(-1, 1) - y.clamp(-1, 1)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


class Codec:
    """Deterministic encode/decode around an `AutoencoderDC` with the scaling factor applied."""

    def __init__(self, vae: AutoencoderDC, name: str = "dcae"):
        if not isinstance(vae, AutoencoderDC):
            raise ValueError(f"codec: expected an AutoencoderDC, got {type(vae).__name__}")
        self.vae, self.name = vae, name

    @property
    def factor(self) -> int:  # spatial compression, as SanaPipeline computes vae_scale_factor
        return 2 ** (len(self.vae.config.encoder_block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        if image_size % self.factor:
            raise ValueError(f"image_size {image_size} not a multiple of the codec factor {self.factor}")
        return (self.latent_channels, image_size // self.factor, image_size // self.factor)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """[-1,1] pixels [B,3,H,W] → scaled latents [B,C,h,w] (float32)."""
        self.vae.eval()
        p = next(self.vae.parameters())
        out = [self.vae.encode(x[i:i + batch_size].to(p.device, p.dtype)).latent.float().cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out) * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Scaled latents → [-1,1] pixels (not clamped)."""
        self.vae.eval()
        p = next(self.vae.parameters())
        out = [self.vae.decode((z[i:i + batch_size].float() / self.scaling_factor).to(p.device, p.dtype)).sample.float().cpu()
               for i in range(0, len(z), batch_size)]
        return torch.cat(out)

    def encode_uint8(self, images, batch_size: int = 256) -> torch.Tensor:
        return self.encode(to_pixels(images), batch_size)

    def decode_uint8(self, z: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        return to_uint8(self.decode(z, batch_size))

    def save(self, out_dir: str | Path) -> Path:
        """`save_pretrained` into a temp folder, then rename (never a half-written folder)."""
        return atomic_dir(out_dir, lambda tmp: self.vae.save_pretrained(tmp))

    def info(self) -> dict:
        c = self.vae.config
        return {"name": self.name, "factor": self.factor, "latent_channels": self.latent_channels,
                "scaling_factor": self.scaling_factor, "block_out_channels": list(c.encoder_block_out_channels),
                "params": sum(p.numel() for p in self.vae.parameters())}




def build_codec(cfg: dict | str | None = None, **overrides) -> Codec:
    """cfg: a profile name, or {"profile": name (default "f4c16"), "path": local folder, "seed": int,
    **AutoencoderDC kwargs}.
    `path` loads a saved/pretrained AutoencoderDC (paper DC-AE or our trained tiny one); otherwise a fresh codec."""
    cfg = {"profile": cfg} if isinstance(cfg, str) else dict(cfg or {"profile": "f4c16"})
    cfg.update(overrides)
    if cfg.get("path"):
        bad = sorted(set(cfg) - _KEYS)
        if bad:
            raise ValueError(f"codec: unknown key(s) {bad} with codec.path")
        return load_codec(cfg["path"], cfg.get("device", "auto"), cfg.get("dtype", "auto"))
    cfg.pop("device", None), cfg.pop("dtype", None)       # a fresh codec is trained on the CPU in fp32
    name = cfg.pop("profile", "f4c16")
    if name not in CODEC_PROFILES:
        raise ValueError(f"codec.profile: unknown profile {name!r}; choose from {sorted(CODEC_PROFILES)}")
    seed = cfg.pop("seed", 0)
    cfg.pop("path", None)
    import inspect
    allowed = set(inspect.signature(AutoencoderDC.__init__).parameters) - {"self"}
    bad = sorted(set(cfg) - allowed)
    if bad:
        raise ValueError(f"codec: unknown key(s) {bad} for AutoencoderDC")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderDC(**{**CODEC_PROFILES[name], **cfg})
    return Codec(vae.eval(), name=name)


def load_codec(path: str | Path, device="auto", dtype="auto") -> Codec:
    """A local AutoencoderDC folder (config.json + weights); its `config.scaling_factor` is used. Placed on
    `device` / `dtype` (sana_core.device.resolve; errors name codec.device / codec.dtype, before loading)."""
    from .device import resolve
    dev, dt = resolve(device, dtype, "codec")
    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"codec.path: no AutoencoderDC folder (config.json) at {p}")
    return Codec(AutoencoderDC.from_pretrained(str(p)).to(dev, dt).eval(), name=p.name)


@torch.no_grad()
def _eval_psnr(vae: AutoencoderDC, x: torch.Tensor, batch_size: int = 128) -> float:
    vae.eval()
    rec = torch.cat([vae.decode(vae.encode(x[i:i + batch_size]).latent).sample for i in range(0, len(x), batch_size)])
    return psnr(rec, x)


def train_codec(images: np.ndarray, codec: Codec | dict | str | None = None, steps: int = 1000, batch_size: int = 32,
                lr: float = 3e-4, min_lr_ratio: float = 0.1, weight_decay: float = 0.0, n_val: int | None = None,
                seed: int = 0, eval_every: int = 0, time_limit_s: float | None = None, callback=None,
                calibrate: bool = True, num_threads: int | None = None) -> tuple[Codec, dict]:
    """Train an AutoencoderDC on uint8 images [N,H,W,3]: AdamW, loss MSE + 0.5·L1 in [-1,1] pixels, cosine LR to
    `min_lr_ratio·lr`. The last `n_val` images (default min(64, N//8)) are held out for PSNR. Then the scaling factor
    is set to 1/std of the training latents (`calibrate`). `callback(step, loss, lr)` is called every step; returns
    (codec, report{psnr_init, psnr, psnr_mean_image, steps, seconds, scaling_factor, history[(step, val_psnr)],
    num_threads}).

    lr: 3e-4 was the best of the scouted rates for f8c16s on GenEval-Shapes; larger ones plateau or collapse to a
    constant image (docs/scout.md). A collapsed codec (held-out reconstructions with
    no spatial variation, < 1 % of the images' own) raises ValueError, so it is never saved. `psnr_mean_image` is
    the held-out PSNR of the training set's mean image: a codec that barely beats it has learned nothing.

    num_threads: torch.set_num_threads for the run (restored afterwards; None = the process's count, torch's default
    = the machine's cores). CPU gradients depend on the thread count, so the same images, seed and steps give the same
    codec only at the same count (docs/results.md §13); the report records the count used."""
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"codec training: num_threads={num_threads!r} must be a positive int or None")
    threads_before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        return _train_codec(images, codec, steps, batch_size, lr, min_lr_ratio, weight_decay, n_val, seed, eval_every,
                            time_limit_s, callback, calibrate)
    finally:
        torch.set_num_threads(threads_before)


def _train_codec(images, codec, steps, batch_size, lr, min_lr_ratio, weight_decay, n_val, seed, eval_every,
                 time_limit_s, callback, calibrate) -> tuple[Codec, dict]:
    x_all = to_pixels(images)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"codec training: steps={steps} and batch_size={batch_size} must be >= 1")
    n_val = min(64, len(x_all) // 8) if n_val is None else n_val
    if not 0 < n_val < len(x_all):
        raise ValueError(f"codec training: need 0 < n_val={n_val} < N={len(x_all)} images")
    codec = codec if isinstance(codec, Codec) else build_codec(codec or "f4c16", seed=seed)
    if x_all.shape[-1] % codec.factor:
        raise ValueError(f"codec training: image size {x_all.shape[-1]} not a multiple of factor {codec.factor}")
    x_tr, x_val = x_all[:-n_val], x_all[-n_val:]
    vae = codec.vae
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history = [(0, _eval_psnr(vae, x_val))]
    t0, step = time.time(), 0
    perm, pos = torch.randperm(len(x_tr), generator=g), 0
    bar = Progress(steps, "codec", unit="step")
    for step in range(1, steps + 1):
        if pos + batch_size > len(perm):
            perm, pos = torch.randperm(len(x_tr), generator=g), 0
        xb = x_tr[perm[pos:pos + batch_size]]
        pos += batch_size
        vae.train()
        rec = vae.decode(vae.encode(xb).latent).sample
        loss = torch.nn.functional.mse_loss(rec, xb) + 0.5 * torch.nn.functional.l1_loss(rec, xb)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"codec training: non-finite loss {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step, loss.item(), sched.get_last_lr()[0])
        if eval_every and step % eval_every == 0 and step < steps:
            history.append((step, _eval_psnr(vae, x_val)))
        bar.update(loss=loss.item(), psnr_val=history[-1][1])
        if time_limit_s is not None and time.time() - t0 > time_limit_s:
            break
    bar.close()
    history.append((step, _eval_psnr(vae, x_val)))
    vae.eval()
    base = psnr(x_tr.mean(0, keepdim=True).expand_as(x_val), x_val)
    with torch.no_grad():
        xv = x_val[:64]
        rec = vae.decode(vae.encode(xv).latent).sample
        spread, ref = rec.std(dim=(2, 3)).mean().item(), xv.std(dim=(2, 3)).mean().item()
    if not spread > 0.01 * ref:
        raise ValueError(f"codec training: collapsed — reconstructions have no spatial variation (std {spread:.2e} "
                         f"vs {ref:.2e} of the images) after {step} steps at lr {lr:g}; lower codec_train.lr "
                         f"(3e-4 works for f8c16s; 2e-3 collapses)")
    if calibrate:
        with torch.no_grad():
            sub = x_tr[:512]
            std = torch.cat([vae.encode(sub[i:i + 128]).latent for i in range(0, len(sub), 128)]).std().item()
        vae.register_to_config(scaling_factor=float(1.0 / max(std, 1e-6)))
    report = {"psnr_init": history[0][1], "psnr": history[-1][1], "psnr_mean_image": base, "steps": step, "seconds": time.time() - t0,
              "scaling_factor": codec.scaling_factor, "n_train": len(x_tr), "n_val": n_val, "history": history,
              "num_threads": torch.get_num_threads()}
    return codec, report
