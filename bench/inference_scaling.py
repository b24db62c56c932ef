"""Inference-time scaling on GenEval-Shapes, the paper's comparison: more denoising steps against more candidates at
the same generation cost. One model, the whole eval_iid, GenEval's seed procedure (`procedure.all_images`: image k
of every prompt has seed k):

- **steps**: 4 images per prompt at S denoising steps (all 4 scored) for each S in --steps;
- **best-of-N**: N candidates per prompt at 20 steps; N ≤ 4 scores all N, N > 4 keeps 4 of them — picked by the
  oracle (the exact evaluator: correct candidates first), so the row is the ceiling a judge can reach. Candidates are
  nested (N = 8 is the first 8 of the 16).

Cost = images × steps per prompt (the transformer forwards; CFG doubles both alike). Each score comes with its 95 %
stratified-bootstrap interval over prompts (`sana_core.geneval.stats`). The 20-step, 4-image cell of the steps curve
is the N = 4 cell (the same seeds). Prints a table and writes --out JSON. Findings: docs/results.md §11.

    .venv/bin/python bench/inference_scaling.py RUN_ROOT WEIGHTS_DIR [--steps 10 20 40] [--ns 1 2 4 8 16]
        [--threads 2] [--out scaling.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import SanaTransformer2DModel  # noqa: E402

from flows import params as P  # noqa: E402
from flows.stages import _common as C  # noqa: E402
from sana_core.geneval.layout import read_metadata_jsonl  # noqa: E402
from sana_core.geneval.stats import PromptScores, bootstrap_overall  # noqa: E402
from sana_core.geneval.world import load_world  # noqa: E402
from sana_core.sample import Sampler  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from geneval_diagnose import diagnose  # noqa: E402

KEEP = 4  # images GenEval scores per prompt


def correct_matrix(sampler, metas, world, n: int) -> np.ndarray:
    """[P, n] bool: image k of prompt p (seed k) passes the exact evaluator (bench/geneval_diagnose.py's diagnose)."""
    return diagnose(sampler, metas, world, n, 0)[3]


def scores(metas, correct: np.ndarray, images: np.ndarray) -> PromptScores:
    return PromptScores(keys=tuple(range(len(metas))), prompts=tuple(m["prompt"] for m in metas),
                        tags=np.array([m["tag"] for m in metas]), correct=np.asarray(correct, float),
                        images=np.asarray(images, float))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40])
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    params = P.load_profile(a.profile)
    model = SanaTransformer2DModel.from_pretrained(a.weights).eval()
    codec_, text = C.codec(params, a.root), C.text_encoder(params)
    world = load_world(a.root / C.SHAPES / "world.json")
    metas = read_metadata_jsonl(a.root / C.SHAPES / "eval_iid.jsonl")

    def sampler(steps: int) -> Sampler:
        return Sampler(model, codec_, text, {**params["sample"], "batch_size": 64, "steps": steps})

    rows = []
    cand = correct_matrix(sampler(20), metas, world, max(a.ns))                     # [P, N_max] at 20 steps
    for n in sorted(a.ns):
        kept = np.minimum(cand[:, :n].sum(1), KEEP) if n > KEEP else cand[:, :n].sum(1)
        s = scores(metas, kept, np.full(len(metas), min(n, KEEP)))
        rows.append({"curve": "best-of-N (oracle)", "n": n, "steps": 20, "cost": n * 20,
                     **bootstrap_overall(s).as_dict()})
    for st in sorted(a.steps):
        c = cand[:, :KEEP] if st == 20 else correct_matrix(sampler(st), metas, world, KEEP)
        s = scores(metas, c.sum(1), np.full(len(metas), KEEP))
        rows.append({"curve": "steps", "n": KEEP, "steps": st, "cost": KEEP * st, **bootstrap_overall(s).as_dict()})

    print(f"{a.weights}: eval_iid {len(metas)} prompts, GenEval seeds, CFG {params['sample']['guidance_scale']}, "
          f"{params['sample']['solver']}")
    print("| curve | images/prompt generated | steps | cost (images × steps) | GenEval-Shapes [95 % CI] |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["cost"], r["curve"])):
        print(f"| {r['curve']} | {r['n']} | {r['steps']} | {r['cost']} | "
              f"{r['value']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] |")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
