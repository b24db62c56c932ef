"""Where do two CPU runs of the same commit diverge? Each pipeline stage, small, under different CPU settings.

One configuration (`run`) executes small versions of the stages through the stage code, each on the SAME inputs — the
reference run's outputs of the stage before — so a difference is the stage's own:

  data     write_shapes of the tiny world (profile `tiny`'s `data`, pool `--pool`)           → PNG bytes
  codec    train_codec on the reference's images, `--codec-steps` steps                       → weights
  encode   encode_dataset with the reference's codec + MiniLM                                 → cache shards (latents, text)
  train    sana_core.train, pretrain_base's config (EMA, AdamW, clip), `--train-steps` steps  → loss per step, weights
  sample   the reference's trained DiT, 16 eval_iid prompts, the tiny `sample` section        → uint8 images
  base     (with `--base DIR`: a make-run folder) its models/pretrain_base, the quick eval's 32 prompts, seed 0,
           scored by the exact evaluator                                                      → images + quick eval

`sweep` runs `run` in fresh processes under each setting of SETTINGS (threads; ISA caps, which torch/oneDNN/MKL read
only at start-up) and prints one table row per setting against the first: what changed, by how much. Example:

    PYTHONPATH=$PWD .venv/bin/python bench/repro_cpu.py sweep --out /tmp/repro --base /tmp/mr

`rerun-codec --run DIR --threads 2` re-trains a finished run's whole codec stage and compares it with the run's;
`rerun-train --run DIR --threads 2 --train-steps 200` re-runs the start of its pretrain_base and compares the logs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# (name, threads, extra environment): the first is the reference
SETTINGS = [
    ("t1", 1, {}),
    ("t1 again", 1, {}),
    ("t1 ATEN avx2", 1, {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("t1 oneDNN AVX2", 1, {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("t1 MKL_CBWR AVX2", 1, {"MKL_CBWR": "AVX2"}),
    ("t1 all AVX2", 1, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}),
    ("t2", 2, {}),
    ("t2 again", 2, {}),
    ("t2 all AVX2", 2, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}),
]


def tiny_params() -> dict:
    from flows import params as P
    return P.default_params()


# ------------------------------------------------------------------------------------------------------- run
def run(out: Path, ref: Path, threads: int, pool: int, codec_steps: int, train_steps: int, base: Path | None) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from flows import params as P
    from flows.stages import _common as C
    from flows.stages.codec import training_images
    from sana_core.data import open_source
    from sana_core.data.encode import encode_dataset
    from sana_core.data.shapes import write_shapes
    from sana_core.data.stream import ShardStream
    from sana_core.latents import build_codec, load_codec, train_codec
    from sana_core.model import build_transformer
    from sana_core.sample import Sampler, load_sampler
    from sana_core.text import build_text_encoder
    from sana_core.train import train

    torch.set_num_threads(threads)
    params = tiny_params()
    params["data"]["pool_size"] = pool
    out.mkdir(parents=True, exist_ok=True)
    rec: dict = {"threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability(),
                 "env": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")}}
    t = {}

    t0 = time.time()
    write_shapes(C.world_cfg(params), out / "shapes")
    rec["data"] = {str(f.relative_to(out / "shapes")): hashlib.sha256(f.read_bytes()).hexdigest()
                   for f in sorted((out / "shapes").rglob("*")) if f.is_file()}
    t["data"] = time.time() - t0

    t0 = time.time()
    src = open_source("shapes", ref / "shapes")
    images = training_images(src, 64)
    codec, rep = train_codec(images, build_codec({"profile": params["codec"]["profile"], "seed": 0}),
                             steps=codec_steps, batch_size=params["codec_train"]["batch_size"],
                             lr=params["codec_train"]["lr"], seed=0)
    codec.save(out / "codec")
    rec["codec"] = {"psnr": rep["psnr"], "scaling_factor": rep["scaling_factor"]}
    t["codec"] = time.time() - t0

    t0 = time.time()
    text = build_text_encoder(params["text"])
    rcodec = load_codec(ref / "codec", "cpu", "float32")
    encode_dataset(open_source("shapes", ref / "shapes"), rcodec, text, out / "cache", image_size=64,
                   shard_size=pool, batch_size=params["encode"]["batch_size"])
    t["encode"] = time.time() - t0

    t0 = time.time()
    data = ShardStream(ref / "cache")
    model = build_transformer({**params["model"], "in_channels": rcodec.latent_channels,
                               "out_channels": rcodec.latent_channels, "seed": 0})
    cfg = {**P.train_cfg(params, "pretrain_base"), "steps": train_steps, "log_every": 1, "num_threads": threads,
           "checkpoint_every": 10 ** 6, "progress": False}
    losses = []
    train(model, data, cfg, out / "work", callback=lambda s, logs: losses.append(float(logs["loss"])), resume=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "train.safetensors"))
    rec["train"] = {"losses": losses}
    t["train"] = time.time() - t0
    torch.set_num_threads(threads)   # train() restores the thread count it found

    t0 = time.time()
    ref_model = build_transformer({**params["model"], "in_channels": rcodec.latent_channels,
                                   "out_channels": rcodec.latent_channels, "seed": 0})
    from safetensors.torch import load_file
    ref_model.load_state_dict(load_file(str(ref / "train.safetensors")))
    metas = [json.loads(line) for line in (ref / "shapes" / "eval_iid.jsonl").read_text().splitlines()][:16]
    sampler = Sampler(ref_model.eval(), rcodec, text, C.sampling(params))
    np.save(out / "sample.npy", sampler.generate([m["prompt"] for m in metas], [0] * len(metas)))
    t["sample"] = time.time() - t0

    if base is not None:
        t0 = time.time()
        bparams = P.load(base, validate_=False)   # an older commit's params: only its data/sample/quick_eval are read
        s = load_sampler(base / "models" / "pretrain_base")
        s.config = s._cfg(C.sampling(bparams))     # the stage's quick eval samples with the `sample` section
        metas = C.quick_prompts(base, bparams)
        imgs = s.generate([m["prompt"] for m in metas], [int(bparams["quick_eval"]["seed"])] * len(metas))
        np.save(out / "base.npy", imgs)
        rec["base"] = {"quick_eval": C._score(metas, imgs, C.world(bparams))["overall"]}
        t["base"] = time.time() - t0
    rec["seconds"] = t
    (out / "record.json").write_text(json.dumps(rec, indent=1))


# --------------------------------------------------------------------------------------------------- compare
def _state(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _cache_arrays(cache: Path) -> dict:
    import numpy as np
    import torch
    out = {}
    for f in sorted(cache.rglob("*")):
        if f.suffix == ".npy":
            out[str(f.relative_to(cache))] = torch.from_numpy(np.load(f).astype("float64"))
        elif f.suffix == ".safetensors":
            out.update({f"{f.name}/{k}": v for k, v in _state(f).items() if v.is_floating_point()})
    return out


def compare(ref: Path, other: Path) -> dict:
    """What `other` changed against `ref`, per stage (0 / identical = bit-identical)."""
    import numpy as np
    a, b = (json.loads((p / "record.json").read_text()) for p in (ref, other))
    row = {"data_files_differ": sum(a["data"][k] != b["data"].get(k) for k in a["data"])}
    wa, wb = ({}, {})
    for p, w in ((ref, wa), (other, wb)):
        for f in sorted((p / "codec").glob("*.safetensors")):
            w.update(_state(f))
    row["codec_max_w"] = _max_diff(wa, wb)
    row["codec_psnr"] = (a["codec"]["psnr"], b["codec"]["psnr"])
    ca, cb = _cache_arrays(ref / "cache"), _cache_arrays(other / "cache")
    row["encode_max"] = _max_diff(ca, cb) if ca.keys() == cb.keys() and ca else float("nan")
    la, lb = a["train"]["losses"], b["train"]["losses"]
    first = next((i + 1 for i, (x, y) in enumerate(zip(la, lb)) if x != y), None)
    row["train_first_step_differs"] = first
    row["train_loss_last"] = (la[-1], lb[-1])
    row["train_max_w"] = _max_diff(_state(ref / "train.safetensors"), _state(other / "train.safetensors"))
    sa, sb = np.load(ref / "sample.npy").astype(int), np.load(other / "sample.npy").astype(int)
    row["sample_max_px"], row["sample_frac_px"] = int(np.abs(sa - sb).max()), float((sa != sb).mean())
    if (ref / "base.npy").is_file() and (other / "base.npy").is_file():
        ba, bb = np.load(ref / "base.npy").astype(int), np.load(other / "base.npy").astype(int)
        row["base_max_px"], row["base_frac_px"] = int(np.abs(ba - bb).max()), float((ba != bb).mean())
        row["base_quick_eval"] = (a["base"]["quick_eval"], b["base"]["quick_eval"])
    row["seconds"] = b["seconds"]
    return row


def sweep(out: Path, base: Path | None, names: list[str] | None, args) -> None:
    settings = [s for s in SETTINGS if names is None or s[0] in names or s is SETTINGS[0]]
    ref = out / "ref"
    rows = []
    for i, (name, threads, env) in enumerate(settings):
        d = ref if i == 0 else out / name.replace(" ", "_")
        if not (d / "record.json").is_file():
            cmd = [sys.executable, __file__, "run", "--out", str(d), "--ref", str(ref if i else d),
                   "--threads", str(threads), "--pool", str(args.pool), "--codec-steps", str(args.codec_steps),
                   "--train-steps", str(args.train_steps)] + (["--base", str(base)] if base else [])
            # passive OpenMP waits: on a loaded machine spinning threads stall each other (the numbers do not change)
            e = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                 "OMP_WAIT_POLICY": "PASSIVE", **env}
            subprocess.run(cmd, env=e, check=True)
        rec = json.loads((d / "record.json").read_text())
        print(f"== {name}: capability {rec['capability']}, threads {rec['threads']}, "
              f"seconds {json.dumps({k: round(v, 1) for k, v in rec['seconds'].items()})}", flush=True)
        if i:
            row = {"setting": name, **compare(ref, d)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "table.json").write_text(json.dumps(rows, indent=1))


def rerun_codec(run_dir: Path, threads: int) -> None:
    """Re-train a finished run's codec (its data/shapes and params.yaml `codec`/`codec_train`) with this checkout at
    `threads`, and compare the weights with its models/codec: the whole stage, reproduced later on this machine."""
    import torch
    from flows import params as P
    from flows.stages.codec import training_images
    from sana_core.data import open_source
    from sana_core.latents import build_codec, train_codec
    prm = P.load(run_dir, validate_=False)
    c, tc = prm["codec"], prm["codec_train"]
    images = training_images(open_source("shapes", run_dir / "data" / "shapes"), int(prm["data"]["image_size"]))
    t0 = time.time()
    codec, rep = train_codec(images, build_codec({"profile": c["profile"], "seed": c["seed"]}), steps=tc["steps"],
                             batch_size=tc["batch_size"], lr=tc["lr"], seed=c["seed"], num_threads=threads)
    new = {k: v.contiguous() for k, v in codec.vae.state_dict().items()}
    old = {}
    for f in (run_dir / "models" / "codec").glob("*.safetensors"):
        old.update(_state(f))
    print(f"threads {rep['num_threads']} seconds {time.time() - t0:.0f} psnr {rep['psnr']!r} "
          f"scaling {rep['scaling_factor']!r} max|dw| {_max_diff(old, new)} "
          f"bit-identical {old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)}")


def rerun_train(run_dir: Path, threads: int, steps: int) -> None:
    """Re-run the first `steps` steps of a finished run's pretrain_base (its data/cache, codec and the tiny profile's
    pretrain_base config, which `make run` used) at `threads`, and compare the logged loss and gradient norm with its
    plots/pretrain_base.json (every train.log_every steps): a bit-identical run logs the same numbers."""
    from flows import params as P
    from flows.stages import _common as C
    from sana_core.data.stream import ShardStream
    from sana_core.latents import load_codec
    from sana_core.train import train
    import tempfile
    params = P.default_params()
    codec = load_codec(run_dir / "models" / "codec", "cpu", "float32")
    model = C.new_transformer(params, codec)
    hist = {r["step"]: r for r in json.loads((run_dir / "plots" / "pretrain_base.json").read_text())}
    mine = {}
    cfg = {**P.train_cfg(params, "pretrain_base"), "steps": steps, "num_threads": threads, "progress": False,
           "checkpoint_every": 10 ** 6}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        train(model, ShardStream(run_dir / "data" / "cache"), cfg, d, resume=False,
              callback=lambda step, logs: mine.__setitem__(step, logs))
    steps_ = [k for k in sorted(mine) if k in hist]
    same = [k for k in steps_ if mine[k]["loss"] == hist[k]["loss"] and mine[k]["grad_norm"] == hist[k]["grad_norm"]]
    worst = max(abs(mine[k]["loss"] - hist[k]["loss"]) for k in steps_)
    print(f"threads {threads} seconds {time.time() - t0:.0f}: {len(same)} of {len(steps_)} logged steps "
          f"(up to {steps_[-1]}) have the run's exact loss and grad norm; max |Δloss| {worst:.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["run", "sweep", "rerun-codec", "rerun-train"])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--ref", type=Path, help="run: the reference configuration's folder (its outputs are the inputs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pool", type=int, default=256)
    ap.add_argument("--codec-steps", type=int, default=30)
    ap.add_argument("--train-steps", type=int, default=50)
    ap.add_argument("--base", type=Path, help="a make-run folder: sample its models/pretrain_base's quick eval")
    ap.add_argument("--only", nargs="*", help="sweep: these settings (by name) besides the reference")
    ap.add_argument("--run", type=Path, help="rerun-codec: a finished run's folder (e.g. a make-run clone)")
    a = ap.parse_args()
    if a.mode == "rerun-codec":
        rerun_codec(a.run, a.threads)
    elif a.mode == "rerun-train":
        rerun_train(a.run, a.threads, a.train_steps)
    elif a.mode == "run":
        run(a.out, a.ref or a.out, a.threads, a.pool, a.codec_steps, a.train_steps, a.base)
    else:
        sweep(a.out, a.base, a.only, a)


if __name__ == "__main__":
    main()
