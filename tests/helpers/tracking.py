"""MLflow's process-wide tracking URI, set and put back around a test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


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
