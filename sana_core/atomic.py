"""Atomic outputs: a folder or file is written beside its destination and renamed into place, so a failed or killed
write never leaves a half-written artifact (a leftover `.tmp-*` folder or hidden temp file is all that can remain)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def swap_in(new: Path, dest: Path) -> None:
    """Put the complete folder `new` in place of `dest` (renames; an existing `dest` is moved aside first and deleted
    only once `new` is in place)."""
    new, dest = Path(new), Path(dest)
    old = None
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{os.getpid()}-{time.time_ns()}"
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_dir(dest: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a fresh temp folder `.tmp-<name>-*` beside `dest`, then swap it in for `dest` (an existing
    `dest` is replaced only after the new one is complete). The folder gets the mode of a plain `mkdir` (0777 minus
    the umask), not mkdtemp's owner-only 0700: model folders are read by group and others too."""
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        write(tmp)
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def atomic_file(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a hidden temp file beside `path` (same suffix, so writers that infer the format from it
    work), then `os.replace` it onto `path`. Mode of a plain file create (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically (`atomic_file`)."""
    return atomic_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
