"""Cost that grows with work, one table: training step vs batch size and depth, best-of-N generation vs N, and
`encode` vs pool size — each as time per unit of work, so linear scaling shows as a flat per-unit column.

    .venv/bin/python bench/cost_scaling.py [--threads 1] [--batches 8 16 32 64] [--depths 3 6 12] [--ns 1 2 4 8]
                                           [--prompts 8] [--pools 256 512 1024] [--rounds 2]

- train: `sana_core.train.train` with the profile's pretrain_base config (bench/train_step.py: tiny model, 8×8×8
  latents, 24 caption tokens, fused AdamW, EMA), median CPU time per step over --steps steps after a warm-up step;
  batch sweep at the profile's depth, depth sweep at the profile's batch. Per-unit = ms per sample, ms per block.
- best-of-N: `Sampler.generate` (20 Flow-DPM steps, CFG 4.5, decode included) of --prompts prompts × N seeds, the
  prompt-major pairs `scaling.best_of_n` hands its generate_fn, in batches of the sampler's batch_size (64 pairs);
  tiny transformer (init "sana"), untrained f8c8s codec, MiniLM. Per-unit = ms per image. Judging is not included.
- encode: `sana_core.data.encode.encode_dataset` of a GenEval-Shapes pool (`write_shapes`, 64 px imagefolder) with
  the profile's codec (untrained f8c8s) and MiniLM at the profile's max_length. Per-unit = ms per image.
CPU time (process_time) at one thread is the measure: robust to other jobs on the shared machine; wall time is shown
too. Rounds repeat the whole sweep; the median per point is reported.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_step import make_data, ours_run, profile_setup  # noqa: E402


def train_point(profile, batch, layers, steps, tmp):
    params, build, lat, L, cfg = profile_setup(profile, **({"num_layers": layers} if layers else {}))
    cfg = {**cfg, "batch_size": batch or cfg["batch_size"], "num_threads": torch.get_num_threads()}
    m = build().train()
    data = make_data(m.config, 256, lat, L)
    marks = ours_run(m, data, cfg, steps + 1, tmp)
    w = statistics.median(b[0] - a[0] for a, b in zip(marks, marks[1:]))
    c = statistics.median(b[1] - a[1] for a, b in zip(marks, marks[1:]))
    return w, c, cfg["batch_size"], m.config.num_layers


def sampler(profile):
    from sana_core.latents import build_codec
    from sana_core.sample import Sampler
    from sana_core.text import build_text_encoder
    params, build, *_ = profile_setup(profile)
    codec = build_codec({"profile": params["codec"]["profile"], "seed": 0})
    text = build_text_encoder({**params["text"], "device": "cpu", "dtype": "float32"})
    samp = {k: v for k, v in params["sample"].items() if k not in ("device", "dtype")}
    return Sampler(build(init="sana").eval(), codec, text, {**samp, "image_size": int(params["data"]["image_size"])})


def best_of_n_point(s, prompts, n):
    pairs = [(p, k) for p in prompts for k in range(n)]          # what best_of_n's generate_fn receives
    t, c = time.perf_counter(), time.process_time()
    for a in range(0, len(pairs), s.config.batch_size):
        ps, ss = zip(*pairs[a:a + s.config.batch_size])
        s.generate(list(ps), list(ss))
    return time.perf_counter() - t, time.process_time() - c, len(pairs)


def encode_point(profile, pool_dir, n):
    from flows.params import load_profile
    from sana_core.data.encode import encode_dataset
    from sana_core.data.shapes import ShapesSource
    from sana_core.latents import build_codec
    from sana_core.text import build_text_encoder
    params = load_profile(profile)
    codec = build_codec({"profile": params["codec"]["profile"], "seed": 0})
    text = build_text_encoder({**params["text"], "device": "cpu", "dtype": "float32"})
    out = pool_dir.parent / f"enc-{pool_dir.name}-{time.monotonic_ns()}"
    t, c = time.perf_counter(), time.process_time()
    st = encode_dataset(ShapesSource(pool_dir), codec, text, out, image_size=int(params["data"]["image_size"]),
                        batch_size=int(params["encode"]["batch_size"]))
    w, cc = time.perf_counter() - t, time.process_time() - c
    assert st["n"] == n, st
    shutil.rmtree(out, ignore_errors=True)
    return w, cc, n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="*", default=[8, 16, 32, 64])
    ap.add_argument("--depths", type=int, nargs="*", default=[3, 6, 12])
    ap.add_argument("--ns", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--pools", type=int, nargs="*", default=[256, 512, 1024])
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t_start = time.time()
    points = {}  # (kind, x) -> list of (wall, cpu, units)

    def add(key, v):
        points.setdefault(key, []).append(v)
        w, c, u = v
        print(f"{key[0]} {key[1]}: wall {w:.2f} s, cpu {c:.2f} s, {u} units", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pools = {}
        if a.pools:
            from sana_core.data.shapes import write_shapes
            for n in a.pools:  # rendering is not timed
                pools[n] = tmp / f"pool{n}"
                write_shapes({"pool_size": n, "eval_n": 2, "calibration_size": 4}, pools[n])
        s = sampler(a.profile) if a.ns else None
        prompts = [f"a photo of a {c} {sh}" for c in ("red", "green", "blue", "yellow")
                   for sh in ("circle", "square", "triangle", "cross")][:a.prompts]
        if s is not None:
            best_of_n_point(s, prompts[:1], 1)  # warm-up
        for r in range(a.rounds):
            for b in a.batches:
                w, c, bb, _ = train_point(a.profile, b, None, a.steps, tmp / f"t{r}b{b}")
                add(("train batch", bb), (w, c, bb))
            for d in a.depths:
                w, c, _, dd = train_point(a.profile, None, d, a.steps, tmp / f"t{r}d{d}")
                add(("train depth", dd), (w, c, dd))
            for n in a.ns:
                add(("best-of-N", n), best_of_n_point(s, prompts, n))
            for n in a.pools:
                add(("encode pool", n), encode_point(a.profile, pools[n], n))
    load = open("/proc/loadavg").read().split()[:3]
    print(f"\nprofile={a.profile} threads={a.threads} rounds={a.rounds} train steps/point={a.steps} "
          f"best-of-N prompts={len(prompts)} load(1/5/15 min)={' '.join(load)} ({time.time() - t_start:.0f} s)\n")
    unit = {"train batch": "sample", "train depth": "block", "best-of-N": "image", "encode pool": "image"}
    what = {"train batch": "ms/step", "train depth": "ms/step", "best-of-N": "s", "encode pool": "s"}
    print("| work | x | wall | cpu | cpu per unit (ms) | per unit ÷ smallest x |")
    print("|---|---|---|---|---|---|")
    first = {}
    for (kind, x), vals in points.items():
        w = statistics.median(v[0] for v in vals)
        c = statistics.median(v[1] for v in vals)
        u = vals[0][2]
        scale = 1e3 if what[kind] == "ms/step" else 1.0
        per = c / u * 1e3
        first.setdefault(kind, per)
        print(f"| {kind} | {x} | {w * scale:.1f} {what[kind]} | {c * scale:.1f} {what[kind]} | {per:.1f} per "
              f"{unit[kind]} | {per / first[kind]:.2f} |")


if __name__ == "__main__":
    main()
