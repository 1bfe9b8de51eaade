"""Atomic file writes: every file segkit writes appears whole or not at all, with the mode
the umask gives (0644 under the usual 022), like any file the user's tools write."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _create_beside(path: Path) -> Path:
    """A new empty file beside ``path``, created exclusively with mode 0666 minus the umask.

    Hand-written rather than ``tempfile.mkstemp``: mkstemp creates mode 0600 whatever the
    umask, which would leave artifacts unreadable to a shared store or a server run by
    another user."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); when the block succeeds it
    replaces ``path`` in one rename, when it fails it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
