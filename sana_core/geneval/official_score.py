"""Score a real GenEval-layout folder the way `evaluation/evaluate_images.py` does, with transformers models.

`score_folder(folder, detector, clip, ...)`:
1. Checks, before any model is loaded: the model folders exist (`mask2former.Detector` / `ColorClassifier` name the
   option), the folder is in GenEval layout (digit-named prompt folders with one-object `metadata.jsonl` and
   `samples/<digits>.png`, read through `layout`), every prompt names only GenEval's 80 COCO classes
   (`official.check_classes`), every image opens.
2. Per batch of `batch_size` images: detection (`Detector`), GenEval's per-class filtering for the prompt's tag
   (`official.keep_detections`), CLIP colour of exactly the objects GenEval would ask about
   (`official.colour_queries`, batched over the whole image batch), GenEval's `evaluate()` (`official.judge`).
3. Writes `results.jsonl` in GenEval's own format (pandas records/lines; filename, tag, prompt, correct, reason,
   metadata and details as JSON strings; details = class → kept [x1, y1, x2, y2, score]) — its
   `summary_scores.py` reads it unchanged — and `summary.json` ({overall, six tasks, n_images}, `evaluate.summary`),
   both atomically (temp file + rename). Rows follow prompt-folder then sample index order (GenEval: os.listdir).

Images are read like GenEval (`ImageOps.exif_transpose`, RGB) at their own size; masks and boxes are in original
pixels. The loaded models can be passed in (`detector=Detector(...)`) to score several folders with one load.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageOps

from .evaluate import MAX_OBJECTS, write_results
from .layout import prompt_folders, read_folder_metadata, sample_paths
from .official import NMS_THRESHOLD, check_classes, colour_queries, details, judge, keep_detections, threshold_for

def read_layout(folder) -> list[tuple[dict, list[Path]]]:
    """[(metadata, [png paths])] of a GenEval-layout folder, fully validated (errors name the file)."""
    folder = Path(folder)
    dirs = prompt_folders(folder)                                    # FileNotFoundError if missing
    if not dirs:
        raise ValueError(f"{folder}: not in GenEval layout: no digit-named prompt folders "
                         f"(expected <index:05d>/metadata.jsonl + samples/<digits>.png)")
    items = []
    for d in dirs:
        meta = read_folder_metadata(d)                               # names the metadata file on any problem
        check_classes(meta, str(d / "metadata.jsonl"))
        paths = sample_paths(d)
        for p in paths:
            try:
                with Image.open(p) as im:
                    im.verify()
            except Exception as e:  # PIL raises several types for broken files
                raise ValueError(f"{p}: cannot read image ({e})") from None
        items.append((meta, paths))
    if not any(paths for _, paths in items):
        raise ValueError(f"{folder}: not in GenEval layout: no sample images (samples/<digits>.png) in any prompt "
                         f"folder")
    return items


def load_rgb(path) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def score_images(images: list[Image.Image], metas: list[dict], detector, colour, max_objects: int = MAX_OBJECTS,
                 nms_threshold: float = NMS_THRESHOLD) -> list[tuple[bool, str, dict[str, Any]]]:
    """(correct, reason, details) per image; images[i] was generated for metas[i]."""
    floor = min(threshold_for(m["tag"]) for m in metas)
    raw = detector(images, min_score=floor)
    kept = [keep_detections(r, m["tag"], max_objects=max_objects, nms_threshold=nms_threshold)
            for r, m in zip(raw, metas)]
    from .mask2former import colour_crop
    queries = [(i, cls, d) for i, (k, m) in enumerate(zip(kept, metas)) for cls, d in colour_queries(k, m)]
    if queries:
        names = colour([colour_crop(images[i], d) for i, _, d in queries], [cls for _, cls, _ in queries])
        for (_, _, d), c in zip(queries, names):
            d.color = c
    out = []
    for k, m in zip(kept, metas):
        correct, reason = judge(k, m)
        out.append((bool(correct), reason, details(k)))
    return out


def score_folder(folder, detector=None, clip=None, batch_size: int = 4, device: str = "auto",
                 out_results: str | os.PathLike | None = None, out_summary: str | os.PathLike | None = None,
                 progress: bool = False, scale=None) -> tuple[pd.DataFrame, dict]:
    """Score every image of `folder`; `detector` / `clip` are local model folders (or loaded `Detector` /
    `ColorClassifier`). Writes results.jsonl and summary.json (default: inside `folder`). `scale` = the detector's
    (shortest, longest) resize when it is loaded here (default GenEval's mmdet scale, `mask2former.MMDET_SCALE`)."""
    from .mask2former import ColorClassifier, Detector

    folder = Path(folder)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: must be ≥ 1, got {batch_size}")
    for path, key, what in ((detector, "--detector", "Mask2Former"), (clip, "--clip", "CLIP")):
        if not isinstance(path, (Detector, ColorClassifier)):
            if path is None or not (Path(path) / "config.json").is_file():
                raise FileNotFoundError(f"{key}: {what} model folder {path} not found or has no config.json "
                                        f"(a local transformers folder; nothing is downloaded)")
    items = read_layout(folder)
    det = detector if isinstance(detector, Detector) else \
        Detector(detector, device, batch_size, **({"scale": tuple(scale)} if scale else {}))
    col = clip if isinstance(clip, ColorClassifier) else ColorClassifier(clip, device, max(16, int(batch_size)))
    jobs = [(meta, p) for meta, paths in items for p in paths]
    rows = []
    it = range(0, len(jobs), int(batch_size))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="geneval-score", unit="batch")
    for i in it:
        chunk = jobs[i:i + int(batch_size)]
        results = score_images([load_rgb(p) for _, p in chunk], [m for m, _ in chunk], det, col)
        for (meta, p), (correct, reason, det_rows) in zip(chunk, results):
            rows.append({"filename": str(p), "tag": meta["tag"], "prompt": meta["prompt"], "correct": correct,
                         "reason": reason, "metadata": json.dumps(meta), "details": json.dumps(det_rows)})
    return write_results(rows, folder, out_results, out_summary)
