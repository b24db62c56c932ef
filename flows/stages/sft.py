"""DVC stage `sft`: supervised fine-tuning of the grown, pre-trained model (models/pretrain_grown) at the lower SFT
learning rate (`{**train, **sft, seed}`; paper 2e-5) → `models/sft/`, on the rows of data/cache that `sft.subset`
names (`_common.sft_rows`, streamed by `_common.train_data`): `curated` = the curated subset
(data/curated/selected.json "rows"); `random` = the curation control, a seeded random sample of the training pool
of the same size (`dvc exp run -S sft.subset=random`). The metrics record which subset and its size."""
from __future__ import annotations

import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C

SOURCE, OUT = C.model_path("pretrain_grown"), C.model_path("sft")


def sft(params: dict, root: Path) -> dict:
    rows, subset = C.sft_rows(params, root)
    s = C.load_model(root, SOURCE)
    data = C.train_data(params, root, rows=rows, text=s.text)
    where = C.CURATED if subset["subset"] == "curated" else C.CACHE
    m = C.train_and_save(s.transformer, data, params, "sft", root, OUT, s.codec, s.text, quick_eval=True,
                         meta={"source": str(SOURCE), "data": str(where), **subset})
    return {**m, **subset}


if __name__ == "__main__":
    main("sft", sft)
    sys.exit(0)
