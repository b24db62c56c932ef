"""Sampling throughput: our `sana_core.sample.Sampler` vs stock `diffusers.SanaPipeline` on the same model folder.

Images/s for prompts × seeds at the folder's sampling settings (20 Flow-DPM steps, CFG 4.5), text encoding and
decoding included, rounds interleaved (stock → ours); the ratio is the median of per-round ratios (the machine is
shared and noisy). Stock is called as its docs show, one call for the whole batch:
`pipe(prompts, negative_prompt="", generator=[Generator().manual_seed(s) ...], height, width, guidance_scale,
num_inference_steps, complex_human_instruction=None, use_resolution_binning=False, clean_caption=False,
max_sequence_length, output_type="pt")`. Ours runs with `uncond_mask="null"` (stock's unconditional mask) so the
two compute the same images; the script asserts max |ours − stock| ≤ --tol on every round.

Without --model-dir a tiny model folder is built in a temp dir with `sana_core.sample.save_pipeline`: the profile's
transformer (codec channels), an untrained f8c8s codec and MiniLM — init "sana" (the profile's pixart init zeroes
proj_out, which would make every image the same and the equality check empty).

    .venv/bin/python bench/sample.py --threads 1 --rounds 3 --images 32 [--model-dir models/base] [--compile]

--compile: ours runs its transformer through `torch.compile` (inductor, static shapes); the compile time (the first
call) is printed apart and is not in the rounds — it is paid once per process, so it counts against a stage's wall
time, not per image. Compiled kernels reassociate sums, so the images match stock only to --tol.
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

from flows.params import load_profile  # noqa: E402
from sana_core.latents import build_codec  # noqa: E402
from sana_core.model import build_transformer  # noqa: E402
from sana_core.sample import load_sampler, save_pipeline  # noqa: E402
from sana_core.text import build_text_encoder  # noqa: E402

PROMPTS = [f"a photo of {n} {c} {s}" for n in ("a", "two") for c in ("red", "green", "blue", "yellow")
           for s in ("circle", "square", "triangle", "cross")]


def build_folder(profile: str, out: Path) -> Path:
    params = load_profile(profile)
    codec = build_codec({"profile": params["codec"]["profile"], "seed": params["codec"]["seed"]})
    ch = codec.latent_channels
    tr = build_transformer({**params["model"], "init": "sana", "in_channels": ch, "out_channels": ch,
                            "seed": params["seed"]})
    text = build_text_encoder({**params["text"], "device": "cpu", "dtype": "float32"})
    samp = {k: v for k, v in params["sample"].items() if k not in ("device", "dtype")}
    return save_pipeline(out, tr, codec, text, {**samp, "image_size": int(params["data"]["image_size"])})


def stock_pipe(folder: Path):
    from diffusers import SanaPipeline
    pipe = SanaPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_stock(pipe, sampler, prompts, seeds):
    c = sampler.config
    return pipe(prompts, negative_prompt="", generator=[torch.Generator().manual_seed(s) for s in seeds],
                height=sampler.image_size, width=sampler.image_size, guidance_scale=c.guidance_scale,
                num_inference_steps=c.steps, complex_human_instruction=None, use_resolution_binning=False,
                clean_caption=False, max_sequence_length=sampler.text.max_length, output_type="pt").images


def run_ours(sampler, prompts, seeds):
    return sampler.generate(prompts, seeds, output="float", uncond_mask="null")


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--model-dir", default=None, help="a SanaPipeline folder (default: a tiny one built in a temp dir)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-5, help="max |ours − stock| allowed (images in [0, 1])")
    ap.add_argument("--compile", action="store_true", help="torch.compile ours' transformer (compile time printed apart)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(a.images)]
    seeds = list(range(a.images))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.model_dir) if a.model_dir else build_folder(a.profile, Path(tmp) / "model")
        pipe, sampler = stock_pipe(folder), load_sampler(folder)
        c = sampler.config
        if a.compile:
            sampler.transformer = torch.compile(sampler.transformer, dynamic=False)
            _, cw, _ = timed(lambda: run_ours(sampler, prompts, seeds))   # compiles for the timed batch shape
            print(f"compile + first call: {cw:.1f} s", flush=True)
        run_ours(sampler, prompts[:2], seeds[:2]), run_stock(pipe, sampler, prompts[:2], seeds[:2])  # warm-up
        rows = []
        for r in range(a.rounds):
            s_img, sw, sc = timed(lambda: run_stock(pipe, sampler, prompts, seeds))
            o_img, ow, oc = timed(lambda: run_ours(sampler, prompts, seeds))
            diff = float((o_img.float() - s_img.float()).abs().max())
            rows.append(dict(sw=sw, sc=sc, ow=ow, oc=oc, diff=diff))
            print(f"round {r}: stock {sw:6.2f} s (cpu {sc:6.2f}) | ours {ow:6.2f} s (cpu {oc:6.2f}) | "
                  f"max|diff| {diff:.2e}", flush=True)
            assert diff <= a.tol, f"ours and stock differ by {diff} > {a.tol}"
    med = lambda k: statistics.median(x[k] for x in rows)  # noqa: E731
    load = open("/proc/loadavg").read().split()[:3]
    n = a.images
    print(f"\nmodel={'temp tiny (init sana)' if not a.model_dir else a.model_dir} images={n} "
          f"size={sampler.image_size} steps={c.steps} cfg={c.guidance_scale} solver={c.solver} threads={a.threads} "
          f"rounds={a.rounds} compile={a.compile} load(1/5/15 min)={' '.join(load)}\n")
    print("| clock | stock s | ours s | stock images/s | ours images/s | ours speed-up vs stock | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for k, name in (("w", "wall"), ("c", "cpu")):
        print(f"| {name} | {med('s' + k):.2f} | {med('o' + k):.2f} | {n / med('s' + k):.2f} | {n / med('o' + k):.2f} | "
              f"{statistics.median(x['s' + k] / x['o' + k] for x in rows):.3f} | {max(x['diff'] for x in rows):.1e} |")


if __name__ == "__main__":
    main()
