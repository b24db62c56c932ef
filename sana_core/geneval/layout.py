"""GenEval's on-disk layout (geneval.md §3, §6.2) and prompt-file I/O.

    <out>/<index:05d>/metadata.jsonl     ONE json object, written with json.dump (no trailing newline), read with json.load
                      samples/00000.png, 00001.png, ...
                      grid.png           optional, ignored by readers

Readers follow `evaluate_images.py`: only sub-folders whose name `isdigit()` and only files matching `\\d+\\.png`
count; unlike GenEval (os.listdir order) we sort them numerically so results are deterministic.
Prompt folders are written atomically (built under a dot-named temp folder, then renamed), so a reader never sees a
half-written folder. Metadata is validated against GenEval's schema; errors name the file (and line).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from ..atomic import atomic_dir, write_text_atomic
from .evaluate import TASKS
from .world import COLORS, RELATIONS

PNG_RE = re.compile(r"\d+\.png")
_TOP_KEYS = ("tag", "include", "exclude", "prompt")
_REQ_KEYS = ("class", "count", "color", "position")


def validate_metadata(meta, where: str) -> dict:
    """Check one metadata object against GenEval's schema; ValueError "<where>: <problem>" otherwise."""
    def bad(msg):
        raise ValueError(f"{where}: {msg}")

    if not isinstance(meta, dict):
        bad(f"metadata must be a JSON object, got {type(meta).__name__}")
    for k in ("tag", "include", "prompt"):
        if k not in meta:
            bad(f"missing key '{k}'")
    extra = [k for k in meta if k not in _TOP_KEYS]
    if extra:
        bad(f"unknown key(s) {extra}; allowed {list(_TOP_KEYS)}")
    if not isinstance(meta["tag"], str) or meta["tag"] not in TASKS:
        bad(f"unknown tag {meta['tag']!r}; expected one of {list(TASKS)}")
    if not isinstance(meta["prompt"], str) or not meta["prompt"]:
        bad("'prompt' must be a non-empty string")
    for part in ("include", "exclude"):
        if part not in meta:
            continue
        reqs = meta[part]
        if not isinstance(reqs, list) or (part == "include" and not reqs):
            bad(f"'{part}' must be a {'non-empty ' if part == 'include' else ''}list of requirements")
        for i, r in enumerate(reqs):
            w = f"{part}[{i}]"
            if not isinstance(r, dict):
                bad(f"{w} must be an object")
            for k in ("class", "count"):
                if k not in r:
                    bad(f"{w}: missing key '{k}'")
            extra = [k for k in r if k not in _REQ_KEYS]
            if extra:
                bad(f"{w}: unknown key(s) {extra}; allowed {list(_REQ_KEYS)}")
            if not isinstance(r["class"], str) or not r["class"]:
                bad(f"{w}: 'class' must be a non-empty string")
            if isinstance(r["count"], bool) or not isinstance(r["count"], int) or r["count"] < 1:
                bad(f"{w}: 'count' must be an integer ≥ 1, got {r['count']!r}")
            if "color" in r and (not isinstance(r["color"], str) or r["color"] not in COLORS):
                bad(f"{w}: unknown color {r['color']!r}; expected one of {list(COLORS)}")
            if "position" in r:
                p = r["position"]
                if part != "include" or not isinstance(p, list) or len(p) != 2 or p[0] not in RELATIONS \
                        or isinstance(p[1], bool) or not isinstance(p[1], int) or not 0 <= p[1] < i:
                    bad(f"{w}: 'position' must be [relation in {list(RELATIONS)}, index of an earlier include], "
                        f"got {p!r}")
    return meta


def read_metadata_jsonl(path, with_lines: bool = False) -> list:
    """A prompt file: one metadata object per line (blank lines skipped). Loads GenEval's own
    `evaluation_metadata.jsonl` (553 prompts). Errors: ValueError "<file>:<line>: …"; FileNotFoundError.
    `with_lines=True` returns [(line number, metadata)] (for error messages downstream)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                meta = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
            meta = validate_metadata(meta, f"{path}:{n}")
            out.append((n, meta) if with_lines else meta)
    if not out:
        raise ValueError(f"{path}: no prompts")
    return out




def write_metadata_jsonl(path, metas: Sequence[dict]):
    """One `json.dumps(meta)` per line (GenEval's format), written atomically."""
    for i, m in enumerate(metas):
        validate_metadata(m, f"{path}: item {i}")
    write_text_atomic(Path(path), "".join(json.dumps(m) + "\n" for m in metas))


def make_grid(images: Sequence[np.ndarray], cols: int | None = None, pad: int = 2) -> np.ndarray:
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = images[0].shape[:2]
    grid = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    return grid


def write_prompt_folder(out, index: int, metadata: dict, images: Sequence[np.ndarray], grid: bool = False) -> Path:
    """Write `<out>/<index:05d>/` (metadata.jsonl, samples/%05d.png, optional grid.png) atomically; an existing
    folder of that index is replaced."""
    out = Path(out)
    validate_metadata(metadata, f"{out / f'{index:05d}'}/metadata.jsonl")
    if not images:
        raise ValueError(f"write_prompt_folder: no images for prompt {index}")
    imgs = [np.asarray(im) for im in images]
    for im in imgs:
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"write_prompt_folder: images must be uint8 [H, W, 3], got {im.dtype} {im.shape}")
    final = out / f"{index:05d}"

    def write(tmp: Path):
        (tmp / "samples").mkdir()
        with open(tmp / "metadata.jsonl", "w", encoding="utf-8") as f:
            json.dump(metadata, f)
        for k, im in enumerate(imgs):
            Image.fromarray(im).save(tmp / "samples" / f"{k:05d}.png")
        if grid:
            Image.fromarray(make_grid(imgs)).save(tmp / "grid.png")

    atomic_dir(final, write)
    return final


def read_folder_metadata(folder) -> dict:
    p = Path(folder) / "metadata.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"missing metadata file: {p}")
    with open(p, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return validate_metadata(meta, str(p))


def sample_paths(folder) -> list[Path]:
    d = Path(folder) / "samples"
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if PNG_RE.fullmatch(p.name) and p.is_file()), key=lambda p: int(p.stem))


def prompt_folders(root) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def load_image(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def iter_layout(root, load_images: bool = True) -> Iterator[tuple[int, dict, list[tuple[Path, np.ndarray | None]]]]:
    """Yield (index, metadata, [(png path, uint8 image or None)]) for each digit-named prompt folder, in index order."""
    for d in prompt_folders(root):
        meta = read_folder_metadata(d)
        yield int(d.name), meta, [(p, load_image(p) if load_images else None) for p in sample_paths(d)]
