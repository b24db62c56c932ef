"""DVC stage `codec`: train the tiny AutoencoderDC (sana_core.latents.train_codec) on the pool's clean images →
`models/codec/` (save_pretrained; scaling factor calibrated to 1/std of the latents) + held-out PSNR and the
exact evaluator's score of codec round-trips of the eval_iid ground truth (`roundtrip_geneval`: the ceiling of
every model trained on this latent).

params: `codec` (profile, path, seed — the keys of build_codec) and `codec_train` (steps, batch_size, lr).
Paper profile (`codec.path` set): SANA uses a pre-trained DC-AE, so nothing is trained: the local folder is loaded
(validated: an AutoencoderDC whose factor fits the image size) and the stage writes only a small `models/codec/
codec.json` pointing at it; downstream stages load `codec.path` directly (flows/stages/_common.codec).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from flows.stage_runner import callback, main
from flows.stages import _common as C
from sana_core.atomic import atomic_dir
from sana_core.geneval.dataset import load_images, load_manifest
from sana_core.latents import build_codec, load_codec, train_codec

OUT = C.CODEC


def codec(params: dict, root: Path) -> dict:
    cfg, tcfg = params["codec"], params["codec_train"]
    size = int(params["data"]["image_size"])
    if cfg.get("path"):
        c = load_codec(cfg["path"])
        c.latent_shape(size)  # factor must divide the image size
        info = {**c.info(), "path": str(cfg["path"]), "trained": False}
        atomic_dir(Path(root) / OUT, lambda tmp: (tmp / "codec.json").write_text(json.dumps(info, indent=1)))
        return {"trained": 0, "params": info["params"], "scaling_factor": info["scaling_factor"]}
    shapes = C.need(root, C.SHAPES, "training pool, stage data")
    man = load_manifest(shapes)
    clean = man.index[man["defect"].isin(["none", "wrong_caption", "incomplete_caption"])].to_numpy()
    images = load_images(shapes)[clean]  # caption defects leave the image clean; pixel defects are left out
    model = build_codec({k: v for k, v in cfg.items() if k != "path"})
    model.latent_shape(size)
    cb = callback("codec_")
    trained, rep = train_codec(images, model, steps=tcfg["steps"], batch_size=tcfg["batch_size"], lr=tcfg["lr"],
                               seed=cfg["seed"], callback=lambda s, loss, lr: cb(s, loss=loss, lr=lr))
    rt = C.codec_roundtrip_geneval(trained, root, params)  # the ceiling any DiT on this latent can reach
    trained.save(Path(root) / OUT)
    return {"trained": 1, "roundtrip_geneval": rt, "psnr": rep["psnr"], "psnr_init": rep["psnr_init"], "steps": rep["steps"],
            "seconds": rep["seconds"], "scaling_factor": rep["scaling_factor"], "n_train": rep["n_train"],
            "n_val": rep["n_val"], "params": trained.info()["params"]}


if __name__ == "__main__":
    main("codec", codec)
    sys.exit(0)
