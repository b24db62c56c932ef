"""DVC stage `pretrain_grown`: continue pre-training the grown model (models/grow) on the whole pool (`_common.train_data`) with
`{**train, **pretrain_grown, seed}` → `models/pretrain_grown/`. A NaN/inf loss raises train.NonFiniteLossError and
no model folder is written (the paper reports NaNs for the replication growth strategies, Fig. 7)."""
from __future__ import annotations

import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C

SOURCE, OUT = C.model_path("grow"), C.model_path("pretrain_grown")


def pretrain_grown(params: dict, root: Path) -> dict:
    s = C.load_model(root, SOURCE)
    data = C.train_data(params, root, text=s.text)
    return C.train_and_save(s.transformer, data, params, "pretrain_grown", root, OUT, s.codec, s.text,
                            quick_eval=True, meta={"source": str(SOURCE)})


if __name__ == "__main__":
    main("pretrain_grown", pretrain_grown)
    sys.exit(0)
