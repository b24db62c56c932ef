"""DVC stage `importance`: block importance (SANA-1.5 Eq. 3, sana_core.importance.block_importance) of the model
`models/<importance.source>` over the first `importance.n_prompts` calibration prompts (data/shapes/calibration.jsonl)
→ `importance/importance.json` (full result) + `importance/importance.png`, metrics (per-block BI) and
`plots/importance.json` (x = block, y = importance).

Calibration set: the shapes world's calibration split (data/shapes/calibration.jsonl, never in the training pool);
another source's held-out rows (the last importance.n_prompts rows of data/cache, which no training stage sees).

Shapes inputs: prompt embeddings from the model folder's own text encoder; x0 = codec latents of ground-truth renders of
each calibration prompt (prompts.scene_for_metadata + render, rng seeded per prompt from `seed`); σ grid =
importance.sampler_sigmas(importance.steps, sample.shift). CFG is off (conditional branch only — the library's
documented choice); `importance.cfg_scale` is recorded but not applied.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from flows.stage_runner import main, write_json_atomic
from flows.stages import _common as C
from sana_core.atomic import atomic_dir
from sana_core.data.stream import ShardStream
from sana_core.geneval.layout import read_metadata_jsonl
from sana_core.geneval.prompts import scene_for_metadata
from sana_core.geneval.render import render
from sana_core.importance import block_importance, plot_importance, sampler_sigmas
from sana_core.latents import to_pixels

OUT = Path("importance")


def calibration_inputs(params: dict, root: Path, sampler) -> dict:
    if not C.is_shapes(params):
        return heldout_inputs(params, root, sampler)
    metas = read_metadata_jsonl(C.need(root, C.SHAPES / "calibration.jsonl", "calibration prompts, stage data"))
    n = params["importance"]["n_prompts"]
    if not 0 < n <= len(metas):
        raise ValueError(f"importance.n_prompts: {n} not in [1, {len(metas)}] (calibration prompts available)")
    metas, w = metas[:n], C.world(params)
    imgs = np.stack([render(scene_for_metadata(m, np.random.default_rng([params["seed"], 7, i]), w), w.image_size,
                            supersample=w.supersample) for i, m in enumerate(metas)])
    emb, mask = sampler.text.encode([m["prompt"] for m in metas])
    return {"emb": emb, "mask": mask, "x0": sampler.codec.encode(to_pixels(imgs))}


def heldout_inputs(params: dict, root: Path, sampler) -> dict:
    """A brought dataset: its held-out rows of data/cache (C.heldout_rows, never trained on) — x0 = their encoded
    latents, embeddings of their captions from the model's text encoder."""
    s = ShardStream(C.need(root, C.CACHE, "encoded dataset, stage encode"))
    rows = C.heldout_rows(params, s.n_total)
    emb, mask = sampler.text.encode(s.captions(rows))
    return {"emb": emb, "mask": mask, "x0": s.batch(rows)[0]}   # float32 on the CPU, as codec.encode returns


def importance(params: dict, root: Path) -> dict:
    cfg = params["importance"]
    src = C.model_path(cfg["source"])
    sigmas = sampler_sigmas(cfg["steps"], float(params["sample"]["shift"]))
    sampler = C.load_model(root, src, params, "importance")
    calib = calibration_inputs(params, root, sampler)
    with torch.no_grad():
        res = block_importance(sampler.transformer, calib, sigmas, seed=params["seed"])
    res = {**res, "source": cfg["source"], "cfg_scale_param": cfg["cfg_scale"]}

    def write(tmp: Path):
        write_json_atomic(res, tmp / "importance.json")
        plot_importance(res, tmp / "importance.png")

    atomic_dir(Path(root) / OUT, write)
    write_json_atomic([{"block": i, "importance": v} for i, v in enumerate(res["bi"])],
                      Path(root) / "plots" / "importance.json")
    order = sorted(range(len(res["bi"])), key=lambda i: -res["bi"][i])
    return {"source": cfg["source"], "depth": res["n_blocks"], "n_prompts": res["n_prompts"],
            "n_sigmas": len(sigmas), "bi": res["bi"], "rank": order,
            "artifacts": {"importance": str(OUT)}}


if __name__ == "__main__":
    main("importance", importance)
    sys.exit(0)
