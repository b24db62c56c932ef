"""Speed of the GenEval-Shapes evaluator (sana_core.geneval.detect + score): ms per 64×64 image.

    .venv/bin/python bench/geneval_detect.py [--n 300] [--rounds 3]

Image sets: ground-truth renders of eval_iid (clean; σ = 1 blur + N(0, 4) noise + ±15 jitter), blank images, and
"garbage" images (random coloured speckle blobs, many components). Reports CPU ms/image (process time, single
thread: the detector is NumPy on small arrays) and wall ms/image, median over rounds; the ratio column is
ms / 20 ms (the target for scoring thousands of images on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from sana_core.geneval import detect as D  # noqa: E402
from sana_core.geneval.prompts import scene_for_metadata  # noqa: E402
from sana_core.geneval.render import degrade, jitter_colors, render  # noqa: E402
from sana_core.geneval.score import score_image  # noqa: E402
from sana_core.geneval.splits import eval_iid  # noqa: E402
from sana_core.geneval.world import COLORS, PALETTE, world_config  # noqa: E402

TARGET_MS = 20.0


def garbage(rng, n=6):
    img = np.full((64, 64, 3), 128.0)
    for _ in range(n):
        m = ndimage.gaussian_filter(rng.random((64, 64)), 2.0) > 0.55
        img[m] = PALETTE[COLORS[rng.integers(len(COLORS))]]
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    w = world_config(64)
    rng = np.random.default_rng(0)
    metas = eval_iid(w)[: args.n]
    scenes = [scene_for_metadata(m, rng, w) for m in metas]
    sets = {
        "clean GT": [render(s, 64) for s in scenes],
        "blur1+noise4+jit15": [degrade(render(jitter_colors(s, rng, 15), 64), rng, blur=1.0, noise=4.0)
                               for s in scenes],
        "blank": [np.full((64, 64, 3), 128, np.uint8)] * len(scenes),
        "garbage": [garbage(rng) for _ in scenes],
    }
    score_image(sets["clean GT"][0], metas[0], w)          # warm caches (rasters, blur matrices)
    print(f"{'images':<20} {'n':>5} {'objs/img':>9} {'cpu ms/img':>11} {'wall ms/img':>12} {'cpu/20ms':>9}")
    for name, imgs in sets.items():
        cpu, wall = [], []
        for _ in range(args.rounds):
            c0, w0 = time.process_time(), time.perf_counter()
            for img, m in zip(imgs, metas):
                score_image(img, m, w)
            cpu.append((time.process_time() - c0) / len(imgs) * 1e3)
            wall.append((time.perf_counter() - w0) / len(imgs) * 1e3)
        n_obj = np.mean([len(D.analyse(im, w)) for im in imgs[:100]])
        c, wl = statistics.median(cpu), statistics.median(wall)
        print(f"{name:<20} {len(imgs):>5} {n_obj:>9.2f} {c:>11.2f} {wl:>12.2f} {c / TARGET_MS:>9.2f}")


if __name__ == "__main__":
    main()
