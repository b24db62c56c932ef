"""CLIP judge: image–text cosine similarity of a local `CLIPModel`, mapped to P(yes) by a calibrated sigmoid.

SANA-1.5 rejected CLIP/SigLIP as verifiers (77 / 66-token text context, sana15-method.md §11); this judge is the
cheap baseline for the same best-of-N machinery. P(yes) = sigmoid((sim − bias) · scale), sim = cos(image embed, text
embed) of the raw prompt; yes = P(yes) ≥ 0.5 ⇔ sim ≥ bias; p_no = 1 − P(yes).

Calibration: `bias` is the similarity at which P(yes) = 0.5 and `scale` the sigmoid's slope per unit cosine. The
defaults (bias 0.25, scale 50) are a rough prior for OpenAI CLIP ViT-L/14, whose matching image–caption cosines sit
around 0.25–0.35; they are NOT fitted — fit them on labelled (image, prompt, verdict) triples with `fit_calibration`
(logistic regression on the similarity) and pass the result as `{"bias": ..., "scale": ...}`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .base import Judge, check_prompt, as_pil_list, count_flops

DEFAULT_BIAS, DEFAULT_SCALE = 0.25, 50.0


class CLIPJudge(Judge):
    name = "clip"

    def __init__(self, path: str | Path, bias: float = DEFAULT_BIAS, scale: float = DEFAULT_SCALE,
                 device: str = "cpu", batch_size: int = 32):
        from transformers import CLIPModel, CLIPProcessor
        if not Path(path).is_dir():
            raise FileNotFoundError(f"judge.path: {path} is not a folder")
        if not float(scale) > 0:
            raise ValueError(f"judge.scale: {scale} must be > 0")
        self.bias, self.scale, self.device, self.batch_size = float(bias), float(scale), device, int(batch_size)
        self.processor = CLIPProcessor.from_pretrained(str(path))
        self.model = CLIPModel.from_pretrained(str(path)).to(device).eval()

    @torch.no_grad()
    def similarity(self, prompt: str, images: Any) -> torch.Tensor:
        """Cosine similarity [B] between each image and the prompt."""
        check_prompt(prompt)
        pil = as_pil_list(images)
        sims = []
        for i in range(0, len(pil), self.batch_size):
            enc = self.processor(text=[prompt], images=pil[i:i + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=True)
            out = self.model(**{k: v.to(self.device) for k, v in enc.items()})
            img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
            txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
            sims.append((img @ txt[0]).cpu())
        return torch.cat(sims)

    def decide(self, prompt: str, images: Any, metadata: Mapping | None = None):
        p_yes = torch.sigmoid((self.similarity(prompt, images) - self.bias) * self.scale)
        return p_yes >= 0.5, p_yes, 1.0 - p_yes

    def flops_per_image(self, image_size: int = 64) -> int:
        img = np.full((1, image_size, image_size, 3), 128, np.uint8)
        return count_flops(self.similarity, "a photo of a red circle left of a blue square", img)


def fit_calibration(sims: Sequence[float], labels: Sequence[int], steps: int = 500) -> dict:
    """(bias, scale) of P(yes) = sigmoid((sim − bias)·scale) by maximum likelihood (logistic regression, LBFGS).
    Needs both labels present; returns {"bias", "scale", "nll"}."""
    s = torch.as_tensor(np.asarray(sims, np.float64))
    y = torch.as_tensor(np.asarray(labels, np.float64))
    if len(s) != len(y) or len(s) == 0:
        raise ValueError(f"fit_calibration: {len(s)} similarities vs {len(y)} labels")
    if not (0 < float(y.sum()) < len(y)):
        raise ValueError("fit_calibration: labels need both yes (1) and no (0) examples")
    mu, sd = s.mean(), s.std().clamp(min=1e-6)
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)          # logit = w0·(s − mu)/sd + w1
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(w[0] * (s - mu) / sd + w[1], y) + 1e-6 * w.pow(2).sum()
        loss.backward()
        return loss

    nll = float(opt.step(closure).detach())
    w0, w1 = (float(x) for x in w.detach())
    a, b = w0 / float(sd), w1 - w0 * float(mu) / float(sd)          # logit = a·s + b
    if abs(a) < 1e-12:
        raise ValueError("fit_calibration: similarity carries no signal about the labels (slope 0)")
    return {"bias": -b / a, "scale": a, "nll": nll}
