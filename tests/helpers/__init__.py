"""Shared test helpers: paths, the random image/mask maker, subprocess runners of run.py,
`segkit` and Python scripts, and a local MLflow server. Fixtures live in tests/conftest.py."""

from tests.helpers.cli import RUN_PY, SEGKIT, Job, cli_env, run_py, run_python, segkit_cli
from tests.helpers.data import random_data, write_image, write_pair
from tests.helpers.fixtures import start_early
from tests.helpers.paths import ROOT, SHARED_KVASIR
from tests.helpers.server import (
    Server,
    free_port,
    mlflow_server_at,
    start_mlflow_server,
    stop_group,
)
from tests.helpers.smoke import SMOKE_ARGS, SmokeRun
from tests.helpers.tracking import fresh_store, restored_tracking_uri, tracking_uri

__all__ = ["ROOT", "RUN_PY", "SEGKIT", "SHARED_KVASIR", "SMOKE_ARGS", "Job", "Server",
           "SmokeRun", "cli_env", "free_port", "fresh_store", "mlflow_server_at", "random_data",
           "restored_tracking_uri", "run_py", "run_python", "segkit_cli", "start_early",
           "start_mlflow_server", "stop_group", "tracking_uri", "write_image", "write_pair"]
