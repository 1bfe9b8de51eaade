"""Run folders, each owned by one process.

``${unique_dir:BASE}`` (the default ``hydra.run.dir`` and ``hydra.sweep.dir``) names a new
folder ``BASE-<6 random hex digits>`` and creates it exclusively: when the name exists
already (another process drew it), another is drawn, so two processes started in the same
second never share a folder.

A training run holds ``<run_dir>/run.lock`` (an OS lock, ``fcntl.flock``, with the holder's
pid written in it) for as long as it runs. The OS frees the lock when the process dies, even
by ``kill -9``; a lock that cannot be taken therefore proves a live process still trains in
that folder, and ``trainer.resume`` leaves such a run alone.
"""

from __future__ import annotations

import errno
import os
import secrets
import sys
from pathlib import Path

from segkit.errors import ConfigError, SegkitError

LOCK = "run.lock"
_HELD: dict[Path, int] = {}  # lock file -> open descriptor holding it, in this process


def unique_dir(base: str) -> str:
    """``base-<6 hex digits>``, created here (parents too) and by no other process."""
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        folder = f"{base}-{secrets.token_hex(3)}"
        try:
            os.mkdir(folder)  # fails when the name exists: never two owners
        except FileExistsError:
            continue
        return folder
    raise SegkitError(f"could not create a new folder {base}-*: 100 names drawn were taken")


def lock_path(folder: Path) -> Path:
    return Path(folder).absolute() / LOCK


def claim(folder: Path) -> int | None:
    """Take ``folder/run.lock`` for this process, until :func:`release_all` or the process
    ends. None when this process holds it now (or ``folder`` does not exist: nothing to
    hold); else the pid of the live process holding it (0 while it writes its pid)."""
    path = lock_path(folder)
    if path in _HELD or not path.parent.is_dir() or sys.platform == "win32":
        return None
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        return _pid_in(path)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[path] = fd
    return None


def _pid_in(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def own(folder: Path) -> None:
    """Hold ``folder``'s lock for a run starting there; ConfigError when a live process
    already runs in it (the same explicit ``hydra.run.dir`` given to two runs)."""
    pid = claim(folder)
    if pid is not None:
        raise ConfigError(f"run folder {folder} is in use by process {pid or '?'} (lock "
                          f"{lock_path(folder)}): give each run its own hydra.run.dir")


def release_all() -> None:
    """Free every lock this process holds (a sweep's next job runs in the same process)."""
    while _HELD:
        _, fd = _HELD.popitem()
        os.close(fd)  # closing the descriptor frees its flock
