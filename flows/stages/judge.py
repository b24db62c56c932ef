"""DVC stage `judge`: the best-of-N judge, trained the way SANA-1.5 trained its verifier (sana15-method.md §11).

Paper: NVILA-2B was fine-tuned on yes/no labels that the GenEval toolkit gave to images of the paper's own model.
Here: `models/pretrain_base` (our base model, params `sample`) draws `judge.images_per_prompt` images for each of
`judge.n_prompts` **training-split** prompts (`splits.calibration_prompts`: only allowed combinations, seed `seed`;
any prompt whose text is also an eval prompt of data/shapes is dropped, so the judge never sees an eval prompt), the
exact GenEval-Shapes evaluator (`score_image`) labels each image yes/no, and the tiny judge is trained on them
(`train_tiny_judge`). A `judge.val_frac`
share of the prompts (seeded, by prompt) is held out and the judge is measured there: accuracy, balanced accuracy
(mean of TPR and TNR: a weak base model's images are mostly "no", so plain accuracy is flattered by the majority
class — `val_majority_acc` is that baseline), AUC, label balance.

`judge.steps` = optimisation steps (→ epochs = ceil(steps / batches per epoch); train_tiny_judge counts epochs).
`judge.name` ≠ tiny (vlm/clip from `judge.path`, oracle): nothing is trained; the same labelled set measures it.
Out: `models/judge/` (tiny: `tiny_judge.safetensors` + `tiny_judge.json`; always `judge.json` = the judge config the
geneval stage builds, + the metrics) and `plots/judge.json` (train/val loss: train_tiny_judge has no per-step
callback, so the curve holds the final point only — see the report).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from flows.stage_runner import callback
from flows.stages import _common as C
from sana_core.atomic import atomic_dir
from sana_core.geneval.score import score_image
from sana_core.judges import build_judge
from sana_core.judges.metrics import binary_metrics
from sana_core.judges.tiny import train_tiny_judge

OUT = C.JUDGE_DIR
BASE = Path("models") / "pretrain_base"


def judge(params: dict, root: Path) -> dict:

    jp = params["judge"]
    if not 0.0 < float(jp["val_frac"]) < 1.0:
        raise ValueError(f"params: judge.val_frac: {jp['val_frac']} not in (0, 1)")
    if int(jp["images_per_prompt"]) < 1 or int(jp["steps"]) < 1 or int(jp["batch_size"]) < 1:
        raise ValueError("params: judge.images_per_prompt, judge.steps and judge.batch_size must be ≥ 1")
    name = jp["name"]
    cfg = C.judge_cfg(params, root)                 # errors (missing path) before compute
    outside, reserved = C.judge_prompt_sets(params, root)
    metas = outside + reserved
    if len(metas) < 2:
        raise ValueError(f"judge.n_prompts: only {len(metas)} training prompts outside the eval sets")
    sampler = C.load_model(root, BASE)
    sampler.config = sampler._cfg(C.sampling(params))
    world = C.world(params)

    # ---- base-model images for training-split prompts, labelled by the exact evaluator
    k = int(jp["images_per_prompt"])
    seeds = [1000 + j for j in range(k)]            # eval candidates use seeds geneval.seed + 0..N-1
    grid = sampler.generate_grid([m["prompt"] for m in metas], seeds)      # [P, k, H, W, 3]
    imgs = grid.reshape(-1, *grid.shape[2:])
    rows = [m for m in metas for _ in seeds]
    labels = np.array([score_image(im, m, world)[0] for im, m in zip(imgs, rows)], bool)

    rng = np.random.default_rng(int(params["seed"]))
    order = rng.permutation(len(metas))
    n_val = min(len(metas) - 1, max(1, int(round(float(jp["val_frac"]) * len(metas)))))
    val_p = {metas[i]["prompt"] for i in order[:n_val]}
    is_val = np.array([m["prompt"] in val_p for m in rows])
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)

    m: dict = {"judge": name, "n_prompts": len(metas), "images_per_prompt": k, "n_images": int(len(imgs)),
               "n_train": int(len(tr)), "n_val": int(len(va)), "n_val_prompts": n_val,
               "train_pos_rate": float(labels[tr].mean()), "val_pos_rate": float(labels[va].mean())}
    if name == "tiny":
        bs = int(jp["batch_size"])
        epochs = max(1, math.ceil(int(jp["steps"]) / math.ceil(len(tr) / bs)))
        j, tm = train_tiny_judge(imgs[tr], [rows[i] for i in tr], labels[tr],
                                 {"epochs": epochs, "batch_size": bs, "lr": float(jp["lr"]), "val_frac": 0.0,
                                  "seed": int(params["seed"]), "threads": 1})
        m.update(epochs=tm["epochs"], steps=tm["epochs"] * math.ceil(len(tr) / bs), train_acc=tm["train_acc"],
                 train_loss=tm["train_loss"], train_seconds=tm["seconds"], n_params=tm["n_params"])
    else:
        j = build_judge(cfg)
    with torch.no_grad():
        if name == "tiny":
            p_yes = torch.sigmoid(j.logits([rows[i]["prompt"] for i in va], imgs[va])).numpy()
        else:
            p_yes = np.concatenate([j.decide(rows[i]["prompt"], imgs[i:i + 1], rows[i])[1].numpy() for i in va])
    pred = p_yes >= 0.5
    for key, v in binary_metrics(pred, labels[va], p_yes).items():
        m[f"val_{key}"] = v
    if name == "tiny":
        yv = labels[va].astype(np.float64)
        pv = np.clip(p_yes.astype(np.float64), 1e-7, 1 - 1e-7)
        m["val_loss"] = float(-(yv * np.log(pv) + (1 - yv) * np.log(1 - pv)).mean())
        callback()(m["steps"], loss=m["train_loss"], val_loss=m["val_loss"])
    else:
        callback()(0, loss=float("nan"))
    m["flops_per_image"] = int(j.flops_per_image(int(params["data"]["image_size"])))

    # ---- write models/judge atomically (temp folder + rename)
    def write(tmp: Path):
        if name == "tiny":
            j.metrics = {**(j.metrics or {}), **{x: v for x, v in m.items() if x.startswith("val_")}}
            j.save(tmp / "_tiny")
            for f in (tmp / "_tiny").iterdir():
                f.replace(tmp / f.name)
            (tmp / "_tiny").rmdir()
        (tmp / "judge.json").write_text(json.dumps({"config": {**cfg, "path": None if name == "tiny" else cfg.get("path")},
                                                    "metrics": C.clean_nan(m)}, indent=1) + "\n")
        (tmp / "training_prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in metas))

    atomic_dir(Path(root) / OUT, write)
    m["model_dir"] = str(OUT)
    return C.clean_nan(m)


if __name__ == "__main__":
    from flows.stage_runner import main
    main("judge", judge)
    sys.exit(0)
