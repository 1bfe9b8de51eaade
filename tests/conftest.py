"""Shared fixtures: small datasets made on the fly, a few real Kvasir-SEG pairs, configs."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_KVASIR = ROOT.parent / "shared" / "data" / "kvasir-seg"


def write_pair(root: Path, name: str, size=(40, 32), *, ext=".jpg", mask_ext=".jpg",
               seed: int = 0) -> None:
    """A random RGB image and a rectangle mask (0/255) of ``size`` (w, h) under root."""
    rng = np.random.default_rng(seed)
    w, h = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        root / "images" / f"{name}{ext}")
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2, w // 4: w // 2] = 255
    Image.fromarray(mask).save(root / "masks" / f"{name}{mask_ext}")


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    """12 synthetic pairs s00..s11 with official-style split lists (8 train / 4 test)."""
    root = tmp_path / "synth"
    for i in range(12):
        write_pair(root, f"s{i:02d}", seed=i)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(f"s{i:02d}" for i in range(8)) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(f"s{i:02d}" for i in range(8, 12)) + "\n")
    return root


@pytest.fixture(scope="session")
def real_root(tmp_path_factory) -> Path:
    """16 real Kvasir-SEG pairs (12 train / 4 test lists) when ../shared has the dataset,
    else 16 synthetic pairs of real-looking sizes, so the suite runs anywhere."""
    root = tmp_path_factory.mktemp("kvasir") / "kvasir-seg"
    if SHARED_KVASIR.is_dir():
        names = sorted(p.stem for p in (SHARED_KVASIR / "images").glob("*.jpg"))[:16]
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True)
            for n in names:
                shutil.copy(SHARED_KVASIR / sub / f"{n}.jpg", root / sub / f"{n}.jpg")
    else:
        names = [f"r{i:02d}" for i in range(16)]
        for i, n in enumerate(names):
            write_pair(root, n, size=(622, 530), seed=i)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(names[:12]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(names[12:]) + "\n")
    return root


@pytest.fixture
def compose_cfg():
    """Compose conf/ with overrides, the way run.py does (without starting a Hydra job)."""
    from hydra import compose, initialize_config_dir

    from segkit.config import register_resolvers

    register_resolvers(ROOT)

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server_at(folder: Path, *artifact_args: str):
    """`mlflow server` on 127.0.0.1 with a sqlite store in ``folder`` (``artifact_args``:
    how it stores artifacts), yielding its URL once /health answers; stopped afterwards."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{folder}/server.db", *artifact_args,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
