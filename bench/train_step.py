"""Training-step throughput: our `sana_core.train.train` loop vs a plain stock loop vs the fp32 matmul peak.

One run, rounds interleaved (peak → stock → ours each round), ratios reported as medians of per-round ratios (the
machine is shared and noisy). Achieved FLOP/s = 3 × forward FLOPs per sample (FlopCounterMode, sana_core.flops)
× batch / step time. Peak = best of 3 timings of a 2048³ fp32 matmul, measured in the same round and thread count.
Both wall-clock and process CPU time are reported: with one thread, CPU time is robust to other processes on the
machine (it is what the step costs when it has the core); with more threads, CPU time also counts spin-waiting.

    .venv/bin/python bench/train_step.py --threads 1 --rounds 5 --steps 4 [--batch 32] [--sample]

"stock" = what a user writes with plain diffusers: model.forward + MSE on ε − x0 + backward + `torch.optim.AdamW`
(default, single-tensor on CPU) + zero_grad, same shifted-logit-normal draws. "ours" = `train()` with the default
optimizer (`sana_core.optim` adamw, fused), grad clipping, NaN guard, metrics; timed per step via its callback.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sana_core import flow  # noqa: E402
from sana_core.flops import forward_flops_per_sample  # noqa: E402
from sana_core.model import build_transformer  # noqa: E402
from sana_core.train import TensorData, train  # noqa: E402


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


def make_data(profile_cfg, n, text_len, hw):
    g = torch.Generator().manual_seed(0)
    c = profile_cfg.in_channels
    lat = torch.randn(n, c, hw, hw, generator=g)
    emb = torch.randn(n, text_len, profile_cfg.caption_channels, generator=g)
    mask = (torch.arange(text_len)[None] < torch.randint(4, text_len + 1, (n, 1), generator=g)).long()
    return TensorData(lat, emb, mask, torch.randn(text_len, profile_cfg.caption_channels, generator=g))


class Stock:
    """Plain diffusers training step (what the stack-notes §5 snippet does)."""

    def __init__(self, model, data, batch):
        self.m, self.d, self.B = model, data, batch
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.step_i = 0

    def step(self):
        B = self.B
        idx = torch.randint(0, len(self.d), (B,))
        x0, emb, mask = self.d.batch(idx)
        u = torch.sigmoid(torch.randn(B))
        sigma = 3.0 * u / (1 + 2.0 * u)
        noise = torch.randn_like(x0)
        s = sigma.view(B, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        pred = self.m(x_t, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=sigma * 1000,
                      return_dict=False)[0]
        loss = (pred.float() - (noise - x0)).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.m.parameters(), 0.1)
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


def ours_timed(model, data, batch, steps, tmp, cfg_extra):
    marks = []
    cb = lambda s, m: marks.append((time.perf_counter(), time.process_time()))  # noqa: E731
    train(model, data, dict(steps=steps + 1, batch_size=batch, lr=1e-4, log_every=1, progress=False,
                            checkpoint_every=0, **cfg_extra), tmp, callback=cb, resume=False)
    w = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    c = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    return statistics.median(w), statistics.median(c)


def bench_sampling(model, data, batch, steps=20, reps=2):
    from sana_core.sample import initial_noise, sample_latents

    x0, emb, mask = data.batch(torch.arange(batch) % len(data))
    noise = initial_noise(range(batch), tuple(x0.shape[1:]))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        sample_latents(model, emb, mask, data.null_emb[None], noise, steps=steps)
        best = min(best, time.perf_counter() - t)
    return batch / best, best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hw", type=int, default=8, help="latent height = width")
    ap.add_argument("--text-len", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round and loop (median taken)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--sample", action="store_true", help="also time 20-step DPM sampling with CFG")
    ap.add_argument("--compile-stock", action="store_true",
                    help="torch.compile the stock model (first step compiles: minutes; reported separately)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    stock_m = build_transformer(a.profile, seed=0).train()
    ours_m = build_transformer(a.profile, seed=0).train()
    data = make_data(stock_m.config, 256, a.text_len, a.hw)
    fwd = forward_flops_per_sample(stock_m, (stock_m.config.in_channels, a.hw, a.hw), a.text_len)
    step_flops = 3 * fwd * a.batch
    stock = Stock(torch.compile(stock_m) if a.compile_stock else stock_m, data, a.batch)
    if a.compile_stock:
        t0 = time.perf_counter()
        stock.step()
        print(f"stock torch.compile first step: {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            pw, pc = matmul_peak()
            sw, sc = stock.timed(a.steps)
            ow, oc = ours_timed(ours_m, data, a.batch, a.steps, Path(tmp) / f"r{r}", {"num_threads": threads})
            rows.append(dict(peak_w=pw, peak_c=pc, stock_w=sw, stock_c=sc, ours_w=ow, ours_c=oc))
            print(f"round {r}: peak {pw / 1e9:6.1f} GFLOP/s | stock {sw * 1e3:7.1f} ms | ours {ow * 1e3:7.1f} ms "
                  f"| cpu: peak {pc / 1e9:6.1f} stock {sc * 1e3:7.1f} ms ours {oc * 1e3:7.1f} ms", flush=True)
    med = lambda f: statistics.median(f(x) for x in rows)  # noqa: E731
    print(f"\nprofile={a.profile} stock={'compiled' if a.compile_stock else 'eager'} batch={a.batch} "
          f"latent={stock_m.config.in_channels}x{a.hw}x{a.hw} "
          f"text_len={a.text_len} threads={threads} rounds={a.rounds} steps/round={a.steps}")
    print(f"forward FLOPs/sample {fwd / 1e6:.1f} M; training step {step_flops / 1e9:.2f} GFLOP (3 x fwd x B)\n")
    print("| clock | peak GFLOP/s | stock ms/step | ours ms/step | stock/peak | ours/peak | ours speed-up vs stock |")
    print("|---|---|---|---|---|---|---|")
    for k, name in (("w", "wall"), ("c", "cpu")):
        print(f"| {name} | {med(lambda x: x['peak_' + k]) / 1e9:.1f} | {med(lambda x: x['stock_' + k]) * 1e3:.1f} | "
              f"{med(lambda x: x['ours_' + k]) * 1e3:.1f} | "
              f"{med(lambda x: step_flops / x['stock_' + k] / x['peak_' + k]):.3f} | "
              f"{med(lambda x: step_flops / x['ours_' + k] / x['peak_' + k]):.3f} | "
              f"{med(lambda x: x['stock_' + k] / x['ours_' + k]):.3f} |")
    if a.sample:
        ips, sec = bench_sampling(ours_m, data, a.batch)
        print(f"\nsampling: {a.batch} latents, 20 DPM steps, CFG 4.5 (batch doubled): {sec:.2f} s -> {ips:.1f} "
              "images/s (transformer only, decode excluded)")


if __name__ == "__main__":
    main()
