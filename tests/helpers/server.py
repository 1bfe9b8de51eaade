"""A local `mlflow server` for tests, and free TCP ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.tracking import fresh_store

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and never one this process
    handed out before (tests start several servers before any of them binds its port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class Server:
    """A started `mlflow server` process; wait_healthy() gives its URL once it answers."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log
        self._healthy = False

    def wait_healthy(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while not self._healthy:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    self._healthy = r.status == 200
            except OSError:
                pass
            if not self._healthy:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        return self.url


@contextmanager
def start_mlflow_server(folder: Path, *artifact_args: str,
                        port: int | None = None) -> Iterator[Server]:
    """`mlflow server` on 127.0.0.1 with a sqlite store in ``folder`` (``artifact_args``:
    how it stores artifacts), started but not waited for; stopped afterwards. ``port``:
    a given one (a server restarted on the same store and address), else a free one."""
    port = port or free_port()
    store = folder / "server.db"  # a restarted server keeps its store
    uri = f"sqlite:///{store}" if store.exists() else fresh_store(store)
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", uri,
         *artifact_args,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # No server-side job runner (huey consumers for GenAI jobs, which no test uses): the
        # server starts in ~7 s instead of ~12 and leaves no pollers running.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        yield Server(proc, f"http://127.0.0.1:{port}", folder / "server.log")
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to a server started with ``start_new_session``, and its children; SIGKILL
    after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def mlflow_server_at(folder: Path, *artifact_args: str,
                     port: int | None = None) -> Iterator[str]:
    """As start_mlflow_server, yielding its URL once /health answers."""
    with start_mlflow_server(folder, *artifact_args, port=port) as server:
        yield server.wait_healthy()

