"""Shared pipeline components: model folders do not each carry a private copy of the text encoder, its tokenizer and
the codec (the paper's Gemma-2 is ~10 GB in fp32, DC-AE ~1.3 GB; every stage writes a model folder).

Choice: a content-addressed store of hard links. `share(folder, store)` hashes each file of a component folder just
written by `SanaPipeline.save_pretrained` (sha256) and replaces it by a hard link to `<store>/<sha256>` (created from
this very file the first time), so every model folder with the same weights points at the same inodes: one copy on
disk, however many stages. Files, not folders, are the unit: a component re-saved after loading from another folder
gets a different config.json (`_name_or_path`) but the same weight files, which are what is large.

Why hard links: a model folder stays a plain, complete `SanaPipeline` folder (stock `from_pretrained` works, `cp -r`,
`dvc push`, MLflow and `rsync` see ordinary files); deleting the store or any folder never breaks another (a link
count, not a pointer); no diffusers change. The shared files are made read-only, because an in-place write to one
link would change them all (our writers never write in place: model folders are new temp folders renamed into place).
DVC keeps one cache copy per content hash anyway; with `cache.type: hardlink` (docs/orchestration.md) its workspace
checkouts are links too. Across filesystems a link is impossible: the folder then simply keeps its own copy.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

SHARED = ("text_encoder", "tokenizer", "vae")     # SanaPipeline components shared between model folders
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def share(folder: str | Path, store: str | Path) -> str | None:
    """Replace every file under `folder` (a freshly written component folder) by a hard link to the store's file of
    the same content; returns the folder's digest (sha256 over sorted relative paths + file digests), or None when
    the store is on another filesystem (the folder keeps its own files)."""
    folder, store = Path(folder), Path(store)
    store.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        d = file_digest(f)
        h.update(f"{f.relative_to(folder).as_posix()}\0{d}\0".encode())
        target = store / d
        try:
            if not target.exists():                      # first of its kind: the store links to this file
                tmp = store / f".tmp-{d}-{os.getpid()}"
                tmp.unlink(missing_ok=True)
                os.link(f, tmp)
                tmp.chmod(_READ_ONLY)
                os.replace(tmp, target)                  # a concurrent writer stored the same bytes: either wins
            if not os.path.samefile(f, target):
                staged = f.with_name(f".{f.name}.link")
                staged.unlink(missing_ok=True)
                os.link(target, staged)
                os.replace(staged, f)
        except OSError as e:
            if e.errno == errno.EXDEV:
                return None
            raise
    return h.hexdigest()


def shared_components(model_dir: str | Path) -> dict[str, str]:
    """{component: digest} recorded in a model folder's sana15.json by `sample.save_pipeline` ({} if none)."""
    meta = Path(model_dir) / "sana15.json"
    if not meta.is_file():
        return {}
    return dict(json.loads(meta.read_text()).get("shared_components") or {})


def prune(store: str | Path) -> int:
    """Delete store files no model folder links to any more (link count 1: only the store holds them, e.g. after a
    stage was re-run); returns how many were removed. Not safe against a concurrent `share` into the same store."""
    store = Path(store)
    if not store.is_dir():
        return 0
    gone = 0
    for f in store.iterdir():
        if f.is_file() and f.stat().st_nlink == 1:
            f.unlink()
            gone += 1
    return gone
