"""Oracle judge: the GenEval-Shapes evaluator itself (`score_image`) — the upper bound of best-of-N, never the default.

A judge that *is* the metric turns best-of-N into "pick any correct candidate", so its GenEval score is the ceiling
that a learned judge approaches (the paper's 0.96 with NVILA is close to it because the verifier was trained on
GenEval-toolkit labels). yes = the evaluator's `correct`.
Scores: P(yes) = (correct + 0.99 · c̄) / 2, where c̄ ∈ [0, 1] is the mean detection confidence (Dice) over the
detections the evaluator kept (0 if none). So P(yes) ∈ [0.5, 0.995] for correct images and [0, 0.495] for incorrect
ones: thresholding at 0.5 is exactly the evaluator's verdict, and the tie-break inside each class prefers crisper
detections (both yes → higher c̄ wins; both no → lower p_no = higher c̄ wins). p_no = 1 − P(yes).
Cost: no tensor FLOPs (`flops_per_image` = 0); `cpu_seconds_per_image` measures its CPU time instead.
"""
from __future__ import annotations

import json
import time
from typing import Any, Mapping

import numpy as np
import torch

from ..geneval.score import score_image
from ..geneval.world import world_config
from .base import Judge, check_prompt, as_uint8_batch


def mean_confidence(details: Any) -> float:
    """Mean detection confidence in an evaluator `details` value: {class: [[x1, y1, x2, y2, score], …] or dicts with
    "conf"/"score"} (or its JSON string). 0.0 when no detection is present."""
    if isinstance(details, str):
        details = json.loads(details) if details else {}
    confs: list[float] = []

    def walk(v):
        if isinstance(v, Mapping):
            for key in ("conf", "score"):
                if key in v and isinstance(v[key], (int, float)):
                    confs.append(float(v[key]))
                    return
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            if len(v) == 5 and all(isinstance(x, (int, float)) for x in v):
                confs.append(float(v[4]))
            else:
                for x in v:
                    walk(x)
        elif hasattr(v, "conf"):
            confs.append(float(v.conf))

    walk(details)
    return float(np.clip(np.mean(confs), 0.0, 1.0)) if confs else 0.0


class OracleJudge(Judge):
    name = "oracle"

    def __init__(self, world=None):
        self.world = world

    @classmethod
    def from_config(cls, cfg: dict) -> "OracleJudge":
        world = cfg.pop("world", None)
        if cfg:
            raise ValueError(f"judge: unknown key(s) {sorted(cfg)} for the oracle judge")
        if world is not None and not hasattr(world, "image_size"):
            world = world_config(int(world))
        return cls(world=world)

    def _verdicts(self, prompt: str, images: Any, metadata: Mapping | None):
        check_prompt(prompt)
        if metadata is None:
            raise ValueError("oracle judge: needs the prompt's GenEval `metadata` (include/exclude/tag)")
        if metadata.get("prompt", prompt) != prompt:
            raise ValueError(f"oracle judge: metadata is for {metadata.get('prompt')!r}, not {prompt!r}")
        out = []
        for img in as_uint8_batch(images):
            correct, _reason, details = score_image(img, dict(metadata), self.world) if self.world is not None \
                else score_image(img, dict(metadata))
            out.append((bool(correct), mean_confidence(details)))
        return out

    def decide(self, prompt: str, images: Any, metadata: Mapping | None = None):
        v = self._verdicts(prompt, images, metadata)
        yes = torch.tensor([c for c, _ in v], dtype=torch.bool)
        p_yes = torch.tensor([(float(c) + 0.99 * m) / 2 for c, m in v], dtype=torch.float32)
        return yes, p_yes, 1.0 - p_yes

    def flops_per_image(self, image_size: int = 64) -> int:
        return 0

    def cpu_seconds_per_image(self, images: Any, metadata: Mapping) -> float:
        """Mean process CPU seconds of judging one of `images` under `metadata`."""
        arr = as_uint8_batch(images)
        t0 = time.process_time()
        self._verdicts(metadata["prompt"], arr, metadata)
        return (time.process_time() - t0) / len(arr)
