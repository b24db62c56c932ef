"""DVC stage `sft`: supervised fine-tuning of the grown, pre-trained model (models/pretrain_grown) on the curated
subset (data/curated/selected.json "rows" of data/cache, streamed by `_common.train_data`) at the lower SFT learning rate (`{**train, **sft, seed}`;
paper 2e-5) → `models/sft/`. (The source is fixed: a `sft.source` key cannot live in the `sft` section, whose keys
must all be sana_core.train keys — tests/test_params.py.)"""
from __future__ import annotations

import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C

SOURCE, OUT = C.model_path("pretrain_grown"), C.model_path("sft")


def sft(params: dict, root: Path) -> dict:
    s = C.load_model(root, SOURCE)
    data = C.train_data(params, root, rows=C.curated_rows(root), text=s.text)
    return C.train_and_save(s.transformer, data, params, "sft", root, OUT, s.codec, s.text, quick_eval=True,
                            meta={"source": str(SOURCE), "data": str(C.CURATED)})


if __name__ == "__main__":
    main("sft", sft)
    sys.exit(0)
