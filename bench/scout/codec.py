"""Scout 1: train f8c16s on clean renders of the reduced world; PSNR + exact-evaluator score of round-trips vs time."""
import sys; sys.path.insert(0, "/work/main/bench/scout")
from common import *
from sana_core.latents import build_codec, train_codec, to_pixels, psnr
BUDGET = float(sys.argv[1]) if len(sys.argv) > 1 else 300
w = world()
imgs = ds.load_images(WORK + "/pool4k")
metas = read_jsonl(WORK + "/pool4k/eval_iid.jsonl")
gt = gt_renders(metas, w)
# step time probe
probe = build_codec("f8c16s", seed=1)
t = time.time(); train_codec(imgs[:256], probe, steps=3, batch_size=int(sys.argv[3]) if len(sys.argv)>3 else 32, n_val=32, calibrate=False); dt = (time.time() - t) / 3
steps = int(BUDGET / dt * 0.92)
print(f"probe {dt:.2f} s/step -> steps {steps}", flush=True)
import os
from sana_core.latents import load_codec
codec = load_codec(os.environ["INIT"]) if os.environ.get("INIT") else build_codec("f8c16s", seed=0)
OUT = os.environ.get("OUTNAME", "codec_f8c16s")
log, t0, c0, ev = [], time.time(), cpu_s(), {"t": 0.0, "next": 60.0}
def rt_eval(step):
    te = time.time()
    x = to_pixels(gt)
    codec.vae.eval()
    with torch.no_grad():
        rec = codec.vae.decode(codec.vae.encode(x).latent).sample
    from sana_core.latents import to_uint8
    r = to_uint8(rec); df, s = score(r, metas, w)
    row = {"step": step, "train_wall_s": round(time.time() - t0 - ev["t"], 1), "cpu_s": round(cpu_s() - c0, 1),
           "psnr_eval_gt": round(psnr(rec, x), 2), "evaluator_overall": round(s["overall"], 3),
           **{k: round(s[k], 3) for k in ("single_object", "two_object", "counting", "colors", "position", "color_attr")}}
    codec.vae.train(); ev["t"] += time.time() - te
    log.append(row); print(row, flush=True); return r
def cb(step, loss, lr):
    if time.time() - t0 - ev["t"] >= ev["next"]:
        ev["next"] += 60.0; rt_eval(step)
codec, rep = train_codec(imgs, codec, steps=steps, batch_size=int(sys.argv[3]) if len(sys.argv)>3 else 32, lr=float(sys.argv[2]) if len(sys.argv)>2 else 1e-3, n_val=128, eval_every=0,
                         time_limit_s=BUDGET * 1.3, callback=cb)
r = rt_eval(rep["steps"])
print("report", {k: v for k, v in rep.items() if k != "history"}, flush=True)
codec.save(WORK + "/" + OUT)
json.dump({"log": log, "report": {k: v for k, v in rep.items()}, "probe_s_per_step": dt}, open(WORK + "/" + OUT + "_log.json", "w"), indent=1)
from PIL import Image
Image.fromarray(np.concatenate([grid(gt[:32]), grid(r[:32])], 0)).resize((16*66*2, 4*66*2), Image.NEAREST).save("/work/main/docs/img/scout_" + OUT + ".png")
