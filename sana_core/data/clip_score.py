"""Curation scorer `clip`: the paper's data filter. CLIP score = 100 × cos(image embedding, caption embedding) of a
`transformers.CLIPModel` at a local path (the projected `image_embeds` / `text_embeds`, as CLIP's own logits use them,
without logit_scale and without torchmetrics' clamp at 0); SANA keeps pairs with a score ≥ 25 (`clip_thr`).

Unlike judges/clip.py (one prompt against many images, for best-of-N), this scores each image against its own
caption. Captions longer than CLIP's 77-token context are truncated by its tokenizer (CLIP cannot read further).
`score_source` scores every usable record of a source (bad records skipped and counted as in encoding;
`curate.usable_pairs`) into a pandas table (key, caption, clip_score); `select` marks the rows kept by `min_score`
and/or `top_fraction` and/or `max_samples` (the selection of both curation scorers).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..device import resolve
from .curate import usable_pairs
from .images import BadLog


class ClipScorer:
    def __init__(self, path, device: str = "auto", dtype: str = "auto", batch_size: int = 32):
        from transformers import CLIPModel, CLIPProcessor
        if path is None or not Path(path).is_dir():
            raise FileNotFoundError(f"curate.clip_path: no CLIP model folder at {path}")
        self.device, self.dtype = resolve(device, dtype, "curate")   # auto: CUDA + bf16 when present, else CPU fp32
        self.batch_size = int(batch_size)
        self.processor = CLIPProcessor.from_pretrained(str(path))
        self.model = CLIPModel.from_pretrained(str(path)).to(self.device, self.dtype).eval()

    @torch.no_grad()
    def score(self, images, captions: list[str]) -> np.ndarray:
        """100 × cos(image_i, caption_i) for uint8 [H,W,3] images (or PIL) and their captions → float64 [n]."""
        from PIL import Image
        if len(images) != len(captions):
            raise ValueError(f"clip score: {len(images)} images but {len(captions)} captions")
        out = []
        for i in range(0, len(captions), self.batch_size):
            pil = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))
                   for im in images[i:i + self.batch_size]]
            enc = self.processor(text=list(captions[i:i + self.batch_size]), images=pil, return_tensors="pt",
                                 padding=True, truncation=True)
            enc["pixel_values"] = enc["pixel_values"].to(self.dtype)
            o = self.model(**{k: v.to(self.device) for k, v in enc.items()})
            img = torch.nn.functional.normalize(o.image_embeds.double(), dim=-1)
            txt = torch.nn.functional.normalize(o.text_embeds.double(), dim=-1)
            out.append((100.0 * (img * txt).sum(-1)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def score_source(source, scorer: ClipScorer, image_size: int, max_bad_fraction: float = 0.01, keys=None,
                 chunk: int = 256) -> tuple[pd.DataFrame, dict]:
    """(table [key, caption, clip_score] of every usable record in source order, counts: BadLog's + n_not_encoded).
    `keys`: score only these (the encoded pool's keys); None: every usable record."""
    bad, skipped, parts = BadLog(max_bad_fraction), {}, []
    for pairs in usable_pairs(source, image_size, bad, keys, skipped, chunk):
        caps = [c for _, c, _ in pairs]
        parts.append(pd.DataFrame({"key": [r.key for r, _, _ in pairs], "caption": caps,
                                   "clip_score": scorer.score([im for _, _, im in pairs], caps)}))
    bad.check()
    if not parts:
        raise ValueError(f"data.path: the dataset is empty — no usable image-caption pair among {bad.n_seen} records")
    return pd.concat(parts, ignore_index=True), {**bad.counts(), **skipped}


def select(table: pd.DataFrame, min_score: float | None = 25.0, top_fraction: float | None = None,
           max_samples: int = 0, column: str = "clip_score") -> pd.DataFrame:
    """A copy of `table` with `keep`: `column` ≥ `min_score` (None: no threshold), among the ceil(top_fraction × rows)
    best scores (None: no cap) and, of those, the `max_samples` best (0: no cap); ties keep the earlier row.
    ValueError when nothing is kept."""
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
        raise ValueError(f"curate.min_score: expected a number or null, got {min_score!r}")
    if top_fraction is not None and (isinstance(top_fraction, bool) or not isinstance(top_fraction, (int, float))
                                     or not 0 < top_fraction <= 1):
        raise ValueError(f"curate.top_fraction: expected a number in (0, 1] or null, got {top_fraction!r}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 0:
        raise ValueError(f"curate.max_samples: expected an integer >= 0 (0 = no cap), got {max_samples!r}")
    out = table.copy()
    keep = np.ones(len(out), bool)
    s = out[column].to_numpy()
    order = np.argsort(-s, kind="stable")       # best first, ties: the earlier row
    if min_score is not None:
        keep &= s >= min_score
    if top_fraction is not None:
        k = math.ceil(top_fraction * len(out) - 1e-9)
        top = np.zeros(len(out), bool)
        top[order[:k]] = True
        keep &= top
    if max_samples:
        first = order[keep[order]][:max_samples]
        keep = np.zeros(len(out), bool)
        keep[first] = True
    out["keep"] = keep
    if not keep.any():
        raise ValueError(f"curate: no row kept of {len(out)} (curate.min_score={min_score}, "
                         f"curate.top_fraction={top_fraction}; best score {s.max():.2f})")
    return out
