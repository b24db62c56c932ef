"""Peak memory of the data seam against dataset size: encode and training-stream RSS at 1×, 4×, 16× the pool.

    .venv/bin/python bench/data_scale.py [--base 512] [--scales 1 4 16] [--steps 200] [--batch 32] [--legacy]

1. Renders a GenEval-Shapes pool of `--base` images (sana_core.data.shapes.write_shapes, image folder), then for each
   scale s writes webdataset shards holding s copies of it (keys `<copy>_<index>`, 1000 samples per tar).
2. One fresh subprocess per measurement (`--child`), so each peak is its own: `resource.getrusage(RUSAGE_SELF)
   .ru_maxrss`, and the RSS after imports and model loading (`base`) so the table also shows what the work added.
   - encode: `encode_dataset` (smoke codec, untrained f4c16 at 64 px → 16×16×16 latents; MiniLM text, L = 16, cached
     per shard; `--shard-size` records per shard) from the webdataset source; images/s of the whole encode.
   - stream: `ShardStream` over that output, `--steps` global batches of `--batch` (`indices` + `batch`: the data side
     of a training step; the model step itself does not depend on the dataset size).
   - `--legacy`: the same with today's in-memory path (sana_core.cache.build_cache on the pool as one uint8 array,
     then load_cache + TensorData), for comparison.
Prints one table; each RSS ratio is against the same row at 1×. One thread (torch, OMP), CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZE = 64


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2 ** 20


# --------------------------------------------------------------------------------------------------- children
def child(args) -> dict:
    """One measurement in this (fresh) process; imports and model loading happen before `base` and the clock."""
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from sana_core.cache import build_cache, load_cache
    from sana_core.data import open_source
    from sana_core.data.encode import encode_dataset
    from sana_core.data.images import decode_image
    from sana_core.data.stream import ShardStream
    from sana_core.latents import build_codec
    from sana_core.text import build_text_encoder
    from sana_core.train import TensorData
    if args.child in ("encode", "legacy_encode"):
        codec, text = build_codec("smoke"), build_text_encoder({"max_length": 16})
    base = _current_mb()
    t0 = time.time()
    if args.child == "encode":
        st = encode_dataset(open_source("webdataset", args.src), codec, text, args.out, image_size=SIZE,
                            shard_size=args.shard_size, batch_size=64)
        out = {"n": st["n"], "images_per_s": st["n"] / (time.time() - t0)}
    elif args.child == "stream":
        s = ShardStream(args.out)
        for step in range(args.steps):
            s.batch(s.indices(0, step, args.batch))
        out = {"n": len(s), "steps_per_s": args.steps / (time.time() - t0)}
    elif args.child == "legacy_encode":
        recs = list(open_source("webdataset", args.src))
        images = np.stack([decode_image(r.image, SIZE) for r in recs])
        build_cache(images, [r.caption for r in recs], codec, text, args.out, batch_size=64)
        out = {"n": len(recs), "images_per_s": len(recs) / (time.time() - t0)}
    else:  # legacy_stream
        c = load_cache(args.out)
        td = TensorData(c.latents, c.emb, c.mask, c.null_emb, c.caption_index)
        for step in range(args.steps):
            td.batch(td.indices(0, step, args.batch))
        out = {"n": len(td), "steps_per_s": args.steps / (time.time() - t0)}
    return {**out, "base_mb": base, "peak_mb": _rss_mb(), "seconds": time.time() - t0}


def _run_child(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", kind] + [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{kind} child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------- parent
def write_scaled(base_dir: Path, out: Path, copies: int) -> None:
    from sana_core.data import open_source
    from sana_core.data.images import decode_image
    from sana_core.data.webdataset import write_webdataset
    recs = [(r.key.split("/")[-1], decode_image(r.image, SIZE), r.caption) for r in open_source("imagefolder", base_dir)]
    write_webdataset(((f"{c:03d}_{k}", img, cap, {}) for c in range(copies) for k, img, cap in recs), out, 1000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=512)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shard-size", dest="shard_size", type=int, default=1024)
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--src", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    from sana_core.data.shapes import write_shapes
    work = Path(args.workdir or tempfile.mkdtemp(prefix="data_scale-"))
    try:
        t0 = time.time()
        write_shapes({"pool_size": args.base, "eval_n": 2, "calibration_size": 4}, work / "base")
        rows = {}
        for s in args.scales:
            write_scaled(work / "base", work / f"src{s}", s)
            src = str(work / f"src{s}")
            rows[("seam", "encode", s)] = _run_child("encode", src=src, out=work / f"enc{s}", shard_size=args.shard_size)
            rows[("seam", "stream", s)] = _run_child("stream", out=work / f"enc{s}", steps=args.steps, batch=args.batch)
            if args.legacy:
                rows[("legacy", "encode", s)] = _run_child("legacy_encode", src=src, out=work / f"cache{s}")
                rows[("legacy", "stream", s)] = _run_child("legacy_stream", out=work / f"cache{s}", steps=args.steps,
                                                           batch=args.batch)
            shutil.rmtree(work / f"src{s}")
            shutil.rmtree(work / f"cache{s}", ignore_errors=True)
            print(f"scale {s}x done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        s1 = min(args.scales)
        print(f"\nbase pool {args.base} images at {SIZE} px, shard_size {args.shard_size}, stream {args.steps} steps "
              f"x batch {args.batch}; peak RSS (ru_maxrss), base = RSS after imports/model load\n")
        print("| path | measurement | scale | images | peak RSS MB | base MB | peak − base MB | peak vs 1× "
              "| throughput |\n|---|---|---|---|---|---|---|---|---|")
        for (path, what, s), r in rows.items():
            ref = rows[(path, what, s1)]["peak_mb"]
            tp = (f"{r['images_per_s']:.0f} img/s" if "images_per_s" in r else f"{r['steps_per_s']:.0f} batches/s")
            print(f"| {path} | {what} | {s}× | {r['n']} | {r['peak_mb']:.0f} | {r['base_mb']:.0f} | "
                  f"{r['peak_mb'] - r['base_mb']:.0f} | {r['peak_mb'] / ref:.3f} | {tp} |")
        print(f"\ntotal {time.time() - t0:.0f} s")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
