"""Kvasir-SEG download and extraction against a local HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from segkit.data.download import DownloadError, download_file, ensure_dataset
from segkit.errors import SegkitError

IMAGE = b"\xff\xd8\xff\xe0fake-jpeg-image"
MASK = b"\xff\xd8\xff\xe0fake-jpeg-mask"


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def kvasir_zip(prefix: str = "Kvasir-SEG/", extra: dict[str, bytes] | None = None) -> bytes:
    members = {
        f"{prefix}images/a.jpg": IMAGE,
        f"{prefix}masks/a.jpg": MASK,
        f"{prefix}kavsir_bboxes.json": json.dumps({"a": {"bbox": []}}).encode(),
    }
    members.update(extra or {})
    return make_zip(members)


@dataclass
class Server:
    """Serves ``routes[path]`` bytes; ``truncated`` paths claim 1000 extra bytes and close."""

    base: str
    routes: dict[str, bytes] = field(default_factory=dict)
    truncated: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    delay: float = 0.0

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            state.requests.append(self.path)
            time.sleep(state.delay)
            body = state.routes.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            extra = 1000 if self.path in state.truncated else 0
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: any request to it fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/kvasir-seg.zip"


def leftovers(parent: Path, root: Path) -> list[str]:
    """Names in ``parent`` other than ``root`` and the (harmless) lock file."""
    allowed = {root.name, f".{root.name}.lock"}
    return sorted(p.name for p in parent.iterdir() if p.name not in allowed)


def test_download_and_extract(server: Server, tmp_path: Path) -> None:
    server.routes["/kvasir-seg.zip"] = kvasir_zip()
    root = tmp_path / "data" / "kvasir"

    result = ensure_dataset(root, url=server.url("/kvasir-seg.zip"), progress=False)

    assert result == root
    assert (root / "images" / "a.jpg").read_bytes() == IMAGE
    assert (root / "masks" / "a.jpg").read_bytes() == MASK
    assert (root / "kavsir_bboxes.json").is_file()
    assert leftovers(root.parent, root) == []  # no temp folder, .download folder, zip or .part
    assert server.requests == ["/kvasir-seg.zip"]


def test_dataset_at_top_level_of_zip(server: Server, tmp_path: Path) -> None:
    server.routes["/flat.zip"] = kvasir_zip(prefix="")
    root = tmp_path / "kvasir"

    ensure_dataset(root, url=server.url("/flat.zip"), progress=False)

    assert (root / "images" / "a.jpg").read_bytes() == IMAGE
    assert (root / "masks" / "a.jpg").read_bytes() == MASK
    assert leftovers(tmp_path, root) == []


def test_extracted_root_is_not_private(server: Server, tmp_path: Path) -> None:
    server.routes["/flat.zip"] = kvasir_zip(prefix="")
    root = tmp_path / "kvasir"

    ensure_dataset(root, url=server.url("/flat.zip"), progress=False)

    # tempfile.mkdtemp makes 0700 folders; that mode must not leak into the dataset root.
    assert root.stat().st_mode & 0o077 == 0o777 & ~current_umask() & 0o077


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_sha256_match(server: Server, tmp_path: Path) -> None:
    body = kvasir_zip()
    server.routes["/kvasir-seg.zip"] = body
    root = tmp_path / "kvasir"

    ensure_dataset(
        root,
        url=server.url("/kvasir-seg.zip"),
        sha256=hashlib.sha256(body).hexdigest().upper(),
        progress=False,
    )

    assert (root / "images" / "a.jpg").is_file()


def test_sha256_mismatch(server: Server, tmp_path: Path) -> None:
    body = kvasir_zip()
    server.routes["/kvasir-seg.zip"] = body
    root = tmp_path / "kvasir"
    wrong = "0" * 64

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=server.url("/kvasir-seg.zip"), sha256=wrong, progress=False)

    message = str(info.value)
    assert wrong in message
    assert hashlib.sha256(body).hexdigest() in message
    assert server.url("/kvasir-seg.zip") in message
    assert not root.exists()
    assert leftovers(tmp_path, root) == []


def test_http_404(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "kvasir"
    url = server.url("/missing.zip")

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=url, progress=False)

    assert url in str(info.value)
    assert "404" in str(info.value)
    assert "datasets.simula.no/kvasir-seg" in str(info.value)
    assert not root.exists()
    assert leftovers(tmp_path, root) == []


def test_download_error_is_segkit_error() -> None:
    assert issubclass(DownloadError, SegkitError)


def test_connection_refused(closed_port_url: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download_file(closed_port_url, tmp_path / "x.zip", timeout=5, progress=False)

    assert closed_port_url in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_zip(server: Server, tmp_path: Path) -> None:
    server.routes["/kvasir-seg.zip"] = os.urandom(4096)
    root = tmp_path / "kvasir"

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=server.url("/kvasir-seg.zip"), progress=False)

    assert "kvasir-seg.zip" in str(info.value)
    assert not root.exists()
    assert leftovers(tmp_path, root) == []


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_with_damaged_member(server: Server, tmp_path: Path, compression: int) -> None:
    members = {"Kvasir-SEG/images/a.jpg": IMAGE * 50, "Kvasir-SEG/masks/a.jpg": MASK}
    body = bytearray(make_zip(members, compression))
    data_at = body.index(b"Kvasir-SEG/images/a.jpg") + len("Kvasir-SEG/images/a.jpg")
    body[data_at + 2] ^= 0xFF  # flip a byte in the compressed data of the first member
    server.routes["/kvasir-seg.zip"] = bytes(body)
    root = tmp_path / "kvasir"

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=server.url("/kvasir-seg.zip"), progress=False)

    assert "kvasir-seg.zip" in str(info.value)
    assert not root.exists()
    assert leftovers(tmp_path, root) == []


def test_zip_slip_refused(server: Server, tmp_path: Path) -> None:
    server.routes["/kvasir-seg.zip"] = kvasir_zip(extra={"../evil.txt": b"pwned"})
    parent = tmp_path / "data"
    root = parent / "kvasir"

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=server.url("/kvasir-seg.zip"), progress=False)

    assert "../evil.txt" in str(info.value)
    assert not root.exists()
    assert list(tmp_path.rglob("evil.txt")) == []
    assert leftovers(parent, root) == []


def test_zip_without_dataset_folder(server: Server, tmp_path: Path) -> None:
    server.routes["/other.zip"] = make_zip({"stuff/images/a.jpg": IMAGE})
    root = tmp_path / "kvasir"

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=server.url("/other.zip"), progress=False)

    assert "masks/" in str(info.value)
    assert not root.exists()
    assert leftovers(tmp_path, root) == []


def test_missing_root_without_download(closed_port_url: str, tmp_path: Path) -> None:
    root = tmp_path / "kvasir"

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=closed_port_url, allow_download=False, progress=False)

    message = str(info.value)
    assert "data.root" in message
    assert str(root) in message
    assert "data.download=true" in message
    assert not root.exists()


def test_existing_dataset_needs_no_network(closed_port_url: str, tmp_path: Path) -> None:
    root = tmp_path / "kvasir"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()

    # A request to closed_port_url would fail with DownloadError, failing this test.
    assert ensure_dataset(root, url=closed_port_url, progress=False) == root
    assert ensure_dataset(root, url=closed_port_url, allow_download=False) == root


def test_incomplete_root_is_not_overwritten(server: Server, tmp_path: Path) -> None:
    server.routes["/kvasir-seg.zip"] = kvasir_zip()
    root = tmp_path / "kvasir"
    (root / "images").mkdir(parents=True)
    (root / "images" / "mine.jpg").write_bytes(b"user data")

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=server.url("/kvasir-seg.zip"), progress=False)

    assert str(root) in str(info.value)
    assert "masks/" in str(info.value)
    assert "images/" not in str(info.value).split("has no", 1)[1].split(":", 1)[0]
    assert (root / "images" / "mine.jpg").read_bytes() == b"user data"
    assert not (root / "masks").exists()
    assert server.requests == []


def test_empty_root_folder_is_filled(server: Server, tmp_path: Path) -> None:
    server.routes["/kvasir-seg.zip"] = kvasir_zip()
    root = tmp_path / "kvasir"
    root.mkdir()

    ensure_dataset(root, url=server.url("/kvasir-seg.zip"), progress=False)

    assert (root / "images" / "a.jpg").read_bytes() == IMAGE


def test_truncated_response(server: Server, tmp_path: Path) -> None:
    server.routes["/kvasir-seg.zip"] = kvasir_zip()
    server.truncated.add("/kvasir-seg.zip")
    root = tmp_path / "kvasir"

    with pytest.raises(DownloadError) as info:
        ensure_dataset(root, url=server.url("/kvasir-seg.zip"), progress=False)

    assert "truncated" in str(info.value)
    assert not root.exists()
    assert leftovers(tmp_path, root) == []


def test_download_file_replaces_stale_part(server: Server, tmp_path: Path) -> None:
    body = b"fresh content" * 100
    server.routes["/file.bin"] = body
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"stale leftover from an interrupted run")

    assert download_file(server.url("/file.bin"), dest, progress=False) == dest

    assert dest.read_bytes() == body
    assert not (tmp_path / "file.bin.part").exists()


def test_download_file_truncated_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.routes["/file.bin"] = b"x" * 500
    server.truncated.add("/file.bin")
    dest = tmp_path / "file.bin"

    with pytest.raises(DownloadError):
        download_file(server.url("/file.bin"), dest, progress=False)

    assert list(tmp_path.iterdir()) == []


def test_concurrent_calls_download_once(server: Server, tmp_path: Path) -> None:
    server.routes["/kvasir-seg.zip"] = kvasir_zip()
    server.delay = 0.3  # keep the first download in flight while the second call starts
    root = tmp_path / "kvasir"
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            ensure_dataset(root, url=server.url("/kvasir-seg.zip"), progress=False)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert server.requests == ["/kvasir-seg.zip"]
    assert (root / "images" / "a.jpg").read_bytes() == IMAGE
    assert leftovers(tmp_path, root) == []
