"""DVC stage `grow`: grow the base model in depth (sana_core.growth.grow; SANA-1.5 §2.2, sana15-method.md §8) →
`models/grow/` (stock SanaPipeline folder + `growth_layout.json`: per new block, the source block or "new").

params `grow`: target_depth, strategy (partial_preservation | cyclic | block_replication), drop_last (only meaningful
for partial_preservation; 0 is passed for the others), seed. For partial_preservation the metrics record the measured
max |output difference| between the grown model and the base truncated to its first N − drop_last blocks (0 by
construction: new blocks are exact identities at init)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from flows.stage_runner import main
from flows.stages import _common as C
from sana_core.growth import grow as grow_model, growth_args
from sana_core.surgery_io import with_blocks

SOURCE, OUT = C.model_path("pretrain_base"), C.model_path("grow")


@torch.no_grad()
def _max_diff_vs_truncated(base, grown, keep: int, seed: int = 0) -> float:
    trunc = with_blocks(base, [base.transformer_blocks[i] for i in range(keep)])
    cfg = base.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    emb = torch.randn(2, 8, cfg.caption_channels, generator=g)
    t = torch.tensor([300.0, 800.0])
    a = trunc.eval()(x, encoder_hidden_states=emb, timestep=t, return_dict=False)[0]
    b = grown.eval()(x, encoder_hidden_states=emb, timestep=t, return_dict=False)[0]
    return float((a - b).abs().max())


def grow(params: dict, root: Path) -> dict:
    cfg = params["grow"]
    sampler = C.load_model(root, SOURCE)
    base = sampler.transformer
    args = growth_args(cfg)
    pp, drop = args["strategy"] == "partial_preservation", args["drop_last"]
    grown, layout = grow_model(base, **args, seed=cfg["seed"])
    n = len(base.transformer_blocks)
    m = {"source_depth": n, "depth": len(grown.transformer_blocks), "strategy": cfg["strategy"], "drop_last": drop,
         "n_new_blocks": sum(1 for s in layout if s == "new"), "n_copied_blocks": sum(1 for s in layout if s != "new"),
         "params": sum(p.numel() for p in grown.parameters())}
    if pp:
        m["init_max_abs_diff_vs_truncated"] = _max_diff_vs_truncated(base, grown, n - drop)
    info = {"source": str(SOURCE), "source_depth": n, "target_depth": cfg["target_depth"],
            "strategy": cfg["strategy"], "drop_last": drop, "seed": cfg["seed"], "layout": layout}
    C.save_model_dir(root, OUT, grown, sampler.codec, sampler.text, params, meta={"stage": "grow", "growth": info},
                     extra_json={"growth_layout.json": info})
    m["model_dir"] = str(OUT)
    return m


if __name__ == "__main__":
    main("grow", grow)
    sys.exit(0)
