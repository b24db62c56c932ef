"""Time to quality: train the `pretrain_base` recipe with overrides on a pipeline run's encoded pool, keep a
checkpoint every K steps, and score chosen checkpoints' saved weights (EMA when the recipe has one) on the whole
eval_iid with bench/geneval_diagnose.py (GenEval's procedure: seeds 0..N−1 for every prompt; the exact evaluator).

    .venv/bin/python bench/time_to_quality.py RUN_ROOT OUT [--set KEY=VALUE ...] [--eval 2000,2500] [--every 500]
        [--threads 1] [--n-img 4] [--profile tiny]

RUN_ROOT: a checkout after `dvc repro encode` (data/shapes, data/cache, models/codec). KEY=VALUE overrides the train
config `{**train, **pretrain_base, seed}` (YAML values: lr=3e-3, lr_schedule=cosine, steps=2500, ema=0.99, seed=1,
compile=true). Each run writes OUT/summary.json (train summary, s/step) and OUT/eval_<step>.txt; one line per
evaluated checkpoint goes to stdout. Training minutes at 2 threads are estimated by the caller from an idle
bench/train_step.py measurement (this script may run beside another one, at 1 thread each). Findings:
docs/results.md §11.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from flows import params as P  # noqa: E402
from flows.stages import _common as C  # noqa: E402
from sana_core.train import train, validate_config  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--eval", default="", help="comma-separated checkpoint steps to score (default: the last)")
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-img", type=int, default=4)
    ap.add_argument("--profile", default="tiny")
    a = ap.parse_args(argv)
    params = P.load_profile(a.profile)
    over = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        v = yaml.safe_load(v)
        try:
            v = float(v) if isinstance(v, str) else v   # PyYAML reads 3e-3 as a string
        except ValueError:
            pass
        over[k] = v
    if "seed" in over:
        params["seed"] = over["seed"]
    cfg = {**P.train_cfg(params, "pretrain_base"), **over, "checkpoint_every": a.every, "keep_checkpoints": 0,
           "num_threads": a.threads, "progress": False}
    validate_config(cfg)   # a wrong key or value fails here, naming it, before anything is loaded
    torch.set_num_threads(a.threads)
    codec_, text = C.codec(params, a.root), C.text_encoder(params)
    data = C.train_data(params, a.root, text=text)
    model = C.new_transformer(params, codec_)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    summ = train(model, data, cfg, a.out, resume=True, name="ttq")
    summ["s_per_step"] = summ["wall_time_s"] / max(summ["steps"], 1)
    summ["bench_wall_s"] = time.time() - t0
    (a.out / "summary.json").write_text(json.dumps(summ, indent=2, default=str))
    steps = [int(s) for s in a.eval.split(",") if s] or [cfg["steps"]]
    for s in steps:
        ck = a.out / ("final" if s == cfg["steps"] else f"checkpoints/step_{s}")
        w = ck / "ema" if cfg.get("ema") else ck
        res = subprocess.run([sys.executable, str(ROOT / "bench/geneval_diagnose.py"), str(a.root), str(w),
                              "--n-img", str(a.n_img), "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True)
        (a.out / f"eval_{s}.txt").write_text(res.stdout)
        print(json.dumps({"step": s, "set": over, "loss": summ["loss"], **json.loads(res.stdout.splitlines()[0])}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
