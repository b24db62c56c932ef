"""Score images / a GenEval-layout folder with the rule-based detector and GenEval's logic (geneval.md §4, §6.3).

`score_image(image, metadata, world)` = GenEval's `evaluate_image`: per-tag threshold (COUNTING_THRESHOLD for
`counting`), per-class sort / strict threshold / cap 16, then `evaluate()`.
`score_folder(folder, world)` walks `<folder>/<digits>/{metadata.jsonl, samples/<digits>.png}` (via `layout`), writes
`results.jsonl` (GenEval's keys: filename, tag, prompt, correct, reason, metadata and details as JSON strings; details =
class → kept boxes [x1, y1, x2, y2, score]) and `summary.json` ({overall, six tasks, n_images}); both written to temp
files and renamed. Every metadata file is read and validated, and every image opened, before anything is written.
Images of another size are resized to the world's size with a BOX filter (§6.2). Rows are in folder/file index order
(GenEval: `os.listdir` order).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..progress import track
from . import detect as _detect
from .evaluate import MAX_OBJECTS, evaluate, group_by_class, write_results
from .layout import load_image, prompt_folders, read_folder_metadata, sample_paths
from .world import WorldConfig, world_config


def threshold_for(tag: str) -> float:
    """GenEval: COUNTING_THRESHOLD when tag == "counting", else THRESHOLD (values frozen in `detect`)."""
    return _detect.COUNTING_THRESHOLD if tag == "counting" else _detect.THRESHOLD


def to_world_size(image: np.ndarray, world: WorldConfig) -> np.ndarray:
    """uint8 RGB at the world's size; other sizes are resized with a BOX filter."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {img.shape}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {img.dtype}")
    S = world.image_size
    if img.shape[:2] != (S, S):
        img = np.asarray(Image.fromarray(img).resize((S, S), Image.BOX), dtype=np.uint8)
    return img


def check_metadata_world(metadata: dict, world: WorldConfig, where: str = "metadata"):
    """A prompt must only name the world's shapes and colours (ValueError naming `where` otherwise)."""
    for part in ("include", "exclude"):
        for i, req in enumerate(metadata.get(part, [])):
            if req.get("class") not in world.shapes:
                raise ValueError(f"{where}: {part}[{i}] class {req.get('class')!r} is not a shape of the world "
                                 f"{list(world.shapes)}")
            if "color" in req and req["color"] not in world.colors:
                raise ValueError(f"{where}: {part}[{i}] colour {req['color']!r} is not a colour of the world "
                                 f"{list(world.colors)}")


def score_image(image: np.ndarray, metadata: dict, world: WorldConfig | None = None
                ) -> tuple[bool, str, dict[str, Any]]:
    """(correct, reason, details) for one image; details = {class: [[x1, y1, x2, y2, conf], ...]} of the kept
    detections (GenEval's `details`), in descending confidence."""
    world = world or world_config(64)
    img = to_world_size(image, world)
    thr = threshold_for(metadata.get("tag", ""))
    detected = group_by_class(_detect.analyse(img, world), thr, MAX_OBJECTS)
    correct, reason = evaluate(detected, metadata)
    details = {cls: [d.to_row() for d in dets] for cls, dets in detected.items()}
    return bool(correct), reason, details




def load_folder(folder, world: WorldConfig) -> list[tuple[dict, list[tuple[Path, np.ndarray]]]]:
    """Read and validate the whole layout up front: [(metadata, [(png path, image at world size)])]."""
    folder = Path(folder)
    dirs = prompt_folders(folder)                   # FileNotFoundError if missing
    if not dirs:
        raise ValueError(f"{folder}: no prompt folders (expected <index:05d>/metadata.jsonl + samples/*.png)")
    out = []
    for d in dirs:
        meta = read_folder_metadata(d)              # FileNotFoundError / ValueError naming the file
        check_metadata_world(meta, world, str(d / "metadata.jsonl"))
        imgs = []
        for p in sample_paths(d):
            try:
                im = load_image(p)
            except Exception as e:  # PIL raises several types for broken files
                raise ValueError(f"{p}: cannot read image ({e})") from None
            imgs.append((p, to_world_size(im, world)))
        out.append((meta, imgs))
    if not any(imgs for _, imgs in out):
        raise ValueError(f"{folder}: no sample images (samples/<digits>.png) in any prompt folder")
    return out


def score_folder(folder, world: WorldConfig | None = None, out_results: str | os.PathLike | None = None,
                 out_summary: str | os.PathLike | None = None) -> tuple[pd.DataFrame, dict]:
    """Score every image of a GenEval-layout folder; writes results.jsonl and summary.json (default: inside
    `folder`). Returns (results DataFrame, summary dict)."""
    world = world or world_config(64)
    folder = Path(folder)
    items = load_folder(folder, world)
    rows = []
    for meta, imgs in track(items, "geneval score", unit="prompt"):
        for path, img in imgs:
            correct, reason, details = score_image(img, meta, world)
            rows.append({"filename": str(path), "tag": meta["tag"], "prompt": meta["prompt"], "correct": correct,
                         "reason": reason, "metadata": json.dumps(meta), "details": json.dumps(details)})
    return write_results(rows, folder, out_results, out_summary)
