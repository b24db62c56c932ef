"""DVC stage `finetune@<depth>`: heal the pruned model (paper: 100 steps, same loss) on the same data as the grown
model's last stage (sft's curated subset: `_common.curated_rows` of data/cache, streamed) with `{**train, **finetune, seed}` → `models/finetune_<depth>/`; metrics
include the quick GenEval-Shapes check of the pruned model before and of the healed model after."""
from __future__ import annotations

import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C


def finetune(params: dict, root: Path, item: str | None = None) -> dict:
    t = C.target_item(item, params)
    src = C.model_path("prune", str(t))
    s = C.load_model(root, src)
    data = C.train_data(params, root, rows=C.curated_rows(root), text=s.text)
    before = C.quick_geneval(s, root, params)
    m = C.train_and_save(s.transformer, data, params, "finetune", root, C.model_path("finetune", str(t)), s.codec,
                         s.text, item=str(t), quick_eval=True, meta={"source": str(src)})
    m["geneval_quick_before"] = before
    return m


if __name__ == "__main__":
    main("finetune", finetune)
    sys.exit(0)
