"""Judges for best-of-N inference scaling (sana15-method.md §11): is this image a good match for its prompt?

SANA-1.5 picks the best 4 of N candidates with a VLM verifier (NVILA-Lite-2B-Verifier) that answers "yes"/"no" to
one image + one text turn (`JUDGE_PROMPT`, copied from `tools/inference_scaling/nvila_sana_pick.py`). Every judge here
exposes the same interface, for one prompt and a batch of its candidate images (uint8 [B, H, W, 3], a list of uint8
arrays or a list of PIL images), each image judged independently:

- `decide(prompt, images, metadata=None) -> (yes bool [B], p_yes float [B], p_no float [B])`: the answer and the two
  scores the knockout tournament (`sana_core.scaling`) compares. VLM judges: probabilities of the tokens "yes"/"no" at
  the first generated position (softmax over the vocabulary; the official script compares the same step's scores) and
  yes = the greedy first token is "yes". Other judges: p_no = 1 − p_yes.
- `score(prompt, images, metadata=None) -> p_yes [B]`.
- `flops_per_image(image_size)`: FLOPs of judging one image, measured once with `torch.utils.flop_counter
  .FlopCounterMode` (0 for the oracle, whose cost is CPU time: `OracleJudge.cpu_seconds_per_image`).

Judges: `tiny` (the default; a ~3 MFLOP image–text network trained on GenEval-Shapes verdicts), `vlm` (any
transformers image-text-to-text model from a local path), `remote` (a judge model in its own Python environment,
spoken to over JSON lines — the paper's NVILA-Lite-2B-Verifier, judges/remote.py), `clip` (CLIP similarity from a local path, calibrated
sigmoid), `oracle` (the GenEval-Shapes evaluator itself; an upper bound, never the default).
`build_judge(cfg)` builds one from a config dict `{"name": ..., "path": ..., **kwargs}`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

# The official prompt (nvila_sana_pick.py), verbatim including its line breaks; the method doc prints it on one line.
JUDGE_PROMPT = (
    "You are an AI assistant specializing in image analysis and ranking. Your task is to analyze and compare image "
    "based on how well they match the given prompt.\nThe given prompt is:{prompt}. Please consider the prompt and the "
    "image to make a decision and response directly with 'yes' or 'no'.\n"
)

Decision = tuple  # (yes bool [B], p_yes float [B], p_no float [B])


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
    from PIL import Image
    if isinstance(images, (list, tuple)) and images and all(hasattr(im, "convert") for im in images):
        return [im.convert("RGB") for im in images]
    return [Image.fromarray(a) for a in as_uint8_batch(images)]


def count_flops(fn, *args, **kwargs) -> int:
    """Total FLOPs (2 per multiply–add) of one call, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn(*args, **kwargs)
    return int(fc.get_total_flops())


class Judge:
    """Base class: subclasses implement `decide` and `flops_per_image`; `score` = decide's p_yes."""

    name = "judge"

    def decide(self, prompt: str, images: Any, metadata: Mapping | None = None) -> Decision:
        raise NotImplementedError

    def score(self, prompt: str, images: Any, metadata: Mapping | None = None) -> torch.Tensor:
        return self.decide(prompt, images, metadata)[1]

    def flops_per_image(self, image_size: int = 64) -> int:
        raise NotImplementedError


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: expected a non-empty string, got {prompt!r}")
    return prompt


JUDGE_NAMES = ("tiny", "vlm", "remote", "clip", "oracle")


def build_judge(cfg: Mapping[str, Any] | str) -> Judge:
    """A judge from `{"name": "tiny"|"vlm"|"clip"|"oracle", "path": <dir>, **kwargs}` (a bare string = the name).
    `tiny` needs `path` (a folder written by `TinyJudge.save`); `vlm`/`clip` need `path` (a local transformers
    folder); `remote` needs `path` (the model folder) and `python` (the judge environment's interpreter); `oracle` takes an optional `world` (a WorldConfig, or an image size 64/32 = that size's full world). Errors name the key, before any loading."""
    cfg = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
    name = cfg.pop("name", "tiny")
    if name not in JUDGE_NAMES:
        raise ValueError(f"judge.name: unknown judge {name!r}; choose from {list(JUDGE_NAMES)}")
    if name == "oracle":
        from .oracle import OracleJudge
        world = cfg.pop("world", None)
        if cfg:
            raise ValueError(f"judge: unknown key(s) {sorted(cfg)} for the oracle judge")
        if world is not None and not hasattr(world, "image_size"):
            from ..geneval.world import world_config
            world = world_config(int(world))
        return OracleJudge(world=world)
    path = cfg.pop("path", None)
    if not path:
        raise ValueError(f"judge.path: required for the {name!r} judge")
    from pathlib import Path
    if not Path(path).is_dir():
        raise FileNotFoundError(f"judge.path: {path} is not a folder")
    if name == "tiny":
        from .tiny import TinyJudge
        if cfg:
            raise ValueError(f"judge: unknown key(s) {sorted(cfg)} for the tiny judge")
        return TinyJudge.load(path)
    if name == "vlm":
        from .vlm import VLMJudge
        return VLMJudge(path, **cfg)
    if name == "remote":
        from .remote import RemoteJudge
        return RemoteJudge(path, **cfg)
    from .clip import CLIPJudge
    return CLIPJudge(path, **cfg)


__all__ = ["JUDGE_PROMPT", "JUDGE_NAMES", "Judge", "build_judge", "as_uint8_batch", "as_pil_list", "count_flops"]
