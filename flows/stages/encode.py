"""DVC stage `encode`: encode the pool once — captions with the text encoder (MiniLM by default), images with the
codec — into `data/cache/` (sana_core.cache: latents, deduplicated caption embeddings + masks, null embedding), so
no training stage ever runs the encoders. params: `encode` (batch_size), `text`, `codec`."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C
from sana_core.cache import build_cache, load_cache
from sana_core.geneval.dataset import load_images, load_manifest


def encode(params: dict, root: Path) -> dict:
    shapes = C.need(root, C.SHAPES, "training pool, stage data")
    man = load_manifest(shapes)
    images = load_images(shapes)
    if len(man) != len(images):
        raise ValueError(f"{shapes}: manifest has {len(man)} rows but images.npy {len(images)} images")
    codec_, text = C.codec(params, root), C.text_encoder(params)
    out = build_cache(images, man["caption"].tolist(), codec_, text, Path(root) / C.CACHE,
                      batch_size=params["encode"]["batch_size"])
    meta = load_cache(out).meta
    return {"n": meta["n"], "n_unique_captions": meta["n_unique_captions"],
            "latent_numel": int(math.prod(meta["latent_shape"])),
            "text_len": meta["text_shape"][0], "text_dim": meta["text_shape"][1]}


if __name__ == "__main__":
    main("encode", encode)
    sys.exit(0)
