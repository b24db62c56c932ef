"""Source `hf`: a Hugging Face `datasets` dataset from a local path — a folder written by `save_to_disk`
(`load_from_disk`; a DatasetDict takes its `split`, default "train"), or parquet files (a `.parquet` file, a folder of
them, or a glob), streamed with `load_dataset("parquet", streaming=True)` so nothing is copied into a cache.

Image and caption columns are `image_column` (default "image") and `text_column` (default "text"); the image column
is read undecoded (`datasets.Image(decode=False)`: bytes or a path) and decoded by `images.decode_image` like every
other source. `key_column` names a column of unique ids (default: the row number, zero-padded).
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterator

from .images import Record


class HFSource:
    kind = "hf"

    def __init__(self, path, image_column: str = "image", text_column: str = "text", key_column: str | None = None,
                 split: str = "train"):
        import datasets
        self.path = Path(path)
        self.image_column, self.text_column, self.key_column = image_column, text_column, key_column
        p = str(path)
        if self.path.is_dir() and ((self.path / "dataset_info.json").is_file()
                                   or (self.path / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(p)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ValueError(f"data.split: {split!r} not in {p} (splits: {sorted(ds)})")
                ds = ds[split]
            if len(ds) == 0:
                raise ValueError(f"data.path: {p} holds no rows: the dataset is empty")
            self.n = len(ds)
        else:
            files = (sorted(str(f) for f in self.path.glob("*.parquet")) if self.path.is_dir()
                     else sorted(glob.glob(p)))
            if not files:
                raise FileNotFoundError(f"data.path: no saved datasets folder or parquet files at {p}")
            ds = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
            self.n = None
        cols = list(ds.column_names or ds.features or [])
        for key, col in (("data.image_column", image_column), ("data.text_column", text_column),
                         ("data.key_column", key_column)):
            if col is not None and cols and col not in cols:
                raise ValueError(f"{key}: column {col!r} not in {p} (columns: {cols})")
        if isinstance(ds.features.get(image_column) if ds.features else None, datasets.Image):
            ds = ds.cast_column(image_column, datasets.Image(decode=False))
        self.ds = ds

    def __len__(self) -> int:
        if self.n is None:
            raise TypeError("a streamed parquet dataset has no cheap length")
        return self.n

    def __iter__(self) -> Iterator[Record]:
        n = 0
        for i, row in enumerate(self.ds):
            n += 1
            img = row.get(self.image_column)
            if isinstance(img, dict):  # datasets' undecoded Image: {"bytes", "path"}
                img = img.get("bytes") or img.get("path")
            key = str(row[self.key_column]) if self.key_column else f"{i:08d}"
            meta = {k: v for k, v in row.items() if k not in (self.image_column, self.text_column, self.key_column)
                    and isinstance(v, (str, int, float, bool, type(None)))}
            yield Record(key=key, image=img, caption=row.get(self.text_column), origin=f"{self.path}[{i}]", meta=meta)
        if n == 0:
            raise ValueError(f"data.path: {self.path} holds no rows: the dataset is empty")
