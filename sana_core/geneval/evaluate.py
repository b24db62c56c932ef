"""GenEval's decision logic (geneval.md §4, §6.3), written from the spec for GenEval-Shapes.

What is kept from `evaluation/evaluate_images.py` (djghosh13/geneval @ af4902f) and `summary_scores.py`:
- `relative_position(A, B)`: box centres, per-axis shrink by POSITION_THRESHOLD·(dim_A + dim_B), 1e-3 dead-zone,
  normalisation by the *unshrunk* centre distance, ±0.5 cutoffs; returns a set (diagonals give two relations).
- `evaluate(detected, metadata)`: includes ANDed, excludes ORed; only the top-`count` detections of a class are checked;
  count → colour → position (against the matched group g) per include; `matched_groups` bookkeeping; an exclude fails
  when the class has ≥ `count` detections; reasons newline-joined, same wording as GenEval.
- `summary(df)`: task score = mean of `correct` over all images of the tag; overall = unweighted mean of the task
  scores present (GenEval's `np.mean(task_scores)` averages the tags found in the results file).

Deviation: GenEval classifies colour with CLIP inside `evaluate()`; here every detection already carries the colour of
its component (the rule-based detector unmixes colours), so the colour check reads `det.color`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..atomic import write_text_atomic

from .world import COLORS

TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
POSITION_THRESHOLD = 0.1     # margin per axis, × (dim_A + dim_B)
POSITION_CUTOFF = 0.5        # |normalised shrunk offset| beyond which a direction holds
POSITION_DEADZONE = 1e-3     # both shrunk offsets below this → no relation
MAX_OBJECTS = 16             # kept detections per class (detection thresholds live in `detect`, calibrated)


def _box(obj: Any) -> np.ndarray:
    """[x1, y1, x2, y2] of a detection (anything with `.box`) or of a box row (extra entries, e.g. score, ignored)."""
    b = getattr(obj, "box", obj)
    b = np.asarray(b, dtype=np.float64).ravel()
    if b.size < 4:
        raise ValueError(f"box needs 4 numbers [x1, y1, x2, y2], got {b.tolist()}")
    return b[:4]


def relative_position(a: Any, b: Any) -> set[str]:
    """Relations of A relative to B ("left of", "right of", "above", "below"; y grows downwards)."""
    ba, bb = _box(a).reshape(2, 2), _box(b).reshape(2, 2)
    offset = ba.mean(0) - bb.mean(0)                         # centre_A − centre_B, (x, y)
    dims = np.abs(ba[1] - ba[0]) + np.abs(bb[1] - bb[0])     # (w_A + w_B, h_A + h_B)
    shrunk = np.sign(offset) * np.maximum(np.abs(offset) - POSITION_THRESHOLD * dims, 0.0)
    if np.all(np.abs(shrunk) < POSITION_DEADZONE):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)
    rels = set()
    if dx < -POSITION_CUTOFF:
        rels.add("left of")
    if dx > POSITION_CUTOFF:
        rels.add("right of")
    if dy < -POSITION_CUTOFF:
        rels.add("above")
    if dy > POSITION_CUTOFF:
        rels.add("below")
    return rels


def _color(det: Any) -> str:
    c = det.get("color") if isinstance(det, Mapping) else getattr(det, "color", None)
    if c is None:
        raise ValueError("a colour requirement needs detections that carry a colour (`.color`)")
    return c


def evaluate(detected: Mapping[str, Sequence[Any]], metadata: Mapping[str, Any]) -> tuple[bool, str]:
    """GenEval's `evaluate()`: `detected` maps class → detections sorted by confidence (descending), already
    thresholded and capped; each detection has `.box` (and `.color` where colour is required)."""
    correct = True
    reasons: list[str] = []
    matched_groups: list[list[Any] | None] = []
    for req in metadata.get("include", []):
        cls, count = req["class"], int(req["count"])
        found = list(detected.get(cls, []))[:count]          # only the `count` most confident are checked
        matched = True
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = [_color(d) for d in found]
                want = req["color"]
                if colors.count(want) < count:
                    correct = matched = False
                    reasons.append(f"expected {want} {cls}>={count}, found {colors.count(want)} {want}; and "
                                   + ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors))
            if "position" in req and matched:
                rel, group = req["position"]
                targets = matched_groups[int(group)] if int(group) < len(matched_groups) else None
                if targets is None:
                    correct = matched = False
                    reasons.append(f"no target for {cls} to be {rel}")
                else:
                    for obj in found:
                        for tgt in targets:
                            true_rels = relative_position(obj, tgt)
                            if rel not in true_rels:
                                correct = matched = False
                                reasons.append(f"expected {cls} {rel} target, found "
                                               f"{' and '.join(sorted(true_rels))} target")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        cls, count = req["class"], int(req["count"])
        n = len(detected.get(cls, []))
        if n >= count:
            correct = False
            reasons.append(f"expected {cls}<{count}, found {n}")
    return correct, "\n".join(reasons)


def group_by_class(dets: Iterable[Any], threshold: float, max_objects: int = MAX_OBJECTS) -> dict[str, list[Any]]:
    """GenEval's per-class filtering: sort by confidence, keep conf strictly > threshold, keep the first
    `max_objects`; empty classes dropped. NMS is off (GenEval's default IoU 1.0; our components are disjoint)."""
    out: dict[str, list[Any]] = {}
    for d in sorted(dets, key=lambda d: -d.conf):
        if d.conf > threshold and len(out.setdefault(d.shape, [])) < max_objects:
            out[d.shape].append(d)
    return {k: v for k, v in out.items() if v}


def summary(df) -> dict[str, Any]:
    """`summary_scores.py`: per-tag mean of `correct` over images; overall = unweighted mean of the task scores of
    the tags present (a task absent from `df` is reported as None and left out of the mean)."""
    if len(df) == 0:
        raise ValueError("summary: no results (empty results table)")
    for col in ("tag", "correct"):
        if col not in df.columns:
            raise ValueError(f"summary: results table has no '{col}' column")
    per_tag = df.groupby("tag", sort=False)["correct"].mean()
    unknown = sorted(set(per_tag.index) - set(TASKS))
    if unknown:
        raise ValueError(f"summary: unknown tag(s) {unknown}; expected {list(TASKS)}")
    out: dict[str, Any] = {"overall": float(np.mean(per_tag.values))}
    for t in TASKS:
        out[t] = float(per_tag[t]) if t in per_tag.index else None
    out["n_images"] = int(len(df))
    return out


RESULT_COLUMNS = ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]


def write_results(rows: list[dict], folder, out_results=None, out_summary=None) -> tuple[pd.DataFrame, dict]:
    """Every evaluator's one writer: the rows (one per image, GenEval's `results.jsonl` columns) as `results.jsonl`
    and their `summary` as `summary.json` (in `folder` unless paths are given), both written atomically, so GenEval's
    own summary_scores.py reads any of our evaluators' output unchanged. Returns (results table, summary)."""
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    summ = summary(df)
    folder = Path(folder)
    write_text_atomic(Path(out_results) if out_results else folder / "results.jsonl",
                      df.to_json(orient="records", lines=True))
    write_text_atomic(Path(out_summary) if out_summary else folder / "summary.json", json.dumps(summ, indent=2) + "\n")
    return df, summ


def task_counts(df) -> dict[str, int]:
    """Number of images per task (for the printed table)."""
    counts = df.groupby("tag", sort=False).size()
    return {t: int(counts.get(t, 0)) for t in TASKS}
