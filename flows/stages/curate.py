"""DVC stage `curate`: score every pool pair and keep a subset for SFT → `data/curated/` (scores.csv, selected.json).

Paper (§3.3 / sana15-method.md §13): SFT data is filtered (CLIP score > 25 and GenEval-toolkit checks). Our stand-in,
scorer `oracle`: the exact GenEval-Shapes evaluator applied to the pool image against *its own caption*:
- the caption is parsed back into GenEval metadata (`prompts.caption_metadata`: the six GenEval templates + our multi_object
  family) and made *completeness-aware*: training captions describe their scene completely, so besides the include
  requirements every named shape gets an exclude at (its count + 1) and every unnamed world shape an exclude at 1
  (GenEval's own exclude rule, as in its counting prompts). This catches wrong and incomplete captions;
- image-quality term = mean detector confidence of the kept detections (Dice fit of the shape template, penalised
  for over-blur; 0 when nothing is detected) — catches blur/noise/colour drift that still passes the logic.
score = correct (0/1) + quality ∈ [0, 2]; kept: score ≥ curate.min_score (1.0 = "the evaluator says correct"),
best first, at most curate.max_samples (0 = all). The metrics compare the defect mix of kept vs dropped pairs (the
manifest records every pair's injected defect), i.e. how well curation removes corrupted pairs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from flows.stage_runner import main
from flows.stages import _common as C
from sana_core.atomic import atomic_dir
from sana_core.geneval.dataset import load_images, load_manifest
from sana_core.geneval.prompts import caption_metadata, caption_phrases
from sana_core.geneval.score import score_image

SCORERS = ("oracle",)


def score_pool(images, manifest: pd.DataFrame, world) -> pd.DataFrame:
    """One row per pair: index, tag, defect, correct, quality, score, reason."""
    table = caption_phrases(world)
    rows = []
    for i, r in enumerate(manifest.to_dict("records")):
        meta = caption_metadata(r["caption"], r["tag"], world, table)
        ok, reason, det = score_image(images[i], meta, world)
        confs = [b[4] for boxes in det.values() for b in boxes]
        q = float(sum(confs) / len(confs)) if confs else 0.0
        rows.append({"index": int(r["index"]), "tag": r["tag"], "defect": r["defect"], "correct": bool(ok), "quality": q,
                     "score": float(ok) + q, "reason": reason.replace("\n", "; ")})
    return pd.DataFrame(rows)


def curate(params: dict, root: Path) -> dict:
    cfg = params["curate"]
    if cfg["scorer"] not in SCORERS:
        raise ValueError(f"curate.scorer: {cfg['scorer']!r} not available; choose from {list(SCORERS)}")
    if cfg["max_samples"] < 0:
        raise ValueError(f"curate.max_samples: {cfg['max_samples']} must be >= 0 (0 = no cap)")
    shapes = C.need(root, C.SHAPES, "training pool, stage data")
    man, images = load_manifest(shapes), load_images(shapes)
    df = score_pool(images, man, C.world(params))
    passed = df[df["score"] >= cfg["min_score"]].sort_values(["score", "index"], ascending=[False, True])
    if cfg["max_samples"]:
        passed = passed.head(cfg["max_samples"])
    keep = sorted(passed["index"].tolist())
    if not keep:
        raise ValueError(f"curate: no pair reaches curate.min_score={cfg['min_score']}")
    df["kept"] = df["index"].isin(keep)

    def write(tmp: Path):
        df.to_csv(tmp / "scores.csv", index=False, lineterminator="\n")
        (tmp / "selected.json").write_text(json.dumps({"indices": keep, "scorer": cfg["scorer"],
                                                       "min_score": cfg["min_score"]}) + "\n")

    atomic_dir(Path(root) / C.CURATED, write)
    m = {"n_pool": len(df), "n_kept": len(keep), "kept_fraction": len(keep) / len(df),
         "n_correct": int(df["correct"].sum()), "mean_quality_kept": float(df.loc[df.kept, "quality"].mean())}
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
