"""Scout 5: the committed tiny recipe (profiles/tiny.yaml pretrain_base) trained for MINUTES two-thread minutes
with checkpoints every CKPT steps, then the EMA weights of every checkpoint scored on the whole eval_iid
(N_IMG images per prompt, exact evaluator) → the frontier GenEval-Shapes vs training minutes.
usage: [THREADS=2] [EMA=decay] [DECAY=frac] [RAW_AT=s1,s2] python frontier.py <pipeline_root (data/, models/codec)> <out_dir> STEPS CKPT N_IMG"""
import os, sys, time, json
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path
import torch, pandas as pd
root, out = Path(sys.argv[1]), Path(sys.argv[2])
steps, ckpt, n_img = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, "/work/main")
from flows import params as P
from flows.stages import _common as C
from sana_core.model import build_transformer
from sana_core.train import train, list_checkpoints, load_model_weights
from sana_core.sample import Sampler
from sana_core.geneval.world import load_world
from sana_core.geneval.detect import score_image
from sana_core.geneval.evaluate import summary
params = P.load_profile("tiny")
data = C.load_data(root)
codec_, text = C.codec(params, root), C.text_encoder(params)
model = build_transformer({**params["model"], **json.loads(os.environ.get("MODEL", "{}")), "seed": params["seed"]})
cfg = {**C.train_cfg(params, "pretrain_base"), "steps": steps, "checkpoint_every": ckpt, "keep_checkpoints": 0,
       "progress": False, "num_threads": int(os.environ.get("THREADS", "2"))}
if os.environ.get("DECAY"):                    # scout only: warm-up, constant, then linear decay to 0 over the last
    import diffusers.optimization as DO        # DECAY fraction of the steps (WSD), in place of constant-with-warmup
    frac = float(os.environ["DECAY"])
    def _wsd(optimizer, num_warmup_steps, last_epoch=-1):
        start = int(steps * (1 - frac))
        def f(i):
            if i < num_warmup_steps:
                return i / max(1, num_warmup_steps)
            return 1.0 if i < start else max(0.0, (steps - i) / max(1, steps - start))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, f, last_epoch)
    DO.get_constant_schedule_with_warmup = _wsd
if os.environ.get("EMA"):                      # another EMA decay for the same run (e.g. EMA=0.99)
    cfg["ema"] = float(os.environ["EMA"])
log, T0 = [], time.time()
def cb(step, m):
    log.append({"step": step, "wall_s": round(time.time() - T0, 1),
                **{k: m[k] for k in ("loss", "grad_norm", "samples_per_s") if k in m}})
if not list_checkpoints(out) or list_checkpoints(out)[-1][0] < steps:
    t0 = time.time()
    summ = train(model, data, cfg, out, callback=cb, resume=bool(list_checkpoints(out)) if out.exists() else False)
    print("trained", steps, "steps in", round(time.time() - t0, 1), "s", flush=True)
    (out / "log.json").write_text(json.dumps(log))
w = load_world(root / "data/shapes/world.json")
metas = [json.loads(l) for l in open(root / "data/shapes/eval_iid.jsonl") if l.strip()]
prompts = [m["prompt"] for m in metas for _ in range(n_img)]
seeds = [1000 * i + k for i in range(len(metas)) for k in range(n_img)]
mm = [m for m in metas for _ in range(n_img)]
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
RAW_AT = {int(x) for x in os.environ.get("RAW_AT", str(steps)).split(",")}
wall = {r["step"]: r["wall_s"] for r in json.loads((out / "log.json").read_text())}
for step, ck in [c for c in list_checkpoints(out) if c[0] >= int(os.environ.get("FROM", "0"))]:
    for sub in ("ema",) + (("",) if step in RAW_AT else ()):
        m = build_transformer({**params["model"], **json.loads(os.environ.get("MODEL", "{}")), "seed": params["seed"]})
        load_model_weights(m, ck / sub if sub else ck); m.eval()
        s = Sampler(m, codec_, text, {**params["sample"], "batch_size": 64})
        t = time.time()
        imgs = s.generate(prompts, seeds)
        rows = [{"tag": x["tag"], "correct": bool(score_image(im, x, w)[0])} for im, x in zip(imgs, mm)]
        r = {"step": step, "train_min": round(wall.get(step, float("nan")) / 60, 2), "weights": sub or "raw", **{k: round(v, 3) if isinstance(v, float) else v
             for k, v in summary(pd.DataFrame(rows)).items()}, "sample_s": round(time.time() - t, 1)}
        print(json.dumps(r), flush=True)
        with open(out / "frontier.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
