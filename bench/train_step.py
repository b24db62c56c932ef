"""Training-step throughput at the tiny profile's real shapes: our `sana_core.train.train` loop vs a plain stock
diffusers loop vs the fp32 matmul peak, at each thread count asked for, plus a `torch.profiler` breakdown.

Shapes and recipe come from the profile (default `tiny`): the model section (profile, init) with the codec profile's
latent channels (f8c8s → 8×8×8 latents, as `flows.stages._common.new_transformer` builds it), the caption length of
the text section, and the `pretrain_base` training config ({**train, **pretrain_base}: batch, lr, clip, EMA, shift,
caption dropout, optimizer). Data are random tensors of those shapes (the step's cost does not depend on the values).

One run, rounds interleaved (peak → stock → ours each round, for every thread count), ratios reported as medians of
per-round ratios (the machine is shared and noisy). Achieved FLOP/s = 3 × forward FLOPs per sample (FlopCounterMode,
sana_core.flops) × batch / step time. Peak = best of 3 timings of a 2048³ fp32 matmul, measured in the same round
and thread count. Wall-clock and process CPU time are both reported: with one thread, CPU time is robust to other
processes on the machine; with more threads, CPU time also counts spin-waiting.

    .venv/bin/python bench/train_step.py --threads 1 2 --rounds 3 --steps 4 [--profile-steps 3] [--ours-cfg ...]

"stock" = what a user writes with plain diffusers: model.forward + MSE on ε − x0 + backward + clip_grad_norm_ +
`torch.optim.AdamW` (default, single-tensor on CPU) + zero_grad, same shifted-logit-normal draws, no EMA.
"ours" = `train()` with the profile's config (fused AdamW, clipping, NaN guard, EMA, caption dropout, metrics),
timed per step via its callback; `--ours-cfg key=value` overrides keys (e.g. compile=true) to measure an option.
`--profile-steps N` profiles N steps of each loop (after the timed rounds) and prints where the time goes: self CPU
time by op category (matmul, convolution, attention, norms, element-wise, other) and by the loop's own phases
(`record_function` ranges in train.py: data, forward, backward, clip, optimizer, ema).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.params import load_profile, train_cfg  # noqa: E402
from sana_core import flow  # noqa: E402
from sana_core.flops import forward_flops_per_sample  # noqa: E402
from sana_core.latents import CODEC_PROFILES  # noqa: E402
from sana_core.model import build_transformer  # noqa: E402
from sana_core.train import TensorData, train  # noqa: E402

TIMING_FREE = dict(checkpoint_every=0, log_every=1, progress=False, warmup_steps=0)


def matmul_peak(n=2048, reps=3):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best_w = best_c = float("inf")
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        a @ b
        best_w, best_c = min(best_w, time.perf_counter() - w), min(best_c, time.process_time() - c)
    f = 2 * n**3
    return f / best_w, f / best_c


def profile_setup(name: str, stage: str = "pretrain_base", **model_overrides):
    """(params, model builder, latent shape (C,h,w), text length, training config) of a profile's training stage."""
    params = load_profile(name)
    ch = CODEC_PROFILES[params["codec"]["profile"]]["latent_channels"]
    hw = int(params["data"]["image_size"]) // 8 if params["codec"]["profile"].startswith("f8") else 8

    def build(**over):
        return build_transformer({**params["model"], "in_channels": ch, "out_channels": ch, **model_overrides,
                                  **over, "seed": params["seed"]})

    return params, build, (ch, hw, hw), int(params["text"]["max_length"]), train_cfg(params, stage)


def make_data(model_cfg, n, latent_shape, text_len):
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(n, *latent_shape, generator=g)
    emb = torch.randn(n, text_len, model_cfg.caption_channels, generator=g)
    mask = (torch.arange(text_len)[None] < torch.randint(4, text_len + 1, (n, 1), generator=g)).long()
    return TensorData(lat, emb, mask, torch.randn(text_len, model_cfg.caption_channels, generator=g))


class Stock:
    """Plain diffusers training step (what the stack-notes §5 snippet does)."""

    def __init__(self, model, data, cfg):
        self.m, self.d, self.B, self.cfg = model, data, cfg["batch_size"], cfg
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])

    def step(self):
        B, cfg = self.B, self.cfg
        idx = torch.randint(0, len(self.d), (B,))
        x0, emb, mask = self.d.batch(idx)
        sigma = flow.sample_sigmas(B, shift=cfg["shift"], logit_mean=cfg["logit_mean"], logit_std=cfg["logit_std"])
        noise = torch.randn_like(x0)
        s = sigma.view(B, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        pred = self.m(x_t, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=sigma * 1000,
                      return_dict=False)[0]
        loss = (pred.float() - (noise - x0)).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.m.parameters(), cfg["grad_clip"] or float("inf"))
        self.opt.step()
        self.opt.zero_grad()

    def timed(self, steps):
        self.step()  # warm
        w, c = [], []
        for _ in range(steps):
            t0, c0 = time.perf_counter(), time.process_time()
            self.step()
            w.append(time.perf_counter() - t0)
            c.append(time.process_time() - c0)
        return statistics.median(w), statistics.median(c)


def ours_run(model, data, cfg, steps, tmp, callback=None):
    """train() for `steps` steps; returns the callback marks (wall, cpu) at the end of every step."""
    marks = []

    def cb(s, m):
        marks.append((time.perf_counter(), time.process_time()))
        if callback is not None:
            callback(s)

    train(model, data, {**cfg, **TIMING_FREE, "steps": steps}, tmp, callback=cb, resume=False)
    return marks


def ours_timed(model, data, cfg, steps, tmp):
    marks = ours_run(model, data, cfg, steps + 1, tmp)  # the first step (warm-up) is not timed
    w = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    c = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    return statistics.median(w), statistics.median(c)


# --------------------------------------------------------------------------------------------------- profiler
CATEGORIES = (  # substring of the aten op name (self CPU time); first match wins
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention")),
    ("matmul", ("::mm", "addmm", "bmm", "matmul", "linear")),
    ("convolution", ("conv",)),
    ("norms", ("norm", "rsqrt")),
    ("optimizer", ("fused_adam", "_foreach_", "lerp")),
    ("copies/layout", ("copy", "contiguous", "clone", "cat", "index", "permute", "transpose", "view", "reshape",
                       "expand", "as_strided", "empty", "zero", "fill", "slice", "select", "split", "chunk",
                       "stack", "unsqueeze", "squeeze", "detach", "::t", "::to", "resize", "pad")),
    ("element-wise", ("add", "mul", "sub", "div", "silu", "gelu", "relu", "sigmoid", "pow", "exp", "sum", "mean",
                      "neg", "where", "threshold", "tanh", "sin", "cos", "sqrt", "max", "min", "clamp", "abs")),
)
PHASES = ("data", "forward", "backward", "clip", "optimizer", "ema")


def _category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def profile_table(fn, started=True):
    """Profile fn() (which returns its step count; with started=False fn(prof) starts and stops the profiler itself)
    and return per step: {category: self-CPU ms}, {phase: CPU ms} (record_function ranges), total ms, the profiler."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    if started:
        with prof:
            n = fn()
    else:
        n = fn(prof)
    cats, phases, total = {}, {}, 0.0
    for e in prof.key_averages():
        if e.key in PHASES or e.key.startswith("Optimizer."):
            continue
        t = e.self_cpu_time_total / 1e3
        total += t
        cats[_category(e.key)] = cats.get(_category(e.key), 0.0) + t
    for e in prof.key_averages():
        if e.key in PHASES:
            phases[e.key] = e.cpu_time_total / 1e3
    return {k: v / n for k, v in cats.items()}, {k: v / n for k, v in phases.items()}, total / n, prof


def print_profiles(results, top=0):
    cats = [c for c, _ in CATEGORIES] + ["other"]
    names = list(results)
    print("\nwhere the time goes (self CPU ms per step, share of the step in brackets):\n")
    print("| category | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for c in cats + ["total"]:
        cells = []
        for n in names:
            cs, _, tot, _ = results[n]
            v = tot if c == "total" else cs.get(c, 0.0)
            cells.append(f"{v:.1f} ({v / tot:.0%})")
        print(f"| {c} | " + " | ".join(cells) + " |")
    for n in names:
        _, ph, tot, prof = results[n]
        if ph:
            print(f"\n{n}: loop phases (CPU ms per step, inclusive): "
                  + ", ".join(f"{p} {ph[p]:.1f} ({ph[p] / tot:.0%})" for p in PHASES if p in ph))
        if top:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


# -------------------------------------------------------------------------------------------------------- main
def _parse_override(s: str):
    k, _, v = s.partition("=")
    return k, json.loads(v) if v not in ("", None) else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="tiny", help="profiles/<name>.yaml (model, codec, text, pretrain_base)")
    ap.add_argument("--batch", type=int, default=None, help="override the stage's batch_size")
    ap.add_argument("--layers", type=int, default=None, help="override the model's num_layers")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round and loop (median taken)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts, each measured per round")
    ap.add_argument("--ours-cfg", nargs="*", default=[], metavar="KEY=JSON",
                    help="override train keys of ours, e.g. compile=true ema=null")
    ap.add_argument("--profile-steps", type=int, default=0, help="torch.profiler over N steps of each loop")
    ap.add_argument("--profile-threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=0, help="also print the profiler's top-N op table")
    a = ap.parse_args(argv)
    over = {"num_layers": a.layers} if a.layers else {}
    params, build, lat_shape, text_len, cfg = profile_setup(a.profile, **over)
    if a.batch:
        cfg["batch_size"] = a.batch
    cfg.update(dict(_parse_override(s) for s in a.ours_cfg))
    stock_m, ours_m = build().train(), build().train()
    data = make_data(stock_m.config, 256, lat_shape, text_len)
    fwd = forward_flops_per_sample(stock_m, lat_shape, text_len)
    B = cfg["batch_size"]
    step_flops = 3 * fwd * B
    stock = Stock(stock_m, data, cfg)
    rows = {t: [] for t in a.threads}
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for th in a.threads:
                torch.set_num_threads(th)
                pw, pc = matmul_peak()
                sw, sc = stock.timed(a.steps)
                ow, oc = ours_timed(ours_m, data, {**cfg, "num_threads": th}, a.steps, Path(tmp) / f"r{r}")
                rows[th].append(dict(peak_w=pw, peak_c=pc, stock_w=sw, stock_c=sc, ours_w=ow, ours_c=oc))
                print(f"round {r} threads {th}: peak {pw / 1e9:6.1f} GFLOP/s | stock {sw * 1e3:7.1f} ms | ours "
                      f"{ow * 1e3:7.1f} ms | cpu: peak {pc / 1e9:6.1f} stock {sc * 1e3:7.1f} ms ours "
                      f"{oc * 1e3:7.1f} ms", flush=True)
        load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else "?"
        print(f"\nprofile={a.profile} model={params['model']['profile']} layers={stock_m.config.num_layers} "
              f"init={params['model']['init']} batch={B} latent={'x'.join(map(str, lat_shape))} text_len={text_len} "
              f"rounds={a.rounds} steps/round={a.steps} ours_cfg={a.ours_cfg or 'profile'} "
              f"load(1/5/15 min)={' '.join(load)} ({time.time() - t_start:.0f} s)")
        print(f"forward FLOPs/sample {fwd / 1e6:.1f} M; training step {step_flops / 1e9:.2f} GFLOP (3 x fwd x B)\n")
        print("| threads | clock | peak GFLOP/s | stock ms/step | ours ms/step | stock/peak | ours/peak | "
              "ours speed-up vs stock |")
        print("|---|---|---|---|---|---|---|---|")
        for th, rr in rows.items():
            med = lambda f: statistics.median(f(x) for x in rr)  # noqa: E731
            for k, name in (("w", "wall"), ("c", "cpu")):
                print(f"| {th} | {name} | {med(lambda x: x['peak_' + k]) / 1e9:.1f} | "
                      f"{med(lambda x: x['stock_' + k]) * 1e3:.1f} | {med(lambda x: x['ours_' + k]) * 1e3:.1f} | "
                      f"{med(lambda x: step_flops / x['stock_' + k] / x['peak_' + k]):.3f} | "
                      f"{med(lambda x: step_flops / x['ours_' + k] / x['peak_' + k]):.3f} | "
                      f"{med(lambda x: x['stock_' + k] / x['ours_' + k]):.3f} |")
        if a.profile_steps:
            torch.set_num_threads(a.profile_threads)
            n = a.profile_steps
            stock.step()

            def run_stock():
                for _ in range(n):
                    stock.step()
                return n

            res = {"stock": profile_table(run_stock)}
            res["ours"] = profile_table(lambda prof: ours_run(
                ours_m, data, {**cfg, "num_threads": a.profile_threads}, n + 1, Path(tmp) / "prof",
                callback=lambda s: prof.start() if s == 1 else prof.stop() if s == n + 1 else None) and n,
                started=False)
            print(f"\nprofiler: {n} steps per loop after a warm-up step, {a.profile_threads} thread(s); ours = the "
                  "steps between train()'s callbacks (setup and saving excluded)")
            print_profiles(res, a.top)


if __name__ == "__main__":
    main()
