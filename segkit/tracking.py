"""MLflow: where runs go, what each run records, and the Keras callback that streams epochs."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import keras
import mlflow
import numpy as np

log = logging.getLogger(__name__)

PACKAGES = ("segkit", "tensorflow", "keras", "mlflow", "hydra-core", "omegaconf", "numpy",
            "albumentations", "scikit-learn", "matplotlib", "pillow")
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def artifact_location(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts beside the database (``<dir>/mlruns``) so they
    do not land in whatever folder the run happened to start in; servers decide themselves."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.parent / "mlruns").resolve().as_uri()


def setup_experiment(uri: str, name: str) -> str:
    """Point MLflow at ``uri`` and return the id of experiment ``name``, creating it if needed."""
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(
            name, artifact_location=artifact_location(uri),
            # Opens the model-training view (runs table) instead of the GenAI one in MLflow 3.
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except mlflow.exceptions.MlflowException:  # another process created it meanwhile
        return mlflow.get_experiment_by_name(name).experiment_id


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become their JSON text."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text[:_MAX_PARAM_LEN]
    return flat


def git_state(root: Path) -> dict[str, str]:
    """The commit of the project checkout and whether it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {"segkit.git_commit": git("rev-parse", "HEAD"),
                "segkit.git_dirty": str(bool(git("status", "--porcelain"))).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"segkit.git_commit": "unknown"}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@contextmanager
def start_run(uri: str, experiment: str, run_name: str | None = None,
              tags: Mapping[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, or FAILED (with the error as a tag) when the body
    raises, or KILLED on Ctrl-C."""
    experiment_id = setup_experiment(uri, experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {}),
                          log_system_metrics=False) as run:
        try:
            yield run
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")
            raise
        except Exception as exc:
            mlflow.set_tag("segkit.error", f"{type(exc).__name__}: {exc}"[:5000])
            raise


def log_run_context(config: Mapping, root: Path, hydra_dir: Path | None) -> None:
    """Params (flattened resolved config), the config YAML, Hydra's overrides, git and versions."""
    mlflow.log_params(flatten(config))
    mlflow.set_tags(git_state(root))
    versions = package_versions()
    mlflow.log_dict(versions, "environment/packages.json")
    mlflow.set_tags({f"version.{k}": versions[k] for k in ("tensorflow", "keras", "mlflow")})
    if hydra_dir is not None and Path(hydra_dir).is_dir():
        # config.yaml (composed), hydra.yaml and overrides.yaml, as Hydra wrote them.
        mlflow.log_artifacts(str(hydra_dir), "config")


class MLflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's Keras logs as MLflow metrics, step = epoch index.

    Hand-written rather than ``mlflow.keras.autolog``: autolog also logs params and models
    under its own names, which would duplicate and conflict with what segkit logs.
    """

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()
                   if np.isscalar(v) or np.ndim(v) == 0}
        mlflow.log_metrics(metrics, step=epoch)


def source_run_id(model_uri: str) -> str | None:
    """The training run behind a model URI: runs:/<id>/..., models:/m-<logged model id>,
    models:/<name>/<version> or models:/<name>@<alias>; None for a path or an unknown URI."""
    client = mlflow.MlflowClient()
    try:
        if model_uri.startswith("runs:/"):
            return model_uri[len("runs:/"):].split("/", 1)[0]
        if model_uri.startswith("models:/"):
            ref = model_uri[len("models:/"):]
            if "@" in ref:
                name, _, alias = ref.partition("@")
                return client.get_model_version_by_alias(name, alias).run_id
            name, _, version = ref.partition("/")
            if version:
                return client.get_model_version(name, version).run_id
            return client.get_logged_model(name).source_run_id
    except mlflow.exceptions.MlflowException:
        return None
    return None


HISTORY_KEYS = ("loss", "accuracy", "dice", "iou")


def training_history(run_id: str) -> dict[str, list[float]]:
    """The per-epoch Keras metrics a training run logged, as Keras' ``History.history``."""
    client = mlflow.MlflowClient()
    history = {}
    for key in HISTORY_KEYS + tuple(f"val_{k}" for k in HISTORY_KEYS):
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        if points:
            history[key] = [m.value for m in points]
    return history


def log_model(model: keras.Model, sample: np.ndarray, registered_name: str | None = None) -> str:
    """Log ``model`` in Keras 3 format with an input/output signature; return its model URI.

    The logged copy is uncompiled (same layers and weights, no optimizer, loss or metrics),
    so it loads with plain Keras or ``mlflow.pyfunc`` where segkit is not installed.
    """
    from mlflow.models import infer_signature

    # Not keras.models.clone_model: in Keras 3 it copies the compile state too.
    trained, model = model, keras.Model.from_config(model.get_config())
    model.set_weights(trained.get_weights())
    sample = sample.astype(np.float32)
    signature = infer_signature(sample, np.asarray(model.predict_on_batch(sample), np.float32))
    versions = package_versions()
    info = mlflow.keras.log_model(
        model, name="model", signature=signature, registered_model_name=registered_name,
        # Stated, not inferred: inference re-imports the model in a subprocess and fails.
        pip_requirements=[f"{p}=={versions[p]}" for p in ("tensorflow", "keras")],
    )
    return info.model_uri
