"""DVC stage `encode`: the configured source (`data.source`; shapes = the world stage data wrote) encoded once —
images with the codec, captions with the text encoder (MiniLM by default) — into per-shard latents + text features
in `data/cache/` (sana_core.data.encode.encode_dataset: `encode.shard_size` records a shard, `encode.latent_dtype`,
`encode.text` cache | online, bad records skipped and counted up to `data.max_bad_fraction`), so no training stage
runs the codec (nor, with text: cache, the text encoder). Resumable at shard granularity after a kill; a failure
leaves no data/cache. Metrics: the encode stats (n, n_bad, bad reasons, shards, images/s) + the latent/text shapes."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C
from sana_core.data.encode import encode_dataset


def encode(params: dict, root: Path) -> dict:
    e, d = params["encode"], params["data"]
    src = C.source(params, root)
    codec_, text = C.codec(params, root), C.text_encoder(params)
    stats = encode_dataset(src, codec_, text, Path(root) / C.CACHE, image_size=int(d["image_size"]),
                           shard_size=e["shard_size"], batch_size=e["batch_size"], latent_dtype=e["latent_dtype"],
                           text=e["text"], max_bad_fraction=float(d["max_bad_fraction"]))
    s = C.train_data(params, root, text=text)
    return {**stats, "latent_numel": int(math.prod(s.latent_shape)),
            "text_len": s.text_shape[0], "text_dim": s.text_shape[1]}


if __name__ == "__main__":
    main("encode", encode)
    sys.exit(0)
