"""Scout 8: the latent. A codec variant (LATENT channels) trained as the codec stage does (clean pool images, codec_train), the pool encoded into a cache, then frontier.py's DiT recipe on it.
usage: [THREADS=2] python latent.py <out_root> LATENT [CODEC_STEPS]   (data/shapes linked from $SRC=/work/run2)
then:  MODEL='{"in_channels": L, "out_channels": L}' python frontier.py <out_root> <out_root>/dit STEPS CKPT N_IMG"""
import os, sys, json, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path
import torch
sys.path.insert(0, "/work/main")
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
from flows import params as P
from flows.stages import _common as C
from flows.stages.encode import encode
from sana_core.latents import build_codec, train_codec
from sana_core.geneval.dataset import load_images, load_manifest
root = Path(sys.argv[1]); L = int(sys.argv[2])
params = P.load_profile("tiny")
steps = int(sys.argv[3]) if len(sys.argv) > 3 else params["codec_train"]["steps"]
(root / "data").mkdir(parents=True, exist_ok=True)
if not (root / "data/shapes").exists():
    (root / "data/shapes").symlink_to(Path(os.environ.get("SRC", "/work/run2")) / "data/shapes")
shapes = root / "data/shapes"
man = load_manifest(shapes)
clean = man.index[man["defect"].isin(["none", "wrong_caption", "incomplete_caption"])].to_numpy()
images = load_images(shapes)[clean]
model = build_codec({"profile": params["codec"]["profile"], "seed": 0, "latent_channels": L})
t0 = time.time()
trained, rep = train_codec(images, model, steps=steps, batch_size=params["codec_train"]["batch_size"],
                           lr=params["codec_train"]["lr"], seed=0)
rt = C.codec_roundtrip_geneval(trained, root, params)
trained.save(root / "models/codec")
print(json.dumps({"latent": L, "steps": steps, "s": round(time.time() - t0), "psnr": round(rep["psnr"], 2),
                  "roundtrip": rt}), flush=True)
print(encode(params, root), flush=True)
