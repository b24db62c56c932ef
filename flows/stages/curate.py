"""DVC stage `curate`: score every encoded pair and keep a subset for SFT → `data/curated/` (scores.csv, selected.json).

Paper (§3.3 / sana15-method.md §13): SFT data is filtered (CLIP score > 25 and GenEval-toolkit checks). The pairs are
read through the data seam — pixels from the configured source (`data.source`, at `data.image_size`), the pool from
the encoded cache (data/cache: its rows, keys, captions and source metadata) — and scored by `curate.scorer`
(sana_core/data/curate.py):
- `oracle` (the GenEval-Shapes world): the exact GenEval-Shapes evaluator against each pair's own caption,
  score = correct (0/1) + detector quality ∈ [0, 2]; needs the world's metadata (tag, defect), so any other source is
  refused before compute. The metrics compare the defect mix of kept vs dropped pairs (the manifest records every
  pair's injected defect), i.e. how well curation removes corrupted pairs.
- `clip` (real data, the paper's filter): 100 × cos(image, caption) of the CLIP model at `curate.clip_path`
  (SANA keeps ≥ 25).
Kept: score ≥ `curate.min_score` (null: no threshold), within the best `curate.top_fraction` (null: no cap), at most
`curate.max_samples` best (0: all). `selected.json`: `rows` = the kept rows of data/cache (what sft/finetune stream;
for shapes, rows = the manifest indices), their source `keys`, the scorer and thresholds. Records the source reports
bad are not scored (counted in the metrics, as in encode).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from flows.stage_runner import main
from flows.stages import _common as C
from sana_core.atomic import atomic_dir
from sana_core.data.clip_score import ClipScorer, score_source, select
from sana_core.data.curate import SCORERS, check_oracle_fits, oracle_scores
from sana_core.data.stream import ShardStream


def curate(params: dict, root: Path) -> dict:
    cfg, d = params["curate"], params["data"]
    if cfg["scorer"] not in SCORERS:
        raise ValueError(f"curate.scorer: {cfg['scorer']!r} not available; choose from {list(SCORERS)}")
    if cfg["scorer"] == "clip" and not cfg.get("clip_path"):
        raise ValueError("curate.clip_path: the clip scorer needs a local CLIP model folder (transformers CLIPModel)")
    stream = ShardStream(C.need(root, C.CACHE, "encoded pool, stage encode"))
    pool = stream.table()
    held = 0
    if not C.is_shapes(params):     # a brought dataset's held-out rows (importance calibration) are never trained on
        keep = ~pool["row"].isin(C.heldout_rows(params, stream.n_total))
        pool, held = pool[keep].reset_index(drop=True), int((~keep).sum())
    name, source = d["source"], C.source(params, root)
    image_size, max_bad = d["image_size"], d.get("max_bad_fraction", 0.01)
    if cfg["scorer"] == "oracle":
        check_oracle_fits(pool.columns, name)                              # before any image is decoded
        df, counts = oracle_scores(source, pool, C.world(params), image_size, max_bad)
        column = "score"
    else:
        scorer = ClipScorer(cfg["clip_path"], cfg.get("device", "auto"), cfg.get("dtype", "auto"),
                            cfg.get("batch_size", 32))
        df, counts = score_source(source, scorer, image_size, max_bad, keys=pool["key"])
        rows = dict(zip(pool["key"], pool["row"]))
        df.insert(0, "row", [int(rows[k]) for k in df["key"]])
        df = df.sort_values("row", kind="stable").reset_index(drop=True)
        column = "clip_score"
    sel = select(df, cfg["min_score"], cfg.get("top_fraction"), cfg["max_samples"], column=column)
    df["kept"] = sel["keep"].to_numpy()
    kept = df[df["kept"]]
    selected = {"rows": [int(r) for r in kept["row"]], "keys": kept["key"].tolist(), "scorer": cfg["scorer"],
                "min_score": cfg["min_score"], "top_fraction": cfg.get("top_fraction"),
                "max_samples": cfg["max_samples"], "n_pool": len(pool)}
    # oracle: today's table (index = manifest index = encoded row for the shapes world); clip: row, key, caption
    table = df.drop(columns=["row", "key"]) if cfg["scorer"] == "oracle" else df

    def write(tmp: Path):
        table.to_csv(tmp / "scores.csv", index=False, lineterminator="\n")
        (tmp / "selected.json").write_text(json.dumps(selected) + "\n")

    atomic_dir(Path(root) / C.CURATED, write)
    m = {"n_pool": len(pool), "n_scored": len(df), "n_kept": len(kept), "kept_fraction": len(kept) / len(df),
         "n_records": counts["n_records"], "n_bad": counts["n_bad"], "n_heldout": held,
         "n_not_encoded": counts["n_not_encoded"] - held,      # the held-out rows are encoded, just not offered
         **{f"n_bad_{r.replace(' ', '_')}": n for r, n in counts["bad_reasons"].items()},
         f"mean_{column}_kept": float(kept[column].mean()), f"mean_{column}_dropped":
             float(df.loc[~df["kept"], column].mean()) if (~df["kept"]).any() else 0.0}
    if cfg["scorer"] == "oracle":
        m.update(_defect_metrics(df))
    return m


def _defect_metrics(df) -> dict:
    """How well curation removes the world's corrupted pairs: kept share per injected defect, defect mix kept vs
    dropped."""
    m = {"n_correct": int(df["correct"].sum()), "mean_quality_kept": float(df.loc[df.kept, "quality"].mean())}
    for d, g in df.groupby("defect"):
        m[f"kept_frac_{d}"] = float(g["kept"].mean())       # share of pairs with defect d that survive
        m[f"n_{d}"] = int(len(g))
    kept, dropped = df[df.kept], df[~df.kept]
    m["defect_frac_kept"] = float((kept["defect"] != "none").mean())
    m["defect_frac_dropped"] = float((dropped["defect"] != "none").mean()) if len(dropped) else 0.0
    m["defect_frac_pool"] = float((df["defect"] != "none").mean())
    return m


if __name__ == "__main__":
    main("curate", curate)
    sys.exit(0)
