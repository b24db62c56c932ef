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
transformers image-text-to-text model from a local path), `clip` (CLIP similarity from a local path, calibrated
sigmoid), `oracle` (the GenEval-Shapes evaluator itself; an upper bound, never the default).
`build_judge(cfg)` builds one from a config dict `{"name": ..., "path": ..., **kwargs}`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .base import JUDGE_PROMPT, Decision, Judge, as_pil_list, as_uint8_batch, check_prompt, count_flops
from .clip import CLIPJudge
from .oracle import OracleJudge
from .tiny import TinyJudge
from .vlm import VLMJudge

# The registry: adding a judge = its module (a Judge subclass) + one line here.
JUDGES: dict[str, type[Judge]] = {"tiny": TinyJudge, "vlm": VLMJudge, "clip": CLIPJudge, "oracle": OracleJudge}
JUDGE_NAMES = tuple(JUDGES)


def judge_class(name: str) -> type[Judge]:
    if name not in JUDGES:
        raise ValueError(f"judge.name: unknown judge {name!r}; choose from {list(JUDGE_NAMES)}")
    return JUDGES[name]


def build_judge(cfg: Mapping[str, Any] | str) -> Judge:
    """A judge from `{"name": "tiny"|"vlm"|"clip"|"oracle", "path": <dir>, **kwargs}` (a bare string = the name).
    `tiny` needs `path` (a folder written by `TinyJudge.save`); `vlm`/`clip` need `path` (a local transformers
    folder); `oracle` takes an optional `world` (a WorldConfig, or an image size 64/32 = that size's full world).
    Errors name the key, before any loading."""
    cfg = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
    return judge_class(cfg.pop("name", "tiny")).from_config(cfg)


__all__ = ["JUDGE_PROMPT", "JUDGE_NAMES", "JUDGES", "Decision", "Judge", "build_judge", "judge_class", "as_uint8_batch",
           "as_pil_list", "check_prompt", "count_flops"]
