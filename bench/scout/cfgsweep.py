"""Scout 3: sampling knobs on a trained tiny DiT checkpoint: CFG scale, steps, solver (exact evaluator, eval_iid)."""
import sys; sys.path.insert(0, "/work/main/bench/scout")
from common import *
from pathlib import Path
from sana_core.latents import load_codec
from sana_core.text import build_text_encoder
from sana_core.model import build_transformer
from sana_core.sample import Sampler
from sana_core.train import load_model_weights, list_checkpoints
run, codec_name = sys.argv[1], sys.argv[2]
settings = [tuple(float(v) if "." in v else (int(v) if v.isdigit() else v) for v in s.split(":")) for s in sys.argv[3:]]
w = world(); te = build_text_encoder({"kind": "minilm"}); codec = load_codec(WORK + "/" + codec_name)
metas = read_jsonl(WORK + "/pool4k/eval_iid.jsonl")
model = build_transformer("tiny")
ck = Path(run) if (Path(run) / "config.json").exists() else list_checkpoints(Path(WORK) / run)[-1][1]
sub = os.environ.get("SUB", "")
load_model_weights(model, ck / sub if sub else ck); model.eval()
print("checkpoint", ck, sub, flush=True)
for cfg, steps, solver in settings:
    t = time.time()
    s = Sampler(model, codec, te, {"steps": steps, "guidance_scale": cfg, "shift": 1.0, "solver": solver, "batch_size": 64})
    imgs = s.generate([m["prompt"] for m in metas], list(range(len(metas))))
    df, summ = score(imgs, metas, w)
    print({"cfg": cfg, "steps": steps, "solver": solver, **{k: round(v, 3) if isinstance(v, float) else v for k, v in summ.items()}, "s": round(time.time() - t, 1)}, flush=True)
