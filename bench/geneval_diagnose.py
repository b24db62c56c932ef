"""Why a model's images fail GenEval-Shapes: sample every eval_iid prompt of a pipeline run with N seeds, score them with
the exact evaluator, print the summary, each tag's failure kinds (first reason of each failure: missing object, wrong
colour, wrong position, too many, blank = nothing detected) and the histogram of detector confidences.

    .venv/bin/python bench/geneval_diagnose.py RUN_ROOT WEIGHTS_DIR [--n-img 4] [--seed 0] [--cfg 4.5] [--steps 20]
        [--solver dpm] [--profile tiny] [--codec CODEC_DIR] [--grid GRID.png] [--threads 2]

RUN_ROOT: a pipeline checkout after `dvc repro` (data/shapes, models/codec); WEIGHTS_DIR: a SanaTransformer2DModel
folder (e.g. RUN_ROOT/models/pretrain_base/transformer). Seeds: GenEval's procedure, the geneval stage's and
`sana15 geneval`'s (sana_core/geneval/procedure.py): image k of every prompt uses seed `--seed + k`, k < n-img
(numbers in docs/results.md up to §10 used 1000·prompt + k instead). Findings: docs/results.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from diffusers import SanaTransformer2DModel  # noqa: E402
from PIL import Image  # noqa: E402

from flows import params as P  # noqa: E402
from flows.stages import _common as C  # noqa: E402
from sana_core.geneval.detect import analyse  # noqa: E402
from sana_core.geneval.evaluate import summary  # noqa: E402
from sana_core.geneval.layout import read_metadata_jsonl  # noqa: E402
from sana_core.geneval.procedure import all_images  # noqa: E402
from sana_core.geneval.score import score_image  # noqa: E402
from sana_core.geneval.world import load_world  # noqa: E402
from sana_core.latents import load_codec  # noqa: E402
from sana_core.sample import Sampler  # noqa: E402


def failure_kind(correct: bool, reason: str, details: dict) -> str:
    if correct:
        return "ok"
    if not any(details.values()):
        return "blank"
    first = reason.split("\n")[0]
    if "<" in first.split(",")[0]:
        return "too_many"
    if re.search(r"expected \w+ \w+>=", first):
        return "wrong_colour"
    return "position" if "target" in first else "missing"


def diagnose(sampler, metas: list[dict], world, n_img: int, seed: int = 0):
    """(GenEval summary, {tag: Counter of failure kinds}, images [P, n_img, H, W, 3], per-image correct [P, n_img])
    of `n_img` images per prompt drawn by GenEval's procedure (`procedure.all_images`: seed + k for every prompt)."""
    imgs = all_images(sampler, metas, seed, n_img)
    rows, kinds = [], collections.defaultdict(collections.Counter)
    correct = np.zeros(imgs.shape[:2], bool)
    for p, m in enumerate(metas):
        for k in range(n_img):
            ok, reason, details = score_image(imgs[p, k], m, world)
            correct[p, k] = bool(ok)
            rows.append({"tag": m["tag"], "correct": bool(ok)})
            kinds[m["tag"]][failure_kind(ok, reason, details)] += 1
    return summary(pd.DataFrame(rows)), kinds, imgs, correct


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--n-img", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="first seed: image k of every prompt uses seed + k (GenEval)")
    ap.add_argument("--cfg", type=float, default=4.5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--solver", default="dpm")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--codec", type=Path, default=None, help="codec folder (default RUN_ROOT/models/codec)")
    ap.add_argument("--grid", type=Path, default=None, help="write a PNG grid of the first 64 prompts' first image")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    params = P.load_profile(a.profile)
    model = SanaTransformer2DModel.from_pretrained(a.weights).eval()
    codec_ = load_codec(a.codec) if a.codec else C.codec(params, a.root)
    sampler = Sampler(model, codec_, C.text_encoder(params), {**params["sample"], "batch_size": 64,
                                                              "guidance_scale": a.cfg, "steps": a.steps,
                                                              "solver": a.solver})
    world = load_world(a.root / C.SHAPES / "world.json")
    metas = read_metadata_jsonl(a.root / C.SHAPES / "eval_iid.jsonl")
    summ, kinds, imgs, _ = diagnose(sampler, metas, world, a.n_img, a.seed)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in summ.items()}))
    for tag, cnt in kinds.items():
        print(tag, dict(cnt))
    print("all", dict(sum(kinds.values(), collections.Counter())))
    if a.grid:
        g = list(imgs[:64, 0])
        Image.fromarray(np.concatenate([np.concatenate(g[i:i + 8], 1) for i in range(0, len(g), 8)], 0)).save(a.grid)
    confs = np.array([d.conf for im in imgs.reshape(-1, *imgs.shape[2:]) for d in analyse(im, world)])
    hist = np.histogram(confs, [0, .7, .8, .85, .9, .93, 1.01])[0]
    print("components", len(confs), "conf bins <.7 .7-.8 .8-.85 .85-.9 .9-.93 >.93:", hist.tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
