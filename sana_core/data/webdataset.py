"""Source `webdataset`: tar shards as img2dataset writes them and SANA trains from (`<key>.jpg|png|webp` +
`<key>.txt`, or a `<key>.json` with a "caption"/"text" field), read with the `webdataset` package.

`data.path` is a shard pattern with braces (`shards/{00000..00099}.tar`, expanded by `braceexpand`), one tar file, or a
folder (all its `*.tar`, sorted). Every listed shard must exist (FileNotFoundError naming data.path). Shards are read
one at a time so an empty shard is counted as one bad record with its file named. Iteration order is the listed
order; `records(seed, epoch, start)` gives the order of one shuffled epoch (shard order and the samples inside each
shard permuted by (seed, epoch)) and resumes `start` records into it without decoding the skipped ones.
`write_webdataset` writes shards with `webdataset.ShardWriter`.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from .images import Record

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def expand_shards(path) -> list[Path]:
    """Shard files of a pattern / file / folder (missing ones → FileNotFoundError naming data.path)."""
    from braceexpand import braceexpand
    p = str(path)
    if Path(p).is_dir():
        files = sorted(Path(p).glob("*.tar"))
        if not files:
            raise ValueError(f"data.path: no .tar shards in {p}: the dataset is empty")
        return files
    files = [Path(x) for x in braceexpand(p)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"data.path: {len(missing)} shard(s) of {p} not found, e.g. {missing[0]}")
    return files


def _caption(sample: dict) -> str | None:
    if "txt" in sample:
        return sample["txt"].decode("utf-8").strip()
    if "json" in sample:
        try:
            j = json.loads(sample["json"])
        except ValueError:
            return None
        for k in ("caption", "text"):
            if isinstance(j.get(k), str):
                return j[k]
    return None


def _record(sample: dict, url: str) -> Record:
    img_key = next((k for k in IMAGE_KEYS if k in sample), None)
    meta = {}
    if "json" in sample:
        try:
            j = json.loads(sample["json"])
            meta = {k: v for k, v in j.items() if k not in ("caption", "text")} if isinstance(j, dict) else {}
        except ValueError:
            pass
    key = sample["__key__"]
    return Record(key=key, image=sample.get(img_key) if img_key else None, caption=_caption(sample),
                  origin=f"{url}:{key}.{img_key or '?'}", meta=meta)


class WebDatasetSource:
    kind = "webdataset"

    def __init__(self, path):
        self.pattern = str(path)
        self.shards = expand_shards(path)
        self.path = Path(self.shards[0]).parent

    def _samples(self, url: Path) -> Iterator[dict]:
        import webdataset as wds
        return iter(wds.WebDataset(str(url), shardshuffle=False, empty_check=False, nodesplitter=None,
                                   workersplitter=None))

    def _iter_shard(self, url: Path, perm=None) -> Iterator[Record]:
        """The shard's records, streamed (`perm` None) or buffered and permuted by `perm(n)`. An empty or
        unreadable shard yields one bad record naming the file."""
        n = 0
        try:
            if perm is None:
                for s in self._samples(url):
                    n += 1
                    yield _record(s, str(url))
            else:
                samples = list(self._samples(url))
                n = len(samples)
                for i in (perm(n) if n else []):
                    yield _record(samples[i], str(url))
        except Exception as e:  # a truncated / non-tar file
            yield Record(key=f"{url.name}:error", image=None, caption=None, origin=str(url),
                         bad=f"unreadable shard ({type(e).__name__}: {e})")
            return
        if n == 0:
            yield Record(key=f"{url.name}:empty", image=None, caption=None, origin=str(url), bad="empty shard")

    def __iter__(self) -> Iterator[Record]:
        for url in self.shards:
            yield from self._iter_shard(url)

    def records(self, seed: int | None = None, epoch: int = 0, start: int = 0) -> Iterator[Record]:
        """One epoch's records: in listed order when `seed` is None, else the shard order and the order inside each
        shard permuted by (seed, epoch). The first `start` records of that order are skipped without decoding their
        images (a resumed reader continues on the same records)."""
        urls = self.shards
        if seed is not None:
            urls = [urls[i] for i in np.random.default_rng([seed, epoch]).permutation(len(urls))]
        skipped = 0
        for j, url in enumerate(urls):
            perm = None if seed is None else np.random.default_rng([seed, epoch, j + 1]).permutation
            for r in self._iter_shard(url, perm):
                if skipped < start:
                    skipped += 1
                    continue
                yield r


def _png(img: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(img).save(b, format="PNG", compress_level=1)
    return b.getvalue()


def write_webdataset(items: Iterable[tuple[str, np.ndarray, str, dict]], out_dir, shard_size: int = 1000) -> int:
    """Write (key, uint8 [H,W,3], caption, meta) items as `<out_dir>/%05d.tar` shards of `shard_size` samples
    (`<key>.png`, `<key>.txt`, `<key>.json` = meta). The caller makes it atomic. Returns the count."""
    import webdataset as wds
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with wds.ShardWriter(str(out / "%05d.tar"), maxcount=int(shard_size), verbose=0) as w:
        for key, img, caption, meta in items:
            w.write({"__key__": key, "png": _png(img), "txt": caption, "json": json.dumps(meta)})
            n += 1
    return n
