"""Curation: score every usable pair of a source, then keep a subset (the paper's SFT filter, §3.3).

Two scorers, one reading path (`usable_pairs`: the source's records decoded at `image_size`, bad ones skipped and
counted as in encoding, records outside the encoded pool counted apart), one selection (`clip_score.select`):
- `clip` (real data): 100 × cos(image, caption) of a local CLIP model — `clip_score.ClipScorer`, `score_source`.
- `oracle` (the GenEval-Shapes world): the exact GenEval-Shapes evaluator applied to each pool image against *its
  own caption* (`score_pool`):
  - the caption is parsed back into GenEval metadata (`prompts.caption_metadata`: the six GenEval templates + our
    multi_object family) and made *completeness-aware*: training captions describe their scene completely, so
    besides the include requirements every named shape gets an exclude at (its count + 1) and every unnamed world
    shape an exclude at 1 (GenEval's own exclude rule, as in its counting prompts). This catches wrong and
    incomplete captions;
  - image-quality term = mean detector confidence of the kept detections (Dice fit of the shape template, penalised
    for over-blur; 0 when nothing is detected) — catches blur/noise/colour drift that still passes the logic.
  score = correct (0/1) + quality ∈ [0, 2]. It needs the world's metadata of each pair (`ORACLE_COLUMNS`: the
  shapes source's manifest columns); `oracle_scores` refuses a source without them before decoding anything.
"""
from __future__ import annotations

from itertools import islice

import pandas as pd

from .images import BadInput, BadLog, check_caption, decode_image

SCORERS = ("oracle", "clip")
ORACLE_COLUMNS = ("index", "tag", "defect")     # per-pair metadata the oracle reads (besides the caption)


def usable_pairs(source, image_size: int, bad: BadLog, keys=None, counts: dict | None = None, chunk: int = 256):
    """Chunks [(record, caption, uint8 image)] of the source's usable records, in source order. Unusable records
    (the source says bad, missing caption, unreadable image) are counted in `bad`; with `keys` (the encoded pool's
    keys), usable records outside it are skipped and counted in `counts["n_not_encoded"]` (e.g. a caption the text
    encoder refused at encode time)."""
    counts = {} if counts is None else counts
    keys = None if keys is None else set(keys)
    counts["n_not_encoded"] = 0
    records = iter(source)
    while batch := list(islice(records, chunk)):
        out = []
        for rec in batch:
            try:
                if rec.bad:
                    raise BadInput(rec.bad)
                cap = check_caption(rec.caption)
                img = decode_image(rec.image, image_size)
            except BadInput as e:
                bad.add(rec.origin, str(e))
                continue
            bad.ok()
            if keys is not None and rec.key not in keys:
                counts["n_not_encoded"] += 1
                continue
            out.append((rec, cap, img))
        if out:
            yield out


def score_pool(images, manifest: pd.DataFrame, world) -> pd.DataFrame:
    """Oracle scores of pairs (images[i], manifest row i: caption, tag, index, defect): one row per pair with
    index, tag, defect, correct, quality, score, reason."""
    from ..geneval.prompts import caption_metadata, caption_phrases
    from ..geneval.score import score_image
    table = caption_phrases(world)
    rows = []
    for i, r in enumerate(manifest.to_dict("records")):
        meta = caption_metadata(r["caption"], r["tag"], world, table)
        ok, reason, det = score_image(images[i], meta, world)
        confs = [b[4] for boxes in det.values() for b in boxes]
        q = float(sum(confs) / len(confs)) if confs else 0.0
        rows.append({"index": int(r["index"]), "tag": r["tag"], "defect": r["defect"], "correct": bool(ok), "quality": q,
                     "score": float(ok) + q, "reason": reason.replace("\n", "; ")})
    return pd.DataFrame(rows, columns=["index", "tag", "defect", "correct", "quality", "score", "reason"])


def check_oracle_fits(columns, source_name: str) -> None:
    """ValueError naming curate.scorer when the pairs' metadata lacks the GenEval-Shapes world's columns."""
    missing = [c for c in ORACLE_COLUMNS if c not in set(columns)]
    if missing:
        raise ValueError(f"curate.scorer: 'oracle' scores pairs of the GenEval-Shapes world and needs their metadata "
                         f"{list(ORACLE_COLUMNS)}; data.source {source_name!r} has no {missing} — use "
                         f"curate.scorer: clip for real data")


def oracle_scores(source, pool: pd.DataFrame, world, image_size: int, max_bad_fraction: float = 0.01,
                  chunk: int = 256) -> tuple[pd.DataFrame, dict]:
    """(oracle table of the encoded pool's pairs: `score_pool`'s columns + row, key — in encoded-row order; counts).
    `pool`: the encoded rows (`ShardStream.table()`: row, key, caption + the source's metadata); pixels come from
    `source`, decoded at `image_size` like the encoded latents."""
    check_oracle_fits(pool.columns, getattr(source, "kind", type(source).__name__))
    by_key = pool.set_index("key")
    bad, skipped, parts = BadLog(max_bad_fraction), {}, []
    for pairs in usable_pairs(source, image_size, bad, pool["key"], skipped, chunk):
        ks = [rec.key for rec, _, _ in pairs]
        man = by_key.loc[ks, ["caption", *ORACLE_COLUMNS]]
        part = score_pool([img for _, _, img in pairs], man, world)
        part.insert(0, "key", ks)
        part.insert(0, "row", by_key.loc[ks, "row"].to_numpy())
        parts.append(part)
    bad.check()
    if not parts:
        raise ValueError(f"data.path: the dataset is empty — no usable image-caption pair among {bad.n_seen} records")
    out = pd.concat(parts, ignore_index=True).sort_values("row", kind="stable").reset_index(drop=True)
    return out, {**bad.counts(), **skipped}
