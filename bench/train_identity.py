"""Same inputs, two checkouts: does the training loop give the same weights, and as fast?

Runs the tiny profile's pretrain_base recipe (model `tiny`, 8-channel 8×8 latent, MiniLM width 384 × 24 tokens,
AdamW 2e-3, warm-up 100, clip 1.0, EMA 0.99, batch 32, 2 threads, a checkpoint every 100 steps) for `--steps` steps
on fixed random data, and prints the wall time, the final loss and hashes of the final raw and EMA weights. Run it with
each checkout first on the path, interleaved, and compare the lines:

    for i in 1 2 3; do for t in ../old .; do PYTHONPATH=$t .venv/bin/python bench/train_identity.py --steps 100; done; done
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from sana_core.model import build_transformer
from sana_core.train import TensorData, train


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    n, length, width = 1024, 24, 384
    mask = (torch.arange(length)[None] < torch.randint(4, length + 1, (n, 1), generator=g)).long()
    data = TensorData(torch.randn(n, 8, 8, 8, generator=g), torch.randn(n, length, width, generator=g), mask,
                      torch.randn(length, width, generator=g))
    model = build_transformer({"profile": "tiny", "init": "pixart", "in_channels": 8, "out_channels": 8, "seed": 0})
    cfg = dict(steps=args.steps, batch_size=32, lr=2e-3, warmup_steps=100, weight_decay=0.0, grad_clip=1.0,
               optimizer="adamw", shift=1.0, caption_dropout=0.1, ema=0.99, log_every=10, checkpoint_every=100,
               keep_checkpoints=2, num_threads=args.threads, progress=False, seed=0)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        summary = train(model, data, cfg, d, resume=False)
        wall = time.time() - t0
        ema = {}
        for f in sorted(Path(d, "final", "ema").glob("*.safetensors")):
            ema.update(load_file(f))
    print(f"steps={args.steps} wall_s={wall:.1f} loss={summary['loss']:.6f} raw={digest(model.state_dict())} "
          f"ema={digest(ema)}")


if __name__ == "__main__":
    main()
