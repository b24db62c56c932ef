"""What every judge shares: the official yes/no question, the `Judge` interface, image-batch normalisation and FLOP
counting (see the package docstring for the interface)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

# The official prompt (nvila_sana_pick.py), verbatim including its line breaks; the method doc prints it on one line.
JUDGE_PROMPT = (
    "You are an AI assistant specializing in image analysis and ranking. Your task is to analyze and compare image "
    "based on how well they match the given prompt.\nThe given prompt is:{prompt}. Please consider the prompt and the "
    "image to make a decision and response directly with 'yes' or 'no'.\n"
)

Decision = tuple  # (yes bool [B], p_yes float [B], p_no float [B])
TRAINING_PROMPTS_FILE = "training_prompts.jsonl"   # in a judge folder: the GenEval metadata the judge was trained on


def as_uint8_batch(images: Any) -> np.ndarray:
    """uint8 [B, H, W, 3] from a uint8 array/tensor [B, H, W, 3] (or one [H, W, 3] image) or a list of PIL images /
    uint8 arrays of one size. Raises ValueError naming the problem."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        arr = images[None] if images.ndim == 3 else images
    else:
        items = list(images)
        if not items:
            raise ValueError("images: empty list")
        arr = np.stack([np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im) for im in items])
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images: expected [B, H, W, 3], got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 pixels, got {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError("images: empty batch")
    return arr


def as_pil_list(images: Any) -> list:
    if isinstance(images, (list, tuple)) and images and all(hasattr(im, "convert") for im in images):
        return [im.convert("RGB") for im in images]
    return [Image.fromarray(a) for a in as_uint8_batch(images)]


def count_flops(fn, *args, **kwargs) -> int:
    """Total FLOPs (2 per multiply–add) of one call, counted by torch's FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn(*args, **kwargs)
    return int(fc.get_total_flops())


class Judge:
    """Base class: subclasses implement `decide` and `flops_per_image`; `score` = decide's p_yes.

    `from_config(cfg)` builds one from its `build_judge` keys (default: a local model folder `path` + constructor
    kwargs). A judge that can be trained sets `trainable = True` and implements `fit(images, metadata, labels, cfg)
    -> (judge, metrics)` and `save(folder)`: the judge stage then trains it on the base model's labelled images."""

    name = "judge"
    trainable = False

    @classmethod
    def from_config(cls, cfg: dict) -> "Judge":
        return cls(need_dir(cls.name, cfg), **cfg)

    @classmethod
    def fit(cls, images: Any, metadata: Sequence[Mapping], labels: Any, cfg: Mapping[str, Any]) -> tuple["Judge", dict]:
        raise NotImplementedError(f"the {cls.name} judge is not trainable")

    def save(self, folder, metrics: Mapping[str, Any] | None = None) -> Path:
        raise NotImplementedError(f"the {self.name} judge is not saved by this project")

    def p_yes_each(self, prompts: Sequence[str], images: Any, metadata: Sequence[Mapping]) -> np.ndarray:
        """p_yes of image i for prompt i (one prompt per image), float [B]."""
        return np.concatenate([self.decide(p, images[i:i + 1], m)[1].numpy()
                               for i, (p, m) in enumerate(zip(prompts, metadata))])

    def decide(self, prompt: str, images: Any, metadata: Mapping | None = None) -> Decision:
        raise NotImplementedError

    def score(self, prompt: str, images: Any, metadata: Mapping | None = None) -> torch.Tensor:
        return self.decide(prompt, images, metadata)[1]

    def flops_per_image(self, image_size: int = 64) -> int:
        raise NotImplementedError


def need_dir(name: str, cfg: dict) -> str:
    """Pop `path` from a judge config: it must name an existing folder (errors name the key, before any loading)."""
    path = cfg.pop("path", None)
    if not path:
        raise ValueError(f"judge.path: required for the {name!r} judge")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"judge.path: {path} is not a folder")
    return path


def training_prompts(path: str | Path) -> set[str]:
    """The prompts a judge was trained on: `path` = a judge folder (its `training_prompts.jsonl`, written by the
    judge stage) or such a JSONL file itself (one GenEval metadata dict per line). Every evaluation drops them, so
    a judge is never scored on a prompt it has seen. FileNotFoundError naming the file when it is missing."""
    path = Path(path)
    f = path / TRAINING_PROMPTS_FILE if path.is_dir() else path
    if not f.is_file():
        raise FileNotFoundError(f"judge training prompts: {f} missing (written by the judge stage next to the judge)")
    out = set()
    for i, line in enumerate(f.read_text().splitlines()):
        if line.strip():
            m = json.loads(line)
            if not isinstance(m, Mapping) or not isinstance(m.get("prompt"), str):
                raise ValueError(f"judge training prompts: {f} line {i + 1} has no \"prompt\"")
            out.add(m["prompt"])
    return out


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: expected a non-empty string, got {prompt!r}")
    return prompt
