"""Encode a dataset's latents and captions once (SANA trains on pre-extracted VAE features, `load_vae_feat: true`).

Folder layout (a DVC output, written to a temp folder and renamed):
- `latents.safetensors`: `latents` float32 [N,C,h,w] (already × the codec's scaling factor).
- `text.safetensors`: captions are deduplicated before encoding (training captions repeat a lot):
  `emb` float32 [U,L,C] and `mask` int64 [U,L] for the U unique captions, `caption_index` int64 [N] (image → row),
  `null_emb` float32 [1,L,C] and `null_mask` int64 [1,L] (encoding of "" — SANA's caption-dropout target; at dropout
  the prompt's own mask is kept).
- `cache.json`: shapes, N, U, codec info (name, scaling factor, factor), text encoder info, unique captions.
float32 throughout: with deduplication the text file is small, so no fp16 rounding is introduced.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_dir
from .latents import Codec, to_pixels

FILES = ("latents.safetensors", "text.safetensors", "cache.json")


@dataclass
class Cache:
    latents: torch.Tensor        # [N,C,h,w] float32
    emb: torch.Tensor            # [U,L,C] float32
    mask: torch.Tensor           # [U,L] int64
    caption_index: torch.Tensor  # [N] int64
    null_emb: torch.Tensor       # [1,L,C]
    null_mask: torch.Tensor      # [1,L]
    meta: dict

    def __len__(self) -> int:
        return len(self.latents)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents [B,C,h,w], emb [B,L,C], mask [B,L]) for image indices `idx`."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        rows = self.caption_index[idx]
        return self.latents[idx], self.emb[rows], self.mask[rows]

    @property
    def captions(self) -> list[str]:
        """Caption of every image (expanded from the unique list)."""
        u = self.meta["unique_captions"]
        return [u[i] for i in self.caption_index.tolist()]


def build_cache(images: np.ndarray, captions: list[str], codec: Codec, text_encoder, out_dir: str | Path,
                batch_size: int = 128) -> Path:
    """Encode uint8 images [N,H,W,3] with `codec` and their captions with `text_encoder` into `out_dir`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"cache: images must be uint8 [N,H,W,3], got {images.dtype} {images.shape}")
    captions = list(captions)
    if len(captions) != len(images):
        raise ValueError(f"cache: {len(images)} images but {len(captions)} captions")
    if images.shape[1] % codec.factor or images.shape[2] % codec.factor:
        raise ValueError(f"cache: image size {images.shape[1:3]} not a multiple of codec factor {codec.factor}")
    unique: dict[str, int] = {}
    index = torch.tensor([unique.setdefault(c, len(unique)) for c in captions], dtype=torch.long)
    ucap = list(unique)
    emb, mask = text_encoder.encode(ucap, batch_size=batch_size)  # text first: a too-long caption fails early
    null_emb, null_mask = text_encoder.encode_null()
    lat = torch.cat([codec.encode(to_pixels(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])
    meta = {"n": len(images), "n_unique_captions": len(ucap), "image_shape": list(images.shape[1:]),
            "latent_shape": list(lat.shape[1:]), "text_shape": list(emb.shape[1:]), "dtype": "float32",
            "codec": codec.info(), "text_encoder": text_encoder.info(), "unique_captions": ucap}

    def write(tmp: Path):
        save_file({"latents": lat.float().contiguous()}, str(tmp / "latents.safetensors"))
        save_file({"emb": emb.float().contiguous(), "mask": mask.long().contiguous(), "caption_index": index,
                   "null_emb": null_emb.float().contiguous(), "null_mask": null_mask.long().contiguous()},
                  str(tmp / "text.safetensors"))
        (tmp / "cache.json").write_text(json.dumps(meta, indent=1))

    return atomic_dir(out_dir, write)


def load_cache(cache_dir: str | Path) -> Cache:
    d = Path(cache_dir)
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"cache: {d} lacks {missing}")
    meta = json.loads((d / "cache.json").read_text())
    lat = load_file(str(d / "latents.safetensors"))["latents"]
    t = load_file(str(d / "text.safetensors"))
    if len(lat) != meta["n"] or len(t["caption_index"]) != meta["n"]:
        raise ValueError(f"cache: {d} is inconsistent (N in cache.json {meta['n']}, latents {len(lat)}, "
                         f"caption_index {len(t['caption_index'])})")
    return Cache(lat, t["emb"], t["mask"], t["caption_index"], t["null_emb"], t["null_mask"], meta)
