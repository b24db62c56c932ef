"""Source `imagefolder`: a folder of images with their captions (Hugging Face's imagefolder convention).

Captions come from `metadata.jsonl` or `metadata.csv` at the top of the folder (a `file_name` column, relative to the
folder, and the caption column `text_column`, default "text"; other columns are kept as per-record metadata), or,
without a metadata file, from a same-stem `.txt` beside each image (SANA's image-folder format). Order: metadata rows
in file order, else image paths sorted. `write_imagefolder` writes the metadata.jsonl form (PNG, lossless).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
from PIL import Image

from .images import IMAGE_EXTS, Record

METADATA = ("metadata.jsonl", "metadata.csv")


class ImageFolderSource:
    kind = "imagefolder"

    def __init__(self, path, text_column: str = "text"):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"data.path: image folder not found: {self.path}")
        self.text_column = text_column
        self._rows = self._read_rows()
        if not self._rows:
            raise ValueError(f"data.path: no images ({'|'.join(IMAGE_EXTS)}) in {self.path}: the dataset is empty")

    def _read_rows(self) -> list[dict]:
        meta = next((self.path / m for m in METADATA if (self.path / m).is_file()), None)
        if meta is None:
            files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
            return [{"file_name": str(p.relative_to(self.path))} for p in files]
        if meta.suffix == ".jsonl":
            rows = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
        else:
            rows = pd.read_csv(meta, keep_default_na=False, dtype=str).to_dict("records")
        for i, r in enumerate(rows):
            if "file_name" not in r:
                raise ValueError(f"data.path: {meta} row {i + 1} has no file_name column")
        if rows and self.text_column not in set().union(*rows):
            raise ValueError(f"data.text_column: column {self.text_column!r} not in {meta} "
                             f"(columns: {sorted(set().union(*rows))})")
        self._meta_file = meta
        return rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Record]:
        from_meta = getattr(self, "_meta_file", None) is not None
        for r in self._rows:
            rel = Path(r["file_name"])
            f = self.path / rel
            if from_meta:
                cap = r.get(self.text_column)
            else:
                t = f.with_suffix(".txt")
                cap = t.read_text(encoding="utf-8").strip() if t.is_file() else None
            meta = {k: v for k, v in r.items() if k not in ("file_name", self.text_column)}
            key = str(rel.with_suffix("")).replace("\\", "/")
            yield Record(key=key, image=f if f.is_file() else None, caption=cap, origin=str(f), meta=meta)


def write_imagefolder(items: Iterable[tuple[str, np.ndarray, str, dict]], out_dir) -> int:
    """Write (key, uint8 [H,W,3], caption, meta) items as `<out_dir>/images/<key>.png` + `metadata.jsonl`
    (file_name, text, meta columns). The caller makes it atomic (sana_core.atomic.atomic_dir). Returns the count."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        for key, img, caption, meta in items:
            rel = Path("images") / f"{key}.png"
            Image.fromarray(img).save(out / rel, optimize=False, compress_level=1)
            f.write(json.dumps({"file_name": rel.as_posix(), "text": caption, **meta}) + "\n")
            n += 1
    return n
