"""Scout 4: continue a scout DiT checkpoint for MINUTES with EMA; evaluate raw and EMA weights (exact evaluator)."""
import sys; sys.path.insert(0, "/work/main/bench/scout")
from common import *
from pathlib import Path
import copy
from sana_core.latents import load_codec
from sana_core.text import build_text_encoder
from sana_core.cache import load_cache
from sana_core.model import build_transformer
from sana_core.train import train, load_model_weights, list_checkpoints, FINAL_DIR
from sana_core.sample import Sampler
src, codec_name, name, lr, ema, minutes = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
w = world(); te = build_text_encoder({"kind": "minilm"}); codec = load_codec(WORK + "/" + codec_name)
metas = read_jsonl(WORK + "/pool4k/eval_iid.jsonl")
data = load_cache(Path(WORK + f"/cache_{codec_name}"))
model = build_transformer("tiny"); ck = list_checkpoints(Path(WORK) / src)[-1]
load_model_weights(model, ck[1]); print("from", ck, flush=True)
out = Path(WORK) / f"run_{name}"
class Stop(Exception): pass
t0 = time.time()
def cb(step, m):
    if step % 100 == 0: print(step, f"{time.time()-t0:.0f}s loss {m['loss']:.4f}", flush=True)
    if time.time() - t0 >= minutes * 60: raise Stop(step)
cfg = {"steps": 100000, "batch_size": 32, "lr": lr, "warmup_steps": 0, "shift": 1.0, "grad_clip": 1.0, "ema": ema,
       "caption_dropout": 0.1, "checkpoint_every": 100, "keep_checkpoints": 1, "log_every": 10, "progress": False,
       "num_threads": int(os.environ.get("THREADS", "2"))}
try:
    train(model, data, cfg, out, callback=cb, resume=False)
except Stop as e:
    step = e.args[0]
last = list_checkpoints(out)[-1]
print("train s", round(time.time() - t0), "steps", step, "last ckpt", last[0], flush=True)
for tag, sub in (("raw", ""), ("ema", "ema")):
    m = build_transformer("tiny"); load_model_weights(m, last[1] / sub if sub else last[1]); m.eval()
    s = Sampler(m, codec, te, {"steps": 20, "guidance_scale": 4.5, "shift": 1.0, "batch_size": 64})
    imgs = s.generate([x["prompt"] for x in metas], list(range(len(metas))))
    np.save(out / f"samples_{tag}.npy", imgs)
    df, summ = score(imgs, metas, w)
    print(tag, {k: round(v, 3) if isinstance(v, float) else v for k, v in summ.items()}, flush=True)
