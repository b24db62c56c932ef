"""Source `shapes`: the GenEval-Shapes world written as a standard dataset, then read back like any other source.

`write_shapes(data_cfg, out_dir, format)` renders the pool with `sana_core.geneval.dataset.build_dataset` (the same
images, captions and defects as today's `data/shapes`) and writes it as an image folder (`images/<index>.png` +
`metadata.jsonl`: file_name, text = caption, and the manifest's other columns: index, tag, objects, n_objects,
split, defect, clean_caption, clean_tag) or as webdataset shards (`shards/%05d.tar`, the columns in `<key>.json`),
plus the world's prompt files (eval_iid.jsonl, eval_comp.jsonl, calibration.jsonl, world.json) and `source.json`
saying which format was written. PNG is lossless, so the pixels read back equal `images.npy`. The folder is written
atomically. `ShapesSource(path)` opens it with the matching reader.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..atomic import atomic_dir
from .imagefolder import ImageFolderSource, write_imagefolder
from .webdataset import WebDatasetSource, write_webdataset

FORMATS = ("imagefolder", "webdataset")
PROMPT_FILES = ("eval_iid.jsonl", "eval_comp.jsonl", "calibration.jsonl", "world.json")
MARKER = "source.json"


def write_shapes(data_cfg: dict | None, out_dir, format: str = "imagefolder", shard_size: int = 1000) -> dict:
    """Render the GenEval-Shapes pool of `data_cfg` into `out_dir` as a standard dataset; returns build_dataset's
    counts. `format`: "imagefolder" or "webdataset" (shards of `shard_size`)."""
    from ..geneval.dataset import build_dataset, load_images, load_manifest
    if format not in FORMATS:
        raise ValueError(f"data.format: unknown format {format!r}; choose from {list(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".render-{out_dir.name}-", dir=out_dir.parent))
    try:
        stats = build_dataset(data_cfg, scratch / "pool")
        man, images = load_manifest(scratch / "pool"), load_images(scratch / "pool")

        def items():
            for row, img in zip(man.to_dict("records"), images):
                meta = {k: v for k, v in row.items() if k != "caption"}
                yield f"{int(row['index']):08d}", img, row["caption"], meta

        def write(tmp: Path):
            if format == "imagefolder":
                write_imagefolder(items(), tmp)
            else:
                write_webdataset(items(), tmp / "shards", shard_size)
            for f in PROMPT_FILES:
                shutil.copy2(scratch / "pool" / f, tmp / f)
            (tmp / MARKER).write_text(json.dumps({"source": "shapes", "format": format, "n": len(man)}, indent=1))

        atomic_dir(out_dir, write)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return stats


def ShapesSource(path):
    """The reader for a folder written by `write_shapes` (its `source.json` names the format)."""
    p = Path(path)
    if not (p / MARKER).is_file():
        raise FileNotFoundError(f"data.path: {p} is not a GenEval-Shapes dataset written by the data stage "
                                f"(no {MARKER})")
    fmt = json.loads((p / MARKER).read_text())["format"]
    src = ImageFolderSource(p) if fmt == "imagefolder" else WebDatasetSource(p / "shards")
    src.kind = "shapes"
    return src
