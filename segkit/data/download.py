"""Fetch Kvasir-SEG once, safely: verified download, zip-slip check, atomic move into place.

Hand-written rather than ``keras.utils.get_file``: that helper extracts in place, so an
interrupted run leaves a half-extracted dataset that later runs mistake for a complete one, and
it cannot move the single ``Kvasir-SEG/`` folder of the archive to a root of our choosing
after checking member paths. Here the archive is extracted into a temporary sibling folder
and the dataset folder is moved to ``root`` with one ``os.replace`` (atomic on one
filesystem), so ``root`` either holds the whole dataset or does not exist.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from filelock import FileLock
from tqdm.auto import tqdm

from segkit.errors import SegkitError

__all__ = ["KVASIR_SEG_URL", "DownloadError", "download_file", "ensure_dataset"]

KVASIR_SEG_URL = "https://datasets.simula.no/downloads/kvasir-seg.zip"

logger = logging.getLogger(__name__)

_HINT = (
    "download it by hand from https://datasets.simula.no/kvasir-seg/ "
    "and set data.root / SEGKIT_DATA_DIR"
)
_CHUNK = 1 << 20
_ARCHIVE_NAME = "kvasir-seg.zip"


class DownloadError(SegkitError):
    """The dataset could not be found, downloaded, verified or extracted."""


def _stream(url: str, part: Path, timeout: float, progress: bool, label: str
            ) -> tuple[int, int | None, str]:
    """Write the body of ``url`` to ``part``; (bytes received, Content-Length, sha256).
    Every network or file error becomes a one-line DownloadError."""
    digest = hashlib.sha256()
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": "segkit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.strip().isdigit() else None
            with open(part, "wb") as out, tqdm(total=expected, unit="B", unit_scale=True,
                                               unit_divisor=1024, desc=label,
                                               disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {_HINT}"
                            ) from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot download {url}: {exc.reason}; {_HINT}") from exc
    except (http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise DownloadError(f"cannot download {url}: {exc!r}; {_HINT}") from exc
    except ValueError as exc:  # urlopen's answer to a malformed URL
        raise DownloadError(f"cannot download {url}: {exc}; {_HINT}") from exc
    except OSError as exc:  # ssl errors, or writing the .part file failed
        raise DownloadError(f"cannot download {url} to {part}: {exc}; {_HINT}") from exc
    return received, expected, digest.hexdigest()


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Stream ``url`` to ``dest`` through a ``.part`` file and return ``dest``.

    The body is written to ``<dest>.part`` next to ``dest``, checked against ``Content-Length``
    (when sent) and ``sha256`` (when given), and only then renamed to ``dest``; on any failure
    the partial file is deleted and :class:`DownloadError` is raised.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    done = False
    logger.info("Downloading %s to %s", url, dest)
    try:
        received, expected, actual = _stream(url, part, timeout, progress, dest.name)
        if expected is not None and received != expected:
            raise DownloadError(f"download of {url} truncated: got {received} of {expected} "
                                f"bytes; run again or {_HINT}")
        if sha256 is not None and actual != sha256.strip().lower():
            raise DownloadError(
                f"sha256 mismatch for {url}: expected {sha256.strip().lower()}, got {actual}; "
                f"the file was deleted; {_HINT}")
        os.replace(part, dest)
        done = True
    finally:
        if not done:
            part.unlink(missing_ok=True)
    logger.info("Downloaded %d bytes (sha256 %s)", received, actual)
    return dest


def ensure_dataset(
    root: Path,
    *,
    url: str = KVASIR_SEG_URL,
    sha256: str | None = None,
    allow_download: bool = True,
    progress: bool = True,
) -> Path:
    """Return ``root`` holding Kvasir-SEG's ``images/`` and ``masks/``, downloading if allowed.

    An existing complete ``root`` is returned without network access. A missing ``root`` (or an
    empty folder) is filled from ``url`` under a file lock in ``root.parent``; an existing
    folder that lacks ``images/`` or ``masks/`` is never overwritten.
    """
    root = Path(root).expanduser()
    if _is_dataset(root):
        return root
    _check_not_partial(root)
    if not allow_download:
        raise DownloadError(
            f"Kvasir-SEG not found at {root}: set data.root (or SEGKIT_DATA_DIR) to the folder "
            "holding images/ and masks/, or set data.download=true to fetch it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if _is_dataset(root):  # another process finished while we waited for the lock
            logger.info("Kvasir-SEG appeared at %s while waiting for the lock", root)
            return root
        _check_not_partial(root)
        _download_and_extract(root, url=url, sha256=sha256, progress=progress)
    return root


def _is_dataset(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _check_not_partial(root: Path) -> None:
    """Refuse an existing, non-empty ``root`` that is not a complete dataset."""
    if not root.exists() or _is_empty_dir(root):
        return
    if not root.is_dir():
        raise DownloadError(f"data.root {root} is a file, not a folder holding images/ and masks/")
    missing = " and ".join(f"{name}/" for name in ("images", "masks") if not (root / name).is_dir())
    raise DownloadError(
        f"{root} exists but has no {missing}: point data.root (or SEGKIT_DATA_DIR) at the "
        "Kvasir-SEG folder, or empty/remove it to download again (it is never overwritten)"
    )


def _download_and_extract(root: Path, *, url: str, sha256: str | None, progress: bool) -> None:
    """Download the archive next to ``root``, extract it aside and move the dataset into place."""
    download_dir = root.parent / f".{root.name}.download"
    archive = download_dir / _ARCHIVE_NAME
    tmp: Path | None = None
    try:
        download_file(url, archive, sha256=sha256, progress=progress)
        _check_archive(archive)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
        # Extract one level down: mkdtemp's folder is mode 0700, which must not become root.
        extracted = tmp / "extracted"
        extracted.mkdir()
        logger.info("Extracting %s", archive)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(extracted)
        source = _find_dataset_dir(extracted)
        if source is None:
            raise DownloadError(
                f"archive from {url} has no folder holding both images/ and masks/; {_HINT}"
            )
        if _is_empty_dir(root):
            root.rmdir()  # os.replace cannot replace a directory on every platform
        os.replace(source, root)
        logger.info(
            "Kvasir-SEG ready at %s (%d images)", root, sum(1 for _ in (root / "images").iterdir())
        )
    except (OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise DownloadError(f"cannot extract {archive} into {root}: {exc}") from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(download_dir, ignore_errors=True)


def _check_archive(archive: Path) -> None:
    """Raise unless ``archive`` is an intact zip whose members all stay inside the target."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            names = zf.namelist()
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, OSError, EOFError) as exc:
        raise DownloadError(f"{archive} is not a valid zip archive ({exc!r}); {_HINT}") from exc
    if bad is not None:
        raise DownloadError(f"{archive} is corrupt (bad CRC in member {bad!r}); {_HINT}")
    for name in names:
        member = PurePosixPath(name.replace("\\", "/"))
        drive = member.parts[0] if member.parts else ""
        if member.is_absolute() or ".." in member.parts or ":" in drive:  # "/x", "..", "C:x"
            raise DownloadError(
                f"{archive} contains unsafe member path {name!r} (absolute or '..'); "
                f"refusing to extract; {_HINT}"
            )


def _find_dataset_dir(top: Path) -> Path | None:
    """Return the shallowest folder under ``top`` (itself included) with images/ and masks/."""
    candidates = [top] + [
        path.parent
        for path in top.rglob("images")
        if path.is_dir() and "__MACOSX" not in path.parts
    ]
    found = [path for path in candidates if _is_dataset(path)]
    return min(found, key=lambda path: len(path.parts)) if found else None
