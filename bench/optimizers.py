"""Optimizer state memory, step time and convergence: adamw, adamw8bit, came, came8bit (sana_core.optim).

    .venv/bin/python bench/optimizers.py [--threads 1] [--rounds 7] [--skip-50m]   # bytes + timing tables
    .venv/bin/python bench/optimizers.py --convergence [--steps 150] [--data geneval|synthetic]  # → docs/img/

1. State bytes per parameter for the paper 1.6B / 4.8B configs, exact from the real parameter shapes of a meta-device
   ``SanaTransformer2DModel`` (``predicted_state_bytes``; cross-checked by stepping came/came8bit/adamw on meta tensors).
2. Measured state bytes and ``step()`` time on the tiny profile (T6, 1.8M params) and on a ~50M-param Sana model
   (D=512, 12 layers), the four optimizers sharing one model and one fixed gradient, interleaved round-robin; the
   ratio column is the median over rounds of (optimizer / AdamW, fused since the dispatch became one) in the same round.
3. Where came8bit's time goes: time inside the 8-bit dequantise/quantise calls vs the rest of the step.
4. ``--convergence``: pre-training of the tiny profile with every optimizer from the same seed/init, data order, noise
   and σ; loss curves to docs/img/optimizer_convergence.png, one MLflow run per optimizer (experiment sana15, tags
   bench=optimizers, optimizer=<name>); asserts came8bit's final loss (mean of the last 20 steps) is within 5 % of
   came's.  ``--data geneval`` (default): a GenEval-Shapes pool (tiny profile's data section, ``--pool`` images,
   64 px), the tiny profile's f8c16s codec trained for ``--codec-steps`` (val PSNR printed), MiniLM captions, cached
   with sana_core.cache and trained through sana_core.train with the tiny profile's train section (lr of
   pretrain_base, batch 32).  ``--data synthetic``: the earlier fixed synthetic latent/caption set (plain loop).
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

from sana_core.model import PROFILES, build_transformer  # noqa: E402
from sana_core.optim import OPTIMIZERS, build_optimizer, predicted_state_bytes, state_bytes  # noqa: E402

PAPER_PARAMS = {"paper_1.6b": 1_604_641_952, "paper_4.8b": 4_721_825_952}
OFFICIAL = "came8bit quantizer=official"
M50 = dict(PROFILES["tiny"], num_attention_heads=16, attention_head_dim=32, num_layers=12,
           num_cross_attention_heads=16, cross_attention_head_dim=32, cross_attention_dim=512)


def _md(rows, header):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    print("\n".join(out) + "\n", flush=True)


# ------------------------------------------------------------------------------------------------- 1. paper bytes
def _meta_measured(name, model):
    """Step the optimizer once on meta tensors and count its state (None where the optimizer can't run on meta)."""
    params = [torch.nn.Parameter(torch.empty_like(p)) for p in model.parameters()]
    for p in params:
        p.grad = torch.empty_like(p)
    try:
        opt = build_optimizer(name, params, lr=1e-5)
        opt.step()
        return state_bytes(opt)
    except Exception:  # bitsandbytes' AdamW8bit calls its C kernel: no meta implementation
        return None


def paper_table():
    rows = []
    for prof in ("paper_1.6b", "paper_4.8b"):
        model = build_transformer(prof, init="diffusers", device="meta")
        shapes = [tuple(p.shape) for p in model.parameters()]
        n = sum(math.prod(s) for s in shapes)
        assert n == PAPER_PARAMS[prof], (prof, n)
        adam = predicted_state_bytes("adamw", shapes)
        for name in OPTIMIZERS:
            b = predicted_state_bytes(name, shapes)
            meta = _meta_measured(name, model)
            rows.append([prof, f"{n:,}", name, f"{b:,}", f"{b / n:.4f}", f"{b / 2**30:.2f}", f"{b / adam:.3f}",
                         "—" if meta is None else ("= predicted" if meta == b else f"MISMATCH {meta:,}")])
        q8 = sum(math.prod(s) for s in shapes if len(s) in (2, 4) and (len(s) == 2 or s[2:] == (1, 1))
                 and s[0] * s[1] > 16384)
        print(f"{prof}: {n:,} params; came8bit quantises m of {q8 / n:.2%} of them", flush=True)
        print(f"{prof}: came8bit official-quantiser bytes/param = "
              f"{predicted_state_bytes('came8bit', shapes, quantizer='official') / n:.4f}", flush=True)
    print("\nOptimizer state for the paper configs (fp32 params; min_8bit_size 16384 / block 2048 for came8bit, "
          "bnb defaults 4096 / 256 for adamw8bit):\n")
    _md(rows, ["profile", "params", "optimizer", "state bytes", "bytes/param", "GiB", "vs AdamW", "meta-device step"])


# ------------------------------------------------------------------------------------------------- 2. timing
def _model(kw, seed=0):
    torch.manual_seed(seed)
    from diffusers import SanaTransformer2DModel
    return SanaTransformer2DModel(**kw)


def timing_table(label, kw, rounds, steps, profile_8bit=True):
    model = _model(kw)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    opts = {name: build_optimizer(name, params, lr=1e-6) for name in OPTIMIZERS}
    opts[OFFICIAL] = build_optimizer("came8bit", params, lr=1e-6, quantizer="official")
    for o in opts.values():  # state init + warm-up
        o.step(), o.step()
    order = list(opts)
    times = {name: [] for name in order}
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            ts = []
            for _ in range(steps):
                t0 = time.perf_counter()
                opts[name].step()
                ts.append(time.perf_counter() - t0)
            times[name].append(statistics.median(ts))
    rows = []
    for name in order:
        sb = state_bytes(opts[name])
        ratio = statistics.median(t / a for t, a in zip(times[name], times["adamw"]))
        rows.append([label, f"{n:,}", name, f"{sb / 2**20:.2f}", f"{sb / n:.3f}",
                     f"{statistics.median(times[name]) * 1e3:.1f}", f"{min(times[name]) * 1e3:.1f}", f"{ratio:.2f}"])
    _md(rows, ["model", "params", "optimizer", "state MiB", "bytes/param", "step ms (median)", "step ms (best)",
               "× AdamW (median per-round)"])
    if profile_8bit:
        _profile_came8bit(label, opts["came8bit"], opts["came"], rounds, steps)


def _profile_came8bit(label, opt8, opt32, rounds, steps):
    """Time inside the 8-bit dequantise/quantise calls vs the whole step (came fp32 interleaved as the reference)."""
    acc = {"dequantise": 0.0, "quantise": 0.0}
    load, store = opt8._load_m, opt8._store_m

    def timed(fn, key):
        def wrap(state, *a, **kw):
            if "exp_avg" in state:
                return fn(state, *a, **kw)
            t0 = time.perf_counter()
            out = fn(state, *a, **kw)
            acc[key] += time.perf_counter() - t0
            return out
        return wrap

    opt8._load_m, opt8._store_m = timed(load, "dequantise"), timed(store, "quantise")
    tot8 = tot32 = 0.0
    for _ in range(rounds):
        for o in (opt8, opt32):
            for _ in range(steps):
                t0 = time.perf_counter()
                o.step()
                dt = time.perf_counter() - t0
                if o is opt8:
                    tot8 += dt
                else:
                    tot32 += dt
    opt8._load_m, opt8._store_m = load, store
    k = rounds * steps
    deq, q = acc["dequantise"] / k * 1e3, acc["quantise"] / k * 1e3
    rest = tot8 / k * 1e3 - deq - q
    _md([[label, f"{tot8 / k * 1e3:.1f}", f"{deq:.1f} ({deq / (tot8 / k * 1e3):.0%})",
          f"{q:.1f} ({q / (tot8 / k * 1e3):.0%})", f"{rest:.1f}", f"{tot32 / k * 1e3:.1f}"]],
        ["model", "came8bit step ms", "dequantise ms", "quantise ms", "rest (CAME maths) ms", "came fp32 step ms"])


# ------------------------------------------------------------------------------------------------- 4. convergence
def _synthetic_plan(steps, batch):
    """A fixed synthetic "latent" set (smooth 2×2-noise fields + a caption-dependent per-channel offset, random
    caption embeddings) and a fixed (indices, noise, σ) plan; the model learns the flow ε − x0 given both."""
    from sana_core import flow

    kw = PROFILES["tiny"]
    g = torch.Generator().manual_seed(0)
    n_data, L = 64, 8
    base = torch.nn.functional.interpolate(torch.randn(n_data, 16, 2, 2, generator=g), size=(8, 8), mode="bilinear")
    emb = torch.randn(n_data, L, kw["caption_channels"], generator=g)
    x0 = base + 0.5 * emb[:, 0, :16, None, None]
    mask = torch.ones(n_data, L, dtype=torch.long)
    plan = []
    for _ in range(steps):
        idx = torch.randint(0, n_data, (batch,), generator=g)
        plan.append((idx, torch.randn(batch, 16, 8, 8, generator=g), flow.sample_sigmas(batch, generator=g)))
    return x0, emb, mask, plan


def _train_synthetic(name, steps, batch, lr):
    from sana_core import flow

    x0, emb, mask, plan = _synthetic_plan(steps, batch)
    model = build_transformer("tiny", init="sana", seed=0)
    opt = build_optimizer(name, model.parameters(), lr=lr)
    losses = []
    for idx, noise, sigma in plan:
        x = flow.interpolate(x0[idx], noise, sigma)
        pred = model(x, encoder_hidden_states=emb[idx], encoder_attention_mask=mask[idx],
                     timestep=flow.model_timestep(sigma), return_dict=False)[0]
        loss = flow.flow_loss(pred, flow.velocity_target(x0[idx], noise))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _geneval_cache(work, pool, codec_steps):
    """GenEval-Shapes pool (64 px world, the tiny profile's data section with pool_size=pool) → briefly trained
    f8c16s codec → MiniLM + latent cache. Returns (cache dir, codec report)."""
    import yaml

    from sana_core.cache import build_cache
    from sana_core.geneval.dataset import build_dataset, load_images, load_manifest
    from sana_core.latents import build_codec, train_codec
    from sana_core.text import build_text_encoder

    prm = yaml.safe_load((ROOT / "profiles" / "tiny.yaml").read_text())
    t0 = time.perf_counter()
    build_dataset({**prm["data"], "pool_size": pool}, work / "data")
    images, captions = load_images(work / "data"), load_manifest(work / "data")["caption"].tolist()
    codec, rep = train_codec(images, build_codec(prm["codec"]), steps=codec_steps,
                             batch_size=prm["codec_train"]["batch_size"], lr=prm["codec_train"]["lr"], seed=0)
    print(f"data: {len(images)} GenEval-Shapes images; codec {prm['codec']['profile']} {rep['steps']} steps: "
          f"val PSNR {rep['psnr_init']:.1f} -> {rep['psnr']:.2f} dB ({time.perf_counter() - t0:.0f} s)", flush=True)
    text = build_text_encoder(prm["text"])
    build_cache(images, captions, codec, text, work / "cache")
    return work / "cache", rep, prm


def _train_geneval(name, cache_dir, prm, steps, batch, lr, work):
    """Pre-train the tiny model with sana_core.train (the tiny profile's train section + pretrain_base's lr unless
    --lr is given); same seed/init/data order/noise/σ for every optimizer. Returns per-step losses."""
    from sana_core.train import train

    cfg = {**prm["train"], "steps": steps, "batch_size": batch, "lr": lr if lr is not None
           else prm["pretrain_base"]["lr"], "optimizer": name, "seed": 0, "checkpoint_every": 0, "log_every": 1,
           "num_threads": torch.get_num_threads(), "progress": False}
    model = build_transformer({**prm["model"], "seed": 0})
    losses = []
    train(model, str(cache_dir), cfg, work / f"run_{name}", callback=lambda s, m: losses.append(m["loss"]),
          resume=False)
    return losses, cfg


def _log_mlflow(curves, cfgs, extra):
    """One MLflow run per optimizer in experiment sana15 (tags bench=optimizers, optimizer=<name>)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from flows import tracking

    exp_id = tracking.ensure_tracking(ROOT)
    client = MlflowClient()
    for name, ls in curves.items():
        run = client.create_run(exp_id, run_name=f"bench-optimizers-{name}",
                                tags={"bench": "optimizers", "optimizer": name, "data": extra["data"],
                                      "git_commit": tracking.git_commit(ROOT)})
        rid = run.info.run_id
        tracking.log_params(client, rid, {**{f"train.{k}": v for k, v in cfgs[name].items()}, **extra})
        ts = int(time.time() * 1000)
        client.log_batch(rid, metrics=[Metric("loss", v, ts, i + 1) for i, v in enumerate(ls)])
        tracking.log_metrics(client, rid, {"final_loss_mean20": statistics.mean(ls[-20:])}, step=len(ls))
        tracking.end_run(rid, ok=True)
    print(f"MLflow: {len(curves)} runs in experiment {tracking.EXPERIMENT} at {tracking.tracking_uri(ROOT)}",
          flush=True)


def convergence(steps, batch, lr, out_png, data="geneval", pool=512, codec_steps=150, mlflow=True):
    import tempfile

    curves, cfgs = {}, {}
    extra = {"data": data, "steps": steps, "batch": batch}
    with tempfile.TemporaryDirectory(prefix="bench-optim-") as tmp:
        work = Path(tmp)
        if data == "geneval":
            cache_dir, rep, prm = _geneval_cache(work, pool, codec_steps)
            extra.update(pool=pool, codec_steps=rep["steps"], codec_psnr=round(rep["psnr"], 3))
        for name in OPTIMIZERS:
            t0 = time.perf_counter()
            if data == "geneval":
                curves[name], cfgs[name] = _train_geneval(name, cache_dir, prm, steps, batch, lr, work)
            else:
                curves[name] = _train_synthetic(name, steps, batch, lr if lr is not None else 2e-4)
                cfgs[name] = {"optimizer": name, "lr": lr if lr is not None else 2e-4}
            ls = curves[name]
            print(f"{name}: first {ls[0]:.4f}  mean last 20 {statistics.mean(ls[-20:]):.4f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    lr_used = cfgs["came"]["lr"]
    if data == "geneval":
        title = (f"tiny profile pre-training on GenEval-Shapes ({pool} images, f8c16s latents "
                 f"{rep['psnr']:.1f} dB), B={batch}, lr={lr_used:g}")
    else:
        title = f"tiny profile, synthetic 8×8×16 latents, B={batch}, lr={lr_used:g}"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ls in curves.items():
        ema, e = [], ls[0]
        for v in ls:
            e = 0.9 * e + 0.1 * v
            ema.append(e)
        ax.plot(range(1, len(ema) + 1), ema, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss (EMA 0.9)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(out_png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(out_png)
    ref = statistics.mean(curves["came"][-20:])
    rows = [[n, f"{ls[0]:.4f}", f"{ls[-1]:.4f}", f"{statistics.mean(ls[-20:]):.4f}",
             f"{statistics.mean(ls[-20:]) / ref - 1:+.2%}"] for n, ls in curves.items()]
    _md(rows, ["optimizer", "loss step 1", "loss last step", "loss (mean of last 20)", "vs came"])
    if mlflow:
        _log_mlflow(curves, cfgs, extra)
    c8 = statistics.mean(curves["came8bit"][-20:])
    assert abs(c8 - ref) / ref <= 0.05, f"came8bit final loss {c8:.4f} not within 5 % of came {ref:.4f}"
    print(f"came8bit final loss within {abs(c8 - ref) / ref:.2%} of came (limit 5 %); plot: {out_png}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared 2-core box)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default 5) / convergence steps")
    ap.add_argument("--skip-50m", action="store_true")
    ap.add_argument("--convergence", action="store_true")
    ap.add_argument("--batch", type=int, default=None, help="convergence batch (default 32 geneval / 16 synthetic)")
    ap.add_argument("--lr", type=float, default=None,
                    help="convergence lr (default: tiny profile's pretrain_base lr for geneval, 2e-4 synthetic)")
    ap.add_argument("--data", choices=("geneval", "synthetic"), default="geneval", help="convergence data")
    ap.add_argument("--pool", type=int, default=512, help="GenEval-Shapes pool size for --data geneval")
    ap.add_argument("--codec-steps", type=int, default=150, help="f8c16s codec training steps for --data geneval")
    ap.add_argument("--no-mlflow", action="store_true", help="don't log the convergence curves to MLflow")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "optimizer_convergence.png")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    if a.convergence:
        batch = a.batch or (32 if a.data == "geneval" else 16)
        return convergence(a.steps or 150, batch, a.lr, a.out, a.data, a.pool, a.codec_steps, not a.no_mlflow)
    paper_table()
    timing_table("tiny (T6)", PROFILES["tiny"], a.rounds, a.steps or 5)
    if not a.skip_50m:
        timing_table("m50 (D512×12)", M50, a.rounds, a.steps or 3)


if __name__ == "__main__":
    main()
