"""Scout 6: why images fail. A model's weights (folder with config + safetensors) sampled on the whole eval_iid
(N_IMG seeds), exact evaluator; prints the summary and, per tag, the failure kinds (first reason of each failure:
missing object / wrong colour / wrong position / too many / blank = no detection at all).
usage: THREADS=2 [CODEC=codec folder] [GRID=png of the first 64 prompts] python diagnose.py <pipeline_root> <weights_dir> N_IMG [cfg=4.5] [steps=20] [solver=dpm]"""
import os, sys, json, re, collections
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path
import torch, pandas as pd
sys.path.insert(0, "/work/main")
from flows import params as P
from flows.stages import _common as C
from diffusers import SanaTransformer2DModel
from sana_core.latents import load_codec
from sana_core.sample import Sampler
from sana_core.geneval.world import load_world
from sana_core.geneval.detect import score_image
from sana_core.geneval.evaluate import summary
root, wdir, n_img = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
cfg_scale = float(sys.argv[4]) if len(sys.argv) > 4 else 4.5
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 20
solver = sys.argv[6] if len(sys.argv) > 6 else "dpm"
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
params = P.load_profile("tiny")
model = SanaTransformer2DModel.from_pretrained(wdir).eval()
codec_ = load_codec(os.environ["CODEC"]) if os.environ.get("CODEC") else C.codec(params, root)
s = Sampler(model, codec_, C.text_encoder(params), {**params["sample"], "batch_size": 64})
w = load_world(root / "data/shapes/world.json")
metas = [json.loads(l) for l in open(root / "data/shapes/eval_iid.jsonl") if l.strip()]
prompts = [m["prompt"] for m in metas for _ in range(n_img)]
seeds = [1000 * i + k for i in range(len(metas)) for k in range(n_img)]
mm = [m for m in metas for _ in range(n_img)]
imgs = s.generate(prompts, seeds, guidance_scale=cfg_scale, steps=steps, solver=solver)
rows, kinds = [], collections.defaultdict(collections.Counter)
for im, m in zip(imgs, mm):
    c, r, d = score_image(im, m, w)
    rows.append({"tag": m["tag"], "correct": bool(c)})
    if c:
        k = "ok"
    elif not any(d.values()):
        k = "blank"
    else:
        first = r.split("\n")[0]
        k = ("too_many" if "<" in first.split(",")[0] else "wrong_colour" if re.search(r"expected \w+ \w+>=", first)
             else "position" if ("target" in first) else "missing")
    kinds[m["tag"]][k] += 1
print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in summary(pd.DataFrame(rows)).items()}))
for tag, cnt in kinds.items():
    print(tag, dict(cnt))
tot = sum(kinds.values(), collections.Counter()); print("all", dict(tot))
if os.environ.get("GRID"):
    from PIL import Image
    import numpy as np
    g = [np.asarray(x) for x in imgs[: 64 * n_img: n_img]]
    rows_ = [np.concatenate(g[i:i + 8], 1) for i in range(0, 64, 8)]
    Image.fromarray(np.concatenate(rows_, 0)).save(os.environ["GRID"])
from sana_core.geneval.detect import analyse
import numpy as np
confs = np.array([d.conf for im in imgs for d in analyse(np.asarray(im), w)])
hist = np.histogram(confs, [0, .7, .8, .85, .9, .93, 1.01])[0]
print("components", len(confs), "conf bins <.7 .7-.8 .8-.85 .85-.9 .9-.93 >.93:", hist.tolist())
