"""DVC stage `pretrain_base`: pre-train the base SanaTransformer2DModel (params `model`) on the whole noisy pool
(data/cache) with the flow-matching loop (sana_core.train; `{**train, **pretrain_base, seed}`) →
`models/pretrain_base/` (stock SanaPipeline folder + samples.png) + metrics: final loss, steps, samples, training
FLOPs, wall time, and a quick GenEval-Shapes check (N=1, `quick_eval`; none for a brought dataset). The data is
streamed from the per-shard encoded dataset (`_common.train_data`: ShardStream; a brought dataset minus its
held-out calibration rows)."""
from __future__ import annotations

import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C

OUT = C.model_path("pretrain_base")


def pretrain_base(params: dict, root: Path) -> dict:
    codec_, text = C.codec(params, root), C.text_encoder(params)
    data = C.train_data(params, root, text=text)
    model = C.new_transformer(params, codec_)
    return C.train_and_save(model, data, params, "pretrain_base", root, OUT, codec_, text, quick_eval=True)


if __name__ == "__main__":
    main("pretrain_base", pretrain_base)
    sys.exit(0)
