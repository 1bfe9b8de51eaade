"""Atomic writes: whole or nothing."""

from __future__ import annotations

import pytest

from segkit.fileio import atomic_path, write_text


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_text(target, "old")
    write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        assert tmp.suffix == ".txt" and tmp.parent == tmp_path
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    """A shared artifact store or a server running as another user can read what segkit
    writes under the usual umask 022 (mkstemp alone would give 0600)."""
    import os
    import stat

    previous = os.umask(umask)
    try:
        target = write_text(tmp_path / "report.md", "x")
        with atomic_path(tmp_path / "model.keras") as tmp:
            tmp.write_bytes(b"zip")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "model.keras").stat().st_mode) == mode
