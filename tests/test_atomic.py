"""sana_core.atomic: folders and files appear whole or not at all, with the modes of a plain mkdir / file create
(0777 / 0666 minus the umask: model folders are readable by group and others, unlike mkdtemp's 0700)."""
from __future__ import annotations

import os
import stat

import pytest

from sana_core.atomic import atomic_dir, atomic_file, write_text_atomic


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_dir_mode_follows_umask_and_replaces_whole(tmp_path, umask022):
    out = atomic_dir(tmp_path / "models" / "m", lambda t: (t / "w.txt").write_text("1"))
    assert _mode(out) == 0o755 and (out / "w.txt").read_text() == "1"
    os.umask(0o027)
    atomic_dir(out, lambda t: (t / "v.txt").write_text("2"))
    assert _mode(out) == 0o750 and sorted(p.name for p in out.iterdir()) == ["v.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]          # no temp or old folder left


def test_atomic_dir_failure_keeps_the_old_folder(tmp_path, umask022):
    out = atomic_dir(tmp_path / "m", lambda t: (t / "w.txt").write_text("old"))

    def boom(t):
        (t / "w.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_dir(out, boom)
    assert (out / "w.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_atomic_file_mode_suffix_and_failure(tmp_path, umask022):
    seen = []
    p = atomic_file(tmp_path / "a" / "x.png", lambda t: (seen.append(t.suffix), t.write_bytes(b"png")))
    assert seen == [".png"] and p.read_bytes() == b"png" and _mode(p) == 0o644
    with pytest.raises(ValueError):
        atomic_file(p, lambda t: (t.write_bytes(b"half"), (_ for _ in ()).throw(ValueError("x"))))
    assert p.read_bytes() == b"png" and [q.name for q in p.parent.iterdir()] == ["x.png"]
    assert write_text_atomic(tmp_path / "t.json", "{}\n").read_text() == "{}\n" and _mode(tmp_path / "t.json") == 0o644
