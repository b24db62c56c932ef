"""Scout 2: tiny DiT on cached f8c16s latents + MiniLM; sample eval_iid N=1 @20 steps; exact evaluator.
usage: dit.py NAME LR SHIFT BATCH MINUTES [WARMUP] [EVAL_EVERY_MIN]"""
import sys; sys.path.insert(0, "/work/main/bench/scout")
from common import *
from pathlib import Path
from sana_core.latents import load_codec
from sana_core.text import build_text_encoder
from sana_core.cache import build_cache, load_cache
from sana_core.model import build_transformer, PROFILES
from sana_core.train import train
from sana_core.sample import Sampler
name, lr, shift, B, minutes = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
warm = int(sys.argv[6]) if len(sys.argv) > 6 else 50
eval_every = float(sys.argv[7]) * 60 if len(sys.argv) > 7 else 1e9
w = world()
import os
MODE = os.environ.get("MODE", "codec")          # codec | ps8 (exact pixel-unshuffle x8: 64px -> 8x8x192)
CODEC = os.environ.get("CODEC", "codec2")
te = build_text_encoder({"kind": "minilm"})
metas = read_jsonl(WORK + "/pool4k/eval_iid.jsonl")
from sana_core.train import TensorData
if MODE == "ps8":
    from sana_core.latents import to_pixels, to_uint8
    t = time.time()
    x = to_pixels(ds.load_images(WORK + "/pool4k"))
    lat = torch.nn.functional.pixel_unshuffle(x, 8)
    SCALE = float(1.0 / lat.std())
    lat = lat * SCALE
    man = ds.load_manifest(WORK + "/pool4k")
    uniq = {}; idx = torch.tensor([uniq.setdefault(c, len(uniq)) for c in man["caption"]])
    emb, mask = te.encode(list(uniq)); null_emb, _ = te.encode_null()
    data = TensorData(lat, emb, mask, null_emb, idx)
    print(f"ps8 data in {time.time()-t:.1f}s scale {SCALE:.3f}", flush=True)
    torch.manual_seed(0)
    model = build_transformer(dict(PROFILES["tiny"], in_channels=192, out_channels=192))
    from sana_core.sample import sample_latents, initial_noise
    def generate(prompts, seeds):
        e, m = te.encode(prompts); ne, _ = te.encode_null(); outs = []
        for i in range(0, len(prompts), 64):
            z = sample_latents(model, e[i:i+64], m[i:i+64], ne, initial_noise(seeds[i:i+64], (192, 8, 8)),
                               steps=20, guidance_scale=4.5, solver="dpm", shift=shift)
            outs.append(torch.nn.functional.pixel_shuffle(z / SCALE, 8))
        return to_uint8(torch.cat(outs))
else:
    codec = load_codec(WORK + "/" + CODEC)
    cdir = Path(WORK + f"/cache_{CODEC}")
    if not (cdir / "cache.json").exists():
        t = time.time()
        man = ds.load_manifest(WORK + "/pool4k")
        build_cache(ds.load_images(WORK + "/pool4k"), list(man["caption"]), codec, te, cdir)
        print(f"cache built in {time.time()-t:.1f}s", flush=True)
    data = load_cache(cdir)
    print("latent std", data.latents.std().item(), "mean", data.latents.mean().item(), flush=True)
    torch.manual_seed(0)
    model = build_transformer("tiny", init=os.environ.get("INIT", "sana"))
    def generate(prompts, seeds):
        s = Sampler(model, codec, te, {"steps": 20, "guidance_scale": 4.5, "shift": shift, "batch_size": 64})
        return s.generate(prompts, seeds)
print("params", sum(p.numel() for p in model.parameters()), flush=True)
out = Path(WORK + f"/run_{name}")
class Stop(Exception): pass
st = {"t0": time.time(), "c0": cpu_s(), "pause": 0.0, "pause_cpu": 0.0, "next_eval": eval_every, "curve": [], "evals": []}
def evaluate(step, final=False):
    te0, tc0 = time.time(), cpu_s()
    imgs = generate([m["prompt"] for m in metas], list(range(len(metas))) if os.environ.get("SEEDS") == "index" else [0] * len(metas))
    np.save(out / f"samples_{step}.npy", imgs) if out.exists() else None
    df, summ = score(imgs, metas, w)
    from sana_core.geneval.detect import detect
    empty = float(np.mean([len(detect(im, world=w)) == 0 for im in imgs]))
    row_noise = float(np.mean([is_empty(im) for im in imgs]))
    row = {"step": step, "train_wall_s": round(te0 - st["t0"] - st["pause"], 1),
           "train_cpu_s": round(cpu_s() - st["c0"] - st["pause_cpu"] - (cpu_s() - tc0), 1), "no_detection": round(empty, 3), "blank_px": round(row_noise, 3),
           **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in summ.items()},
           "sample_wall_s": round(time.time() - te0, 1)}
    reasons = df.reason.str.slice(0, 40).value_counts().head(6).to_dict()
    row["top_reasons"] = reasons
    st["evals"].append(row); print("EVAL", row, flush=True)
    st["pause"] += time.time() - te0; st["pause_cpu"] += cpu_s() - tc0
    model.train()
    return imgs
def cb(step, m):
    el = time.time() - st["t0"] - st["pause"]
    st["curve"].append((step, round(el, 1), round(m["loss"], 4)))
    if step % 50 == 0:
        print(step, f"{el:.0f}s", f"loss {m['loss']:.4f}", f"gn {m['grad_norm']:.3f}", f"{m['samples_per_s']:.1f} samp/s", flush=True)
    if el >= st["next_eval"] and el < minutes * 60:
        st["next_eval"] += eval_every; evaluate(step)
    if el >= minutes * 60:
        raise Stop(step)
cfg = {"steps": 100000, "batch_size": B, "lr": lr, "warmup_steps": warm, "shift": shift, "grad_clip": 1.0,
       "caption_dropout": 0.1, "checkpoint_every": 200, "keep_checkpoints": 1, "log_every": 10, "progress": False,
       "num_threads": int(os.environ.get("THREADS", "1"))}
try:
    train(model, data, cfg, out, callback=cb, resume=False)
except Stop as e:
    step = e.args[0]
model.eval()
imgs = evaluate(step, final=True)
json.dump({"name": name, "cfg": cfg, "curve": st["curve"], "evals": st["evals"]}, open(out / "scout.json", "w"), indent=1)
from PIL import Image
g = grid(imgs[:64], 16)
Image.fromarray(g).resize((g.shape[1] * 2, g.shape[0] * 2), Image.NEAREST).save(f"/work/main/docs/img/scout_{name}.png")
with open(out / "prompts.txt", "w") as f:
    f.write("\n".join(m["prompt"] for m in metas[:64]))
# smoothed loss summary
L = np.array([c[2] for c in st["curve"]])
print("loss first/last-50avg", L[:5].mean(), L[-5:].mean(), flush=True)
