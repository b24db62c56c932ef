"""The data seam: every training-side consumer reads a dataset through this package (docs/data.md).

- Sources (one module per format), one registry: `open_source(source, path, **opts)` → an iterable of
  `images.Record` in a fixed dataset order. `shapes` (the GenEval-Shapes world written by `write_shapes`),
  `imagefolder`, `webdataset`, `hf`.
- `encode.encode_dataset` → a folder of per-shard latents (+ text features, or captions for online encoding),
  written shard by shard and resumable.
- `stream.ShardStream` → that folder as training data (the training-data protocol of sana_core.train).
- `clip_score` → the CLIP-score curation scorer.
"""
from __future__ import annotations

from pathlib import Path

from .hf import HFSource
from .imagefolder import ImageFolderSource
from .shapes import ShapesSource
from .webdataset import WebDatasetSource

SOURCES = {
    "shapes": ShapesSource,
    "imagefolder": ImageFolderSource,
    "webdataset": WebDatasetSource,
    "hf": HFSource,
}


def open_source(source: str, path, **opts):
    """The reader of `source` over `path`; `opts` are that reader's options (e.g. text_column for imagefolder/hf,
    image_column / key_column / split for hf). Errors name `data.source` / `data.path` / the option, before any
    image is decoded."""
    if source not in SOURCES:
        raise ValueError(f"data.source: unknown source {source!r}; choose from {sorted(SOURCES)}")
    if path is None or str(path) == "":
        raise ValueError("data.path: no dataset path given")
    if source in ("shapes", "imagefolder") and not Path(path).exists():  # patterns / globs: their reader checks
        raise FileNotFoundError(f"data.path: {path} does not exist")
    import inspect
    allowed = set(inspect.signature(SOURCES[source]).parameters) - {"path"}
    bad = sorted(set(opts) - allowed)
    if bad:
        raise ValueError(f"data: option(s) {bad} do not apply to source {source!r} (allowed: {sorted(allowed)})")
    return SOURCES[source](path, **opts)
