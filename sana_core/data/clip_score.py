"""Curation scorer `clip`: the paper's data filter. CLIP score = 100 × cos(image embedding, caption embedding) of a
`transformers.CLIPModel` at a local path (the projected `image_embeds` / `text_embeds`, as CLIP's own logits use them,
without logit_scale and without torchmetrics' clamp at 0); SANA keeps pairs with a score ≥ 25 (`clip_thr`).

Unlike judges/clip.py (one prompt against many images, for best-of-N), this scores each image against its own
caption. Captions longer than CLIP's 77-token context are truncated by its tokenizer (CLIP cannot read further).
`score_source` scores every usable record of a source (bad records skipped and counted as in encoding) into a pandas
table (key, caption, clip_score); `select` marks the rows kept by `min_score` and/or `top_fraction`.
"""
from __future__ import annotations

import math
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .images import BadInput, BadLog, check_caption, decode_image


class ClipScorer:
    def __init__(self, path, device: str = "cpu", batch_size: int = 32):
        from transformers import CLIPModel, CLIPProcessor
        if not Path(path).is_dir():
            raise FileNotFoundError(f"curate.clip_path: no CLIP model folder at {path}")
        self.device, self.batch_size = device, int(batch_size)
        self.processor = CLIPProcessor.from_pretrained(str(path))
        self.model = CLIPModel.from_pretrained(str(path)).to(device).eval()

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
            o = self.model(**{k: v.to(self.device) for k, v in enc.items()})
            img = torch.nn.functional.normalize(o.image_embeds.double(), dim=-1)
            txt = torch.nn.functional.normalize(o.text_embeds.double(), dim=-1)
            out.append((100.0 * (img * txt).sum(-1)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def score_source(source, scorer: ClipScorer, image_size: int, max_bad_fraction: float = 0.01,
                 chunk: int = 256) -> tuple[pd.DataFrame, dict]:
    """(table [key, caption, clip_score] of every usable record in source order, BadLog counts)."""
    bad = BadLog(max_bad_fraction)
    keys, caps, scores = [], [], []
    records = iter(source)
    while batch := list(islice(records, chunk)):
        imgs, ok = [], []
        for rec in batch:
            try:
                if rec.bad:
                    raise BadInput(rec.bad)
                cap = check_caption(rec.caption)
                imgs.append(decode_image(rec.image, image_size))
            except BadInput as e:
                bad.add(rec.origin, str(e))
                continue
            bad.ok()
            ok.append((rec.key, cap))
        if ok:
            scores.append(scorer.score(imgs, [c for _, c in ok]))
            keys += [k for k, _ in ok]
            caps += [c for _, c in ok]
    bad.check()
    if not keys:
        raise ValueError(f"data.path: the dataset is empty — no usable image-caption pair among {bad.n_seen} records")
    return pd.DataFrame({"key": keys, "caption": caps, "clip_score": np.concatenate(scores)}), bad.counts()


def select(table: pd.DataFrame, min_score: float | None = 25.0, top_fraction: float | None = None) -> pd.DataFrame:
    """A copy of `table` with `keep`: clip_score ≥ `min_score` (None: no threshold) and among the ceil(top_fraction ×
    rows) best scores (None: no cap; ties keep the earlier row). ValueError when nothing is kept."""
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
        raise ValueError(f"curate.min_score: expected a number or null, got {min_score!r}")
    if top_fraction is not None and (isinstance(top_fraction, bool) or not isinstance(top_fraction, (int, float))
                                     or not 0 < top_fraction <= 1):
        raise ValueError(f"curate.top_fraction: expected a number in (0, 1] or null, got {top_fraction!r}")
    out = table.copy()
    keep = np.ones(len(out), bool)
    s = out["clip_score"].to_numpy()
    if min_score is not None:
        keep &= s >= min_score
    if top_fraction is not None:
        k = math.ceil(top_fraction * len(out) - 1e-9)
        top = np.zeros(len(out), bool)
        top[np.argsort(-s, kind="stable")[:k]] = True
        keep &= top
    out["keep"] = keep
    if not keep.any():
        raise ValueError(f"curate: no row kept of {len(out)} (curate.min_score={min_score}, "
                         f"curate.top_fraction={top_fraction}; best score {s.max():.2f})")
    return out
