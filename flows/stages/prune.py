"""DVC stage `prune@<depth>`: prune `models/<importance.source>` to `depth` blocks by block importance
(sana_core.prune.prune: keep the most important blocks, in their original order) → `models/prune_<depth>/`
(stock SanaPipeline folder + `pruned.json`: kept block indices and their importance)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C
from sana_core.prune import prune as prune_model


def prune(params: dict, root: Path, item: str | None = None) -> dict:
    t = C.target_item(item, params)
    src = C.model_path(params["importance"]["source"])
    imp = json.loads(C.need(root, Path("importance") / "importance.json", "stage importance").read_text())
    sampler = C.load_model(root, src)
    if imp.get("source") != params["importance"]["source"] or imp["n_blocks"] != len(sampler.transformer.transformer_blocks):
        raise ValueError(f"importance/importance.json was measured on {imp.get('source')!r} ({imp['n_blocks']} blocks), "
                         f"not on {src}")
    pruned, kept = prune_model(sampler.transformer, imp, t)
    info = {"source": str(src), "source_depth": imp["n_blocks"], "depth": t, "kept": kept,
            "kept_importance": [imp["bi"][i] for i in kept],
            "dropped": [i for i in range(imp["n_blocks"]) if i not in kept]}
    out = C.model_path("prune", str(t))
    C.save_model_dir(root, out, pruned, sampler.codec, sampler.text, params, meta={"stage": "prune", "pruning": info},
                     extra_json={"pruned.json": info})
    return {"depth": t, "source_depth": imp["n_blocks"], "kept": kept, "n_dropped": len(info["dropped"]),
            "params": sum(p.numel() for p in pruned.parameters()), "model_dir": str(out)}


if __name__ == "__main__":
    main("prune", prune)
    sys.exit(0)
