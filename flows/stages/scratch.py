"""DVC stage `scratch@<depth>`: the same depth trained from scratch (SANA-1.0-style baseline of Table 3) with the
training compute of the pruned model's whole lineage: budget = Σ training FLOPs in metrics/{pretrain_base,
pretrain_grown, sft, finetune_<depth>}.json (as counted by sana_core.train); steps = prune.scratch_steps_for_compute(
budget, 3 × forward FLOPs per sample of this architecture, scratch.batch_size) — so `scratch.steps` is not used.
Trained on the whole pool (data/cache, `_common.train_data`) like the base → `models/scratch_<depth>/`."""
from __future__ import annotations

import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C
from sana_core.flops import forward_flops_per_sample, train_flops
from sana_core.prune import scratch_steps_for_compute

LINEAGE = ("pretrain_base", "pretrain_grown", "sft")


def lineage_flops(root: Path, t: int) -> dict:
    out = {s: float(C.read_metrics(root, s)["flops"]) for s in LINEAGE}
    out[f"finetune_{t}"] = float(C.read_metrics(root, f"finetune_{t}")["flops"])
    return out


def scratch(params: dict, root: Path, item: str | None = None) -> dict:
    t = C.target_item(item, params)
    parts = lineage_flops(root, t)
    budget = sum(parts.values())
    codec_, text = C.codec(params, root), C.text_encoder(params)
    data = C.train_data(params, root, text=text)
    model = C.new_transformer(params, codec_, num_layers=t)
    per_sample = train_flops(forward_flops_per_sample(model, data.latent_shape, data.text_shape[0]), 1)
    bs = params["scratch"]["batch_size"]
    steps = scratch_steps_for_compute(budget, per_sample, bs)
    if steps < 1:
        raise ValueError(f"scratch: lineage budget {budget:.3g} FLOPs is less than one step ({per_sample * bs:.3g})")
    m = C.train_and_save(model, data, params, "scratch", root, C.model_path("scratch", str(t)), codec_, text,
                         item=str(t), quick_eval=True, cfg_over={"steps": steps})
    m.update({"flops_budget": budget, "flops_lineage": parts, "flops_per_step": per_sample * bs,
              "flops_vs_budget": m["flops"] / budget})
    return m


if __name__ == "__main__":
    main("scratch", scratch)
    sys.exit(0)
