"""Decoding one dataset record into a training pair, and counting the records that cannot be used.

Every source yields `Record`s in a fixed dataset order; the image is not decoded until `decode_image` is called, so a
resumed encode can skip whole shards without decoding them. Images: PIL decode, RGB, the shorter side resized to
`image_size` (bicubic; no resize when it already fits), then centre-cropped to a square. A record that cannot be used
(unreadable image, missing caption, empty shard, caption over the text encoder's length) raises `BadInput`; the
caller counts it in a `BadLog`, which logs the file and fails once the bad fraction passes `max_bad_fraction`.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger("sana_core.data")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


class BadInput(ValueError):
    """A record that is skipped (and counted) rather than used."""


@dataclass
class Record:
    """One raw dataset entry. `image`: encoded bytes, a file path, a PIL image or a uint8 [H,W,3] array;
    `caption`: None when the source has none for it; `origin`: the file it came from (named in the log); `meta`: the
    source's other columns for it."""
    key: str
    image: Any
    caption: str | None
    origin: str
    meta: dict = field(default_factory=dict)
    bad: str | None = None  # set by the source when the record is unusable as a whole (e.g. an empty shard)


def check_image_size(image_size, factor: int) -> int:
    """`data.image_size` as an int that the codec's downsampling factor divides, else ValueError naming the key."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"data.image_size: expected a positive integer, got {image_size!r}")
    if image_size % int(factor):
        raise ValueError(f"data.image_size: {image_size} is not a multiple of the codec's downsampling factor {factor}")
    return image_size


def decode_image(image: Any, image_size: int) -> np.ndarray:
    """uint8 [S,S,3] from bytes / path / PIL image / uint8 array (BadInput when it cannot be decoded)."""
    try:
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise BadInput(f"expected a uint8 [H,W,3] array, got {image.dtype} {image.shape}")
            img = Image.fromarray(image)
        elif isinstance(image, Image.Image):
            img = image
        elif isinstance(image, (bytes, bytearray, memoryview)):
            img = Image.open(io.BytesIO(bytes(image)))
        elif isinstance(image, (str, Path)):
            img = Image.open(image)
        else:
            raise BadInput("missing image" if image is None else f"no image ({type(image).__name__})")
        img.load()
        img = img.convert("RGB")
    except BadInput:
        raise
    except Exception as e:  # PIL raises many types for truncated / non-image files
        raise BadInput(f"unreadable image ({type(e).__name__}: {e})") from None
    w, h = img.size
    if (w, h) != (image_size, image_size):
        s = image_size / min(w, h)
        rw, rh = max(image_size, round(w * s)), max(image_size, round(h * s))
        img = img.resize((rw, rh), Image.Resampling.BICUBIC)
        left, top = (rw - image_size) // 2, (rh - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, dtype=np.uint8)


def check_caption(caption) -> str:
    if not isinstance(caption, str) or not caption.strip():
        raise BadInput("missing caption")
    return caption


class BadLog:
    """Counts the records seen and the bad ones (origin, reason); `check()` fails beyond `max_bad_fraction`."""

    def __init__(self, max_bad_fraction: float = 0.01):
        if isinstance(max_bad_fraction, bool) or not isinstance(max_bad_fraction, (int, float)) \
                or not 0 <= max_bad_fraction < 1:
            raise ValueError(f"data.max_bad_fraction: expected a number in [0, 1), got {max_bad_fraction!r}")
        self.max_bad_fraction = float(max_bad_fraction)
        self.n_seen, self.bad = 0, []

    def ok(self) -> None:
        self.n_seen += 1

    def add(self, origin: str, reason: str) -> None:
        self.n_seen += 1
        self.bad.append([origin, reason])
        log.warning("data: skipped %s: %s", origin, reason)

    def extend(self, n_seen: int, bad: list) -> None:
        """Counts of an already-encoded shard (a resumed run)."""
        self.n_seen += int(n_seen)
        self.bad.extend([list(b) for b in bad])

    @property
    def n_bad(self) -> int:
        return len(self.bad)

    def over(self, total: int | None = None) -> bool:
        """True once the bad records exceed the allowed fraction of `total` (default: of those seen)."""
        total = self.n_seen if total is None else total
        return self.n_bad > self.max_bad_fraction * max(total, 1)

    def check(self, total: int | None = None) -> None:
        if self.over(total):
            shown = "; ".join(f"{o}: {r}" for o, r in self.bad[:5]) + (" ..." if self.n_bad > 5 else "")
            raise ValueError(f"data.max_bad_fraction: {self.n_bad} of {max(total or self.n_seen, self.n_seen)} "
                             f"records are unusable (> {self.max_bad_fraction:g}): {shown}")

    def counts(self) -> dict:
        return {"n_records": self.n_seen, "n_bad": self.n_bad,
                "bad_reasons": {r.split(" (")[0]: sum(1 for _, x in self.bad if x.split(" (")[0] == r.split(" (")[0])
                                for _, r in self.bad}}
