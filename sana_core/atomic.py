"""Atomic outputs: a folder or file is written beside its destination and renamed into place, so a failed or killed
write never leaves a half-written artifact (a leftover `.tmp-*` folder or hidden temp file is all that can remain)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable


def atomic_dir(dest: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a fresh temp folder `.tmp-<name>-*` beside `dest`, then swap it in for `dest` (an existing
    `dest` is replaced only after the new one is complete)."""
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        write(tmp)
        old = None
        if out.exists():
            old = out.parent / f".old-{out.name}-{os.getpid()}-{time.time_ns()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a hidden temp file in the same folder and `os.replace` (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
