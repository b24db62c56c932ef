"""DVC stage `codec`: train the tiny AutoencoderDC (sana_core.latents.train_codec) on the pool's clean images →
`models/codec/` (save_pretrained; scaling factor calibrated to 1/std of the latents) + held-out PSNR and the
exact evaluator's score of codec round-trips of the eval_iid ground truth (`roundtrip_geneval`: the ceiling of
every model trained on this latent).

params: `codec` (profile, path, seed — the keys of build_codec) and `codec_train` (steps, batch_size, lr, num_threads:
the CPU thread count of the training, on which its gradients depend; metrics record it and the CPU's ISA). The images
come from the configured source (sana_core.data, as stage encode reads it), all of them in memory: a tiny-world
codec; real datasets use a pre-trained codec (`codec.path`).
Paper profile (`codec.path` set): SANA uses a pre-trained DC-AE, so nothing is trained: the local folder is loaded
(validated: an AutoencoderDC whose factor fits the image size) and the stage writes only a small `models/codec/
codec.json` pointing at it; downstream stages load `codec.path` directly (flows/stages/_common.codec).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from flows.stage_runner import callback, main
from flows.stages import _common as C
from sana_core.atomic import atomic_dir
from sana_core.data.images import BadInput, decode_image
from sana_core.latents import build_codec, load_codec, train_codec
from sana_core.train import cpu_capability

OUT = C.CODEC


CLEAN = ("none", "wrong_caption", "incomplete_caption")   # caption defects leave the image clean


def training_images(source, size: int) -> np.ndarray:
    """uint8 [N,S,S,3]: the source's decodable images in dataset order, without the shapes world's pixel defects
    (records whose `defect` is blur / noise / color_jitter); unreadable images are skipped here (stage encode
    counts them)."""
    out = []
    for rec in source:
        if rec.bad or rec.meta.get("defect", "none") not in CLEAN:
            continue
        try:
            out.append(decode_image(rec.image, size))
        except BadInput:
            continue
    if not out:
        raise ValueError("data.path: no readable image to train the codec on")
    return np.stack(out)


def codec(params: dict, root: Path) -> dict:
    cfg, tcfg = params["codec"], params["codec_train"]
    size = int(params["data"]["image_size"])
    if cfg.get("path"):
        c = load_codec(cfg["path"])
        c.latent_shape(size)  # factor must divide the image size
        info = {**c.info(), "path": str(cfg["path"]), "trained": False}
        atomic_dir(Path(root) / OUT, lambda tmp: (tmp / "codec.json").write_text(json.dumps(info, indent=1)))
        return {"trained": 0, "params": info["params"], "scaling_factor": info["scaling_factor"]}
    images = training_images(C.source(params, root), size)
    model = build_codec({k: v for k, v in cfg.items() if k != "path"})
    model.latent_shape(size)
    cb = callback("codec_")
    trained, rep = train_codec(images, model, steps=tcfg["steps"], batch_size=tcfg["batch_size"], lr=tcfg["lr"],
                               seed=cfg["seed"], num_threads=tcfg["num_threads"],
                               callback=lambda s, loss, lr: cb(s, loss=loss, lr=lr))
    rt = C.codec_roundtrip_geneval(trained, root, params)  # the ceiling any DiT on this latent can reach
    trained.save(Path(root) / OUT)
    return {"trained": 1, "roundtrip_geneval": rt, "psnr": rep["psnr"], "psnr_init": rep["psnr_init"], "steps": rep["steps"],
            "seconds": rep["seconds"], "scaling_factor": rep["scaling_factor"], "n_train": rep["n_train"],
            "n_val": rep["n_val"], "params": trained.info()["params"], "num_threads": rep["num_threads"],
            "cpu_capability": cpu_capability()}


if __name__ == "__main__":
    main("codec", codec)
    sys.exit(0)
