"""Shared fixtures: small datasets made on the fly, a few real Kvasir-SEG pairs, configs, one
MLflow tracking server and one trained smoke run per session. Helpers (paths, data makers,
subprocess runners) live in tests/helpers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import (
    ROOT,
    SHARED_KVASIR,
    SMOKE_ARGS,
    Job,
    SmokeRun,
    cli_env,
    fresh_store,
    start_early,
    start_mlflow_server,
    write_pair,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory) -> Path:
    """One data.cache_dir for every run on real_root: decoded once, then read (the cache is
    safe to share between processes, see test_two_processes_preparing_one_cache_agree)."""
    return tmp_path_factory.mktemp("cache")


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


# ----------------------------------------------------------- shared server and smoke run
@pytest.fixture(scope="session")
def _mlflow_server_started(tmp_path_factory):
    """The session's `mlflow server`, started (not yet answering); see mlflow_server."""
    tmp = tmp_path_factory.mktemp("server")
    with start_mlflow_server(tmp, "--artifacts-destination", str(tmp / "art")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(_mlflow_server_started) -> str:
    """URL of one `mlflow server` on 127.0.0.1 for the session, artifacts proxied by the
    server into a temp folder (as the team setup in docs/ does with an object store). Tests
    sharing it log to experiments of their own."""
    return _mlflow_server_started.wait_healthy()


@pytest.fixture(scope="session")
def _smoke_run_started(real_root, smoke_cache, tmp_path_factory):
    """The smoke training process, started; see smoke_run."""
    tmp = tmp_path_factory.mktemp("smoke")
    uri = fresh_store(tmp / "mlflow.db")
    job = Job.run_py(*SMOKE_ARGS, f"hydra.run.dir={tmp}/out", f"data.cache_dir={smoke_cache}",
                     env=cli_env(uri=uri, data=real_root))
    yield job, uri, tmp / "out", smoke_cache
    job.kill()


@pytest.fixture(scope="session")
def smoke_run(_smoke_run_started) -> SmokeRun:
    """One real CLI smoke training run for the whole session, logged to its own sqlite
    store. Tests only read it: anything that kills, resumes or reconfigures a run trains
    its own."""
    from mlflow.tracking import MlflowClient

    job, uri, out, cache = _smoke_run_started
    res = job.wait(timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("segkit-smoke").experiment_id])
    assert len(runs) == 1
    (run,) = runs
    return SmokeRun(uri=uri, run=run, run_id=run.info.run_id,
                    model_uri=run.data.tags["segkit.model_uri"], run_dir=out, cache=cache)


@pytest.fixture(scope="session", autouse=True)
def _start_session_resources_early(request):
    """The smoke training and the tracking server start when the session begins, if a
    selected test needs them, so that they are ready (or nearly) when it comes."""
    start_early(request, "_smoke_run_started", "_mlflow_server_started")
