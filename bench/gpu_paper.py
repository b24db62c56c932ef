"""Paper-scale memory and speed on one GPU: the 1.6B DiT with AdamW vs CAME-8bit, the 4.8B with CAME-8bit (bf16
autocast, gradient checkpointing, the per-GPU batch), and sampling latency of 1.6B / 4.8B at 1024 px, 20 steps.

    .venv/bin/python bench/gpu_paper.py [--batch 16] [--steps 5]        # on a CUDA machine: the table
    .venv/bin/python bench/gpu_paper.py --dry-run                       # CPU: same code at reduced width + meta sizes

Training rows run ``sana_core.train``'s own step (``_step_fn``: flow-matching loss on a random 32×32×32 DC-AE-shaped
latent batch with 300 × 2304 Gemma-2-shaped captions) through ``sana_core.optim.build_optimizer`` with the model in
fp32 master weights under ``torch.autocast(bf16)`` and ``enable_gradient_checkpointing``: peak =
``torch.cuda.max_memory_allocated`` over warm-up + timed steps, step time = median of the timed steps. Sampling rows
time the DiT of a 20-step Flow-DPM-Solver run with classifier-free guidance (2 forwards per step, batch 1, bf16
weights) — Gemma-2 encoding and DC-AE decoding excluded, so it is a lower bound of the pipeline's latency.

The per-GPU batch: the paper trains at a global batch 1024; ``--batch`` is the per-GPU share (default 16 = 1024 over
64 GPUs, an assumption — set it to yours). ``--dry-run`` builds every model at 1/10 width (7 heads × 32) with the
paper's depth, latents 8×8 and 16 caption tokens, on the CPU, times one training step and 2 sampling steps, and
reports the full-size
analytic "weights + gradients + optimizer state" bytes from the meta-device shapes next to it; it checks the code
path, not the GPU figures.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sana_core import flow  # noqa: E402
from sana_core.model import build_transformer  # noqa: E402
from sana_core.optim import build_optimizer, predicted_state_bytes  # noqa: E402
from sana_core.train import _step_fn, validate_config  # noqa: E402

TRAIN_CASES = [("paper_1.6b", "adamw"), ("paper_1.6b", "came8bit"), ("paper_4.8b", "came8bit")]
SAMPLE_CASES = ["paper_1.6b", "paper_4.8b"]
REDUCED = dict(num_attention_heads=7, num_cross_attention_heads=2, cross_attention_head_dim=112,
               cross_attention_dim=224, caption_channels=256)  # dry run: 1/10 width, paper depth


def _md(rows, header):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    print("\n".join(out) + "\n", flush=True)


def analytic_train_bytes(profile: str, optimizer: str) -> tuple[int, int]:
    """(parameters, bytes of fp32 weights + fp32 gradients + optimizer state) of the full-size model (meta device)."""
    shapes = [tuple(p.shape) for p in build_transformer(profile, init="diffusers", device="meta").parameters()]
    n = sum(math.prod(s) for s in shapes)
    return n, 8 * n + predicted_state_bytes(optimizer, shapes)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def train_case(profile, optimizer, batch, steps, dev, dry):
    torch.manual_seed(0)
    over = REDUCED if dry else {}
    model = build_transformer(profile, init="diffusers", device=dev, **over).train()
    model.enable_gradient_checkpointing()
    c = model.config
    hw, L = (8, 8) if dry else (32, 32), 16 if dry else 300
    x0 = torch.randn(batch, c.in_channels, *hw, device=dev)
    emb = torch.randn(batch, L, c.caption_channels, device=dev)
    mask = torch.ones(batch, L, dtype=torch.long, device=dev)
    sigma, noise, drop = flow.draw_flow_noise(batch, (c.in_channels, *hw), generator=torch.Generator().manual_seed(0))
    sigma, noise, drop = sigma.to(dev), noise.to(dev), drop.to(dev)
    opt = build_optimizer(optimizer, model.parameters(), lr=1e-5)
    cfg = validate_config({})
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):  # step 0 = warm-up (allocates the optimizer state)
        _sync(dev)
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = _step_fn(model, x0, emb, mask, sigma, noise, drop, None, cfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(dev)
        if i:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    assert math.isfinite(loss.item()), (profile, optimizer, loss.item())
    del model, opt
    return peak, statistics.median(times)


@torch.no_grad()
def sample_case(profile, steps, dev, dry):
    torch.manual_seed(0)
    over = REDUCED if dry else {}
    model = build_transformer(profile, init="diffusers", device=dev, **over).eval()
    if dev.type == "cuda":
        model = model.to(torch.bfloat16)
    c = model.config
    hw, L = (8, 8) if dry else (32, 32), 16 if dry else 300
    dt = next(model.parameters()).dtype
    x = torch.randn(2, c.in_channels, *hw, device=dev, dtype=dt)  # cond + uncond
    emb = torch.randn(2, L, c.caption_channels, device=dev, dtype=dt)
    mask = torch.ones(2, L, dtype=torch.long, device=dev)
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(steps):
        t = torch.full((2,), 1.0 - i / steps, device=dev, dtype=dt)
        v = model(x, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]
        x = x - v / steps
    _sync(dev)
    del model
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16, help="per-GPU batch (default 16 = 1024 / 64 GPUs)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps after one warm-up step")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--dry-run", action="store_true", help="CPU, 1/10 width, batch 2: checks the code path")
    a = ap.parse_args(argv)
    dry = a.dry_run or not torch.cuda.is_available()
    if dry and not a.dry_run:
        print("no CUDA device: running the dry run (--dry-run)", flush=True)
    dev = torch.device("cpu" if dry else "cuda")
    batch, steps = (2, 1) if dry else (a.batch, a.steps)
    sample_steps = 2 if dry else a.sample_steps
    where = "CPU dry run, 1/10 width, 8x8 latents, 16 tokens" if dry else torch.cuda.get_device_name()
    print(f"# bench/gpu_paper.py — {where}; batch {batch}/device, bf16 autocast, gradient checkpointing\n")
    rows, peaks = [], {}
    for profile, opt in TRAIN_CASES:
        n, full = analytic_train_bytes(profile, opt)
        peak, t = train_case(profile, opt, batch, steps, dev, dry)
        peaks[(profile, opt)] = peak
        rows.append([profile, f"{n / 1e9:.2f}B", opt, f"{full / 2**30:.1f}",
                     "—" if peak is None else f"{peak:.1f}", f"{t:.3f}"])
    _md(rows, ["model", "params", "optimizer", "weights+grads+state GiB (full size, analytic)",
               "peak GiB (measured)", "step s (median)"])
    a16, c16 = peaks[("paper_1.6b", "adamw")], peaks[("paper_1.6b", "came8bit")]
    na, fa = analytic_train_bytes("paper_1.6b", "adamw")
    _, fc = analytic_train_bytes("paper_1.6b", "came8bit")
    print(f"CAME-8bit / AdamW at 1.6B: analytic {fc / fa:.3f}" +
          ("" if a16 is None else f", measured peak {c16 / a16:.3f}") + " (goal <= 0.75; paper 43 / 57 GB = 0.754)\n")
    srows = []
    for profile in SAMPLE_CASES:
        s = sample_case(profile, sample_steps, dev, dry)
        srows.append([profile, f"{sample_steps} steps, CFG", f"{s:.3f}", f"{1 / s:.2f}"])
    _md(srows, ["model", "sampling", "DiT latency s / image", "img/s (DiT only)"])


if __name__ == "__main__":
    main()
