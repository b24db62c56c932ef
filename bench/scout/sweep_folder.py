"""Scout 4: sampling knobs (CFG scale, steps, solver) on a pipeline model folder, exact evaluator on eval_iid.
usage: THREADS=1 python sweep_folder.py <model_dir> <data_dir> <n_img> cfg:steps:solver ..."""
import os, sys, time, json
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
import pandas as pd
from sana_core.sample import load_sampler
from sana_core.geneval.world import load_world
from sana_core.geneval.detect import score_image
from sana_core.geneval.evaluate import summary
model_dir, data_dir, n_img = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = [tuple(float(v) if "." in v else (int(v) if v.isdigit() else v) for v in s.split(":")) for s in sys.argv[4:]]
w = load_world(os.path.join(data_dir, "world.json"))
metas = [json.loads(l) for l in open(os.path.join(data_dir, "eval_iid.jsonl")) if l.strip()]
s = load_sampler(model_dir)
prompts = [m["prompt"] for m in metas for _ in range(n_img)]
seeds = [1000 * i + k for i in range(len(metas)) for k in range(n_img)]
mm = [m for m in metas for _ in range(n_img)]
for cfg, steps, solver in settings:
    t = time.time()
    imgs = s.generate(prompts, seeds, guidance_scale=cfg, steps=steps, solver=solver, batch_size=64)
    rows = []
    for im, m in zip(imgs, mm):
        c, r, _ = score_image(im, m, w)
        rows.append({"tag": m["tag"], "correct": bool(c), "reason": r})
    summ = summary(pd.DataFrame(rows))
    print(json.dumps({"model": model_dir, "cfg": cfg, "steps": steps, "solver": solver,
                      **{k: round(v, 3) if isinstance(v, float) else v for k, v in summ.items()},
                      "s": round(time.time() - t, 1)}), flush=True)
