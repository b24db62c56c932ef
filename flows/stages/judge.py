"""DVC stage `judge`: the best-of-N judge, trained the way SANA-1.5 trained its verifier (sana15-method.md §11).

Paper: NVILA-2B was fine-tuned on yes/no labels that the GenEval toolkit gave to images of the paper's own model.
Here: `models/pretrain_base` (our base model, params `sample`) draws `judge.images_per_prompt` images for each of
`judge.n_prompts` **training-split** prompts (`splits.calibration_prompts`: only allowed combinations, seed `seed`;
any prompt whose text is also an eval prompt of data/shapes is dropped, so the judge never sees an eval prompt), the
exact GenEval-Shapes evaluator (`score_image`) labels each image yes/no, and the tiny judge is trained on them
(`train_tiny_judge`). A `judge.val_frac`
share of the prompts (seeded, by prompt) is held out and the judge is measured there: accuracy, balanced accuracy
(mean of TPR and TNR: a weak base model's images are mostly "no", so plain accuracy is flattered by the majority
class — `val_majority_acc` is that baseline), AUC, label balance, and the within-prompt AUC (mean over held-out
prompts with both classes: best-of-N ranks one prompt's candidates, so this — not the pooled AUC — says whether
the judge can pick).

Tiny judge, `judge.renders_per_prompt` > 0: the training prompts (not the held-out ones) also get that many renders
of themselves and of near misses (`judges/contrast.py`, through the base model's codec, labelled by the evaluator),
and `judge.dense` > 0 trains the image tower on those renders' known scenes too (`train_tiny_judge`, docs/results.md
§9). `judge.degraded`: the share of the near-miss renders that are the prompt's own scene drawn badly (the base
model's failures: an object too small, a merged overlapping copy, one copy too many; §9.1); `judge.centres`: + the
count-aware centre map (`TinyJudgeConfig.centres`). Validation stays on the base model's own images of the held-out prompts.
`judge.steps` = optimisation steps (→ epochs = ceil(steps / batches per epoch); train_tiny_judge counts epochs).
`judge.name` ≠ tiny (vlm/clip from `judge.path`, oracle): nothing is trained; the same labelled set measures it.
A brought dataset (`data.source` ≠ shapes, flows.params.check_brought_eval): the tiny and oracle judges are rejected
before compute (both are the shapes world's exact evaluator); a pretrained judge (clip / vlm / remote at judge.path)
is used as is, and NOT measured here: nothing in this stage can label a real image honestly (the official evaluator
labels GenEval prompts, which the geneval stage keeps for itself). The geneval stage measures it there, on every
candidate it generates (`judge_accuracy`, against the official evaluator). Out: judge.json (`measured: false`) and
an empty training_prompts.jsonl (the judge saw no prompt, so GenEval drops none).
Out: `models/judge/` (tiny: `tiny_judge.safetensors` + `tiny_judge.json`; always `judge.json` = the judge config the
geneval stage builds, + the metrics) and `plots/judge.json` (train/val loss: train_tiny_judge has no per-step
callback, so the curve holds the final point only — see the report).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from flows import params as P
from flows.stage_runner import callback, main
from flows.stages import _common as C
from sana_core.atomic import atomic_dir
from sana_core.geneval.score import score_image
from sana_core.judges import build_judge, judge_class
from sana_core.judges.base import TRAINING_PROMPTS_FILE
from sana_core.judges.contrast import contrast_set
from sana_core.judges.metrics import binary_metrics, within_group_auc

OUT = C.JUDGE_DIR
BASE = Path("models") / "pretrain_base"


def check(jp: dict) -> None:
    if not 0.0 < float(jp["val_frac"]) < 1.0:
        raise ValueError(f"params: judge.val_frac: {jp['val_frac']} not in (0, 1)")
    if int(jp["images_per_prompt"]) < 1 or int(jp["steps"]) < 1 or int(jp["batch_size"]) < 1:
        raise ValueError("params: judge.images_per_prompt, judge.steps and judge.batch_size must be ≥ 1")


def training_prompts(params: dict, root: Path) -> list[dict]:
    outside, reserved = C.judge_prompt_sets(params, root)
    metas = outside + reserved
    if len(metas) < 2:
        raise ValueError(f"judge.n_prompts: only {len(metas)} training prompts outside the eval sets")
    return metas


def labelled_images(params: dict, metas: list[dict], sampler) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """`judge.images_per_prompt` base-model images per prompt (seeds 1000 + j: the eval candidates use geneval.seed
    + j), labelled yes/no by the exact evaluator: (images [P·k, H, W, 3], metadata per image, labels)."""
    seeds = [1000 + j for j in range(int(params["judge"]["images_per_prompt"]))]
    grid = sampler.generate_grid([m["prompt"] for m in metas], seeds)      # [P, k, H, W, 3]
    imgs = grid.reshape(-1, *grid.shape[2:])
    rows = [m for m in metas for _ in seeds]
    world = C.world(params)
    return imgs, rows, np.array([score_image(im, m, world)[0] for im, m in zip(imgs, rows)], bool)


def split_by_prompt(params: dict, metas: list[dict], rows: list[dict]) -> tuple[np.ndarray, np.ndarray, int]:
    """(train, val) image indices: a seeded `judge.val_frac` share of the prompts (≥ 1, ≤ all but one) is held out."""
    order = np.random.default_rng(int(params["seed"])).permutation(len(metas))
    n_val = min(len(metas) - 1, max(1, int(round(float(params["judge"]["val_frac"]) * len(metas)))))
    val_p = {metas[i]["prompt"] for i in order[:n_val]}
    is_val = np.array([m["prompt"] in val_p for m in rows])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val), n_val


def log_loss(labels: np.ndarray, p_yes: np.ndarray) -> float:
    y, p = labels.astype(np.float64), np.clip(p_yes.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def judge(params: dict, root: Path) -> dict:
    jp = params["judge"]
    check(jp)
    name = jp["name"]
    cls = judge_class(name)
    P.check_brought_eval(params)                    # brought dataset: tiny / oracle rejected, before compute
    cfg = C.judge_cfg(params, root)                 # errors (missing path) before compute
    if not C.is_shapes(params):
        return pretrained_as_is(params, root, name, cfg)
    metas = training_prompts(params, root)
    sampler = C.load_model(root, BASE, params)
    sampler.config = sampler._cfg(C.sampling(params))
    imgs, rows, labels = labelled_images(params, metas, sampler)
    tr, va, n_val = split_by_prompt(params, metas, rows)

    m: dict = {"judge": name, "n_prompts": len(metas), "images_per_prompt": int(jp["images_per_prompt"]),
               "n_images": int(len(imgs)), "n_train": int(len(tr)), "n_val": int(len(va)), "n_val_prompts": n_val,
               "train_pos_rate": float(labels[tr].mean()), "val_pos_rate": float(labels[va].mean())}
    if cls.trainable:
        X, R, Y = imgs[tr], [rows[i] for i in tr], labels[tr]
        scenes: list = [None] * len(tr)              # model samples: no known scene
        if int(jp["renders_per_prompt"]):            # + renders of the training prompts and their near misses
            ri, rr, rl = contrast_set(list({r["prompt"]: r for r in R}.values()), C.world(params),
                                      int(jp["renders_per_prompt"]), int(params["seed"]),
                                      lambda a: sampler.codec.decode_uint8(sampler.codec.encode_uint8(a)), scenes,
                                      float(jp["degraded"]))
            X, R, Y = np.concatenate([X, ri]), R + rr, np.concatenate([Y, rl])
            m.update(n_renders=int(len(ri)), renders_pos_rate=float(rl.mean()))
        j, tm = cls.fit(X, R, Y, {"steps": jp["steps"], "batch_size": jp["batch_size"], "lr": jp["lr"],
                                  "seed": params["seed"], "dense": float(jp["dense"]),
                                  "centres": bool(jp["centres"])},
                        scenes if float(jp["dense"]) > 0 else None)
        m.update(epochs=tm["epochs"], steps=tm["steps"], train_acc=tm["train_acc"], train_loss=tm["train_loss"],
                 train_seconds=tm["seconds"], n_params=tm["n_params"])
    else:
        j = build_judge(cfg)
    with torch.no_grad():
        p_yes = j.p_yes_each([rows[i]["prompt"] for i in va], imgs[va], [rows[i] for i in va])
    for key, v in binary_metrics(p_yes >= 0.5, labels[va], p_yes).items():
        m[f"val_{key}"] = v
    m["val_within_prompt_auc"], m["val_n_prompts_both_classes"] = within_group_auc(
        p_yes, labels[va], [rows[i]["prompt"] for i in va])
    if cls.trainable:
        m["val_loss"] = log_loss(labels[va], p_yes)
        callback()(m["steps"], loss=m["train_loss"], val_loss=m["val_loss"])
    else:
        callback()(0, loss=float("nan"))
    m["flops_per_image"] = int(j.flops_per_image(int(params["data"]["image_size"])))

    def write(tmp: Path):                           # models/judge, atomically
        if cls.trainable:
            j.save(tmp / "_weights", metrics={x: v for x, v in m.items() if x.startswith("val_")})
            for f in (tmp / "_weights").iterdir():
                f.replace(tmp / f.name)
            (tmp / "_weights").rmdir()
        (tmp / "judge.json").write_text(json.dumps({"config": {**cfg, "path": None if cls.trainable else cfg.get("path")},
                                                    "metrics": C.clean_nan(m)}, indent=1) + "\n")
        (tmp / TRAINING_PROMPTS_FILE).write_text("".join(json.dumps(x) + "\n" for x in metas))

    atomic_dir(Path(root) / OUT, write)
    m["model_dir"] = str(OUT)
    return C.clean_nan(m)


def pretrained_as_is(params: dict, root: Path, name: str, cfg: dict) -> dict:
    """A brought dataset's judge: the pretrained judge of judge.path, unchanged and unmeasured (module docstring)."""
    j = build_judge(cfg)
    m = {"judge": name, "measured": False, "n_prompts": 0,
         "not_measured": f"data.source {params['data']['source']!r}: no exact labels here; measured by stage "
                         f"geneval against the official evaluator (judge_accuracy)",
         "flops_per_image": int(j.flops_per_image(int(params["data"]["image_size"])))}
    callback()(0, loss=float("nan"))

    def write(tmp: Path):
        (tmp / "judge.json").write_text(json.dumps({"config": cfg, "metrics": m}, indent=1) + "\n")
        (tmp / TRAINING_PROMPTS_FILE).write_text("")

    atomic_dir(Path(root) / OUT, write)
    m["model_dir"] = str(OUT)
    return m


if __name__ == "__main__":
    main("judge", judge)
    sys.exit(0)
