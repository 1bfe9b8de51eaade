"""MLflow's process-wide tracking URI, set and put back around a test; fresh sqlite stores
made from one template."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def restored_tracking_uri() -> Iterator[None]:
    """Put MLflow's global tracking URI (and MLFLOW_TRACKING_URI, which setting it changes)
    back as they were afterwards."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


@contextmanager
def tracking_uri(uri: str) -> Iterator[str]:
    """MLflow's global tracking URI set to ``uri`` inside, restored afterwards."""
    import mlflow

    with restored_tracking_uri():
        mlflow.set_tracking_uri(uri)
        yield uri


_TEMPLATE: list[Path] = []  # the session's empty store with MLflow's tables, made on first use


def _template() -> Path:
    """An empty sqlite store whose tables MLflow created (its ~100 schema migrations: ~3 s of
    CPU and many fsyncs), made once per test process in a temp folder removed at exit."""
    if not _TEMPLATE:
        from mlflow.tracking import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="segkit-store-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        MlflowClient(f"sqlite:///{folder}/mlflow.db").search_experiments()
        _TEMPLATE.append(folder / "mlflow.db")
    return _TEMPLATE[0]


def fresh_store(path: Path) -> str:
    """sqlite URI of a new, empty MLflow store at ``path`` (a sqlite file, folders made): a
    copy of a store whose tables are made already, so that no process spends its start-up
    migrating a schema. Tests of the creation itself (processes racing to create one store)
    use a plain path instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), path)
    return f"sqlite:///{path}"
