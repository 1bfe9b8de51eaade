"""MLflow: where runs go and what each run records (no TensorFlow import at module level, so
a sweep's launcher process starts fast)."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np

from segkit import rundir
from segkit import tags as tag  # `tags` is the name of run tags here
from segkit.errors import ConfigError, TrackingUnavailable
from segkit.metric_names import to_mlflow

log = logging.getLogger(__name__)

PACKAGES = ("segkit", "tensorflow", "keras", "mlflow", "hydra-core", "omegaconf", "numpy",
            "albumentations", "scikit-learn", "matplotlib", "pillow")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for any other store."""
    if urlparse(uri).scheme != "sqlite" or not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def artifact_location(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts beside the database (``<dir>/mlruns``) so they
    do not land in whatever folder the run happened to start in; servers decide themselves."""
    db = sqlite_file(uri)
    return None if db is None else (db.parent / "mlruns").resolve().as_uri()


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For a sqlite store, ``<db>.lock`` held meanwhile: MLflow creates and migrates a fresh
    store's tables when a process first opens it, and two processes doing that at once fail
    (``table ... already exists``). Other stores (servers, databases) need no lock here."""
    db = sqlite_file(uri)
    if db is None or not db.absolute().parent.is_dir():  # MLflow names a missing folder
        yield
        return
    from filelock import FileLock

    with FileLock(f"{db}.lock"):
        yield


def open_store(uri: str) -> None:
    """Open the store at ``uri`` in this process (creating it once, under :func:`store_lock`)
    before anything reads or writes it."""
    with store_lock(uri):
        mlflow.MlflowClient(uri).search_experiments(max_results=1)


def setup_experiment(uri: str, name: str) -> str:
    """Point MLflow at ``uri`` and return the id of experiment ``name``, creating it if
    needed; the store and the experiment are created under :func:`store_lock`."""
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        experiment = mlflow.get_experiment_by_name(name)  # opens (or creates) the store
        if experiment is not None:
            return experiment.experiment_id
        try:
            return mlflow.create_experiment(
                name, artifact_location=artifact_location(uri),
                # Opens the model-training view (runs table) instead of the GenAI one.
                tags={tag.EXPERIMENT_KIND: "custom_model_development"},
            )
        except mlflow.exceptions.MlflowException:  # another process created it meanwhile
            created = mlflow.get_experiment_by_name(name)
            if created is None:
                raise
            return str(created.experiment_id)


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become their JSON text."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text[:tag.MAX_PARAM]
    return flat


def git_state(root: Path) -> dict[str, str]:
    """The commit of the project checkout and whether it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {tag.GIT_COMMIT: git("rev-parse", "HEAD"),
                tag.GIT_DIRTY: str(bool(git("status", "--porcelain"))).lower()}
    except (OSError, subprocess.SubprocessError):
        return {tag.GIT_COMMIT: "unknown"}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any data or training, when an http(s) tracking server does not
    answer (MLflow's own client would retry for minutes, at the end of training)."""
    import urllib.error
    import urllib.request

    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            reply.read(100)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"tracking.uri={uri} is unreachable ({reason}): start the MLflow server, or set "
            "tracking.uri / MLFLOW_TRACKING_URI to a reachable one (unset: the local store)"
        ) from None


def is_reachable(uri: str, timeout: float = 3.0) -> bool:
    """Whether an http(s) tracking server answers ``/health`` within ``timeout`` seconds
    (always True for a local store)."""
    try:
        check_reachable(uri, timeout)
    except ConfigError:
        return False
    return True


# MLflow's defaults (7 retries with a backoff factor of 2, 120 s per request) wait about 4
# minutes on each call to a server that is gone; a run goes on without it instead.
def bound_http(uri: str, timeout: int = 30, retries: int = 2) -> None:
    """For an http(s) tracking URI, bound each MLflow request (``tracking.http_timeout``
    seconds, ``tracking.http_retries`` retries, backoff 1 s, 2 s, ...): a server that stops
    answering costs seconds, not minutes. MLflow reads these variables at every request."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    if not (int(timeout) >= 1 and 0 <= int(retries) <= 10):  # MLflow refuses more than 10
        raise ConfigError(f"tracking.http_timeout={timeout} must be >= 1 and "
                          f"tracking.http_retries={retries} within 0..10")
    os.environ.update({"MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout)),
                       "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(retries)),
                       "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
    # urllib3 warns at each retry (several lines per call): segkit says once what happened.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def failure_reason(exc: BaseException) -> str:
    """Why an MLflow request failed, in a few words (its messages run to hundreds of
    characters: the URL, the pool, the retry count)."""
    text = str(exc)
    for marker, short in (("Connection refused", "connection refused"),
                          ("timed out", "timed out"), ("Max retries exceeded", "no answer")):
        if marker in text:
            return short
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def detach_run() -> None:
    """Forget the active run in this process without a word to the server (which is gone):
    the run stays RUNNING there until ``segkit sync`` or a resume ends it. Private MLflow
    state: its only public way, ``end_run``, talks to the server, and a run left active
    would be ended FINISHED by MLflow's exit handler."""
    from mlflow.environment_variables import MLFLOW_RUN_ID
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()  # noqa: SLF001
    if stack:
        stack.pop()
    MLFLOW_RUN_ID.unset()


def _end_run(uri: str, run: mlflow.ActiveRun, status: str) -> None:
    """End the active run with ``status``; when the server does not answer, the run is
    left to ``segkit sync`` (FINISHED: TrackingUnavailable) or just warned about."""
    try:
        mlflow.end_run(status)  # takes the run off the local stack before it calls the server
    except Exception as exc:
        if is_reachable(uri):
            raise
        if status == "FINISHED":
            raise TrackingUnavailable(uri, run.data.tags.get(tag.RUN_DIR, "its run folder"),
                                      run.info.run_id) from None
        log.warning("tracking server %s unreachable (%s): run %s could not be marked %s "
                    "there", uri, failure_reason(exc), run.info.run_id, status)


def _fail(uri: str, run: mlflow.ActiveRun, exc: BaseException) -> None:
    """Tag the run with the error and end it FAILED, or warn when the server is gone."""
    try:
        mlflow.set_tag(tag.ERROR, f"{type(exc).__name__}: {exc}"[:tag.MAX_TAG])
    except Exception:
        if is_reachable(uri):
            raise
        detach_run()
        log.warning("tracking server %s unreachable: run %s stays RUNNING there", uri,
                    run.info.run_id)
        return
    _end_run(uri, run, "FAILED")


def fresh_name() -> str:
    """MLflow's own adjective-noun-number run name, drawn from fresh entropy: segkit seeds
    Python's ``random`` (``seed``), under which MLflow gave every run of a seed the same name.
    The seeded state is put back, so training draws stay reproducible."""
    from mlflow.utils.name_utils import _generate_random_name

    state = random.getstate()
    random.seed()  # os.urandom
    try:
        return str(_generate_random_name())
    finally:
        random.setstate(state)


@contextmanager
def start_run(uri: str, experiment: str, run_name: str | None = None,
              tags: Mapping[str, str] | None = None,
              run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, or FAILED (with the error as a tag) when the body
    raises, or KILLED on Ctrl-C / SIGTERM. ``run_id`` reopens an existing run (resume).
    A server gone by then costs one bounded wait: the run stays RUNNING there, and a
    FINISHED body raises TrackingUnavailable (``segkit sync`` ends it)."""
    experiment_id = setup_experiment(uri, experiment)
    run = (mlflow.start_run(run_id=run_id, log_system_metrics=False) if run_id else
           mlflow.start_run(experiment_id=experiment_id, run_name=run_name or fresh_name(),
                            tags=dict(tags or {}), log_system_metrics=False))
    try:
        yield run
    except KeyboardInterrupt:
        _end_run(uri, run, "KILLED")
        raise
    except TrackingUnavailable:
        detach_run()  # nothing more to tell a server that is gone
        raise
    except BaseException as exc:
        _fail(uri, run, exc)
        raise
    _end_run(uri, run, "FINISHED")


# Keys that do not change what a run computes: left out of its config hash.
_HASH_EXCLUDED = ("paths", "hydra", "tracking.run_name", "trainer.resume", "trainer.verbose",
                  "sweep", "verbose", "tracking.http_timeout", "tracking.http_retries")


def config_hash(config: Mapping) -> str:
    """sha256 of the resolved config minus output paths and bookkeeping keys: two runs with
    the same hash trained the same thing (tag ``segkit.config_hash``)."""
    import hashlib

    tree = json.loads(json.dumps(dict(config), default=str))
    for key in _HASH_EXCLUDED:
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


RESUMABLE = ("KILLED", "FAILED", "RUNNING")


def find_resumable(experiment_id: str, resume: str,
                   chash: str) -> tuple[str, Path, str] | None:
    """``trainer.resume``: the run to continue, its run folder and why it was taken. ``auto``
    picks the latest interrupted run with the same config hash (None when there is none); a
    run id must name an interrupted run of this experiment. A run whose folder's lock a live
    process holds (:mod:`segkit.rundir`) is never taken: ``auto`` passes over it, a run id
    is a ConfigError. The run taken is claimed: this process holds its lock from now on."""
    client = mlflow.MlflowClient()
    if resume == "auto":
        return _take_latest(client, experiment_id, chash)
    run = _named_run(client, experiment_id, resume)
    run_dir = Path(run.data.tags[tag.RUN_DIR])
    pid = rundir.claim(run_dir)
    if pid is not None:
        raise ConfigError(f"trainer.resume={resume}: run {resume} is still running in process "
                          f"{pid or '?'} (lock {rundir.lock_path(run_dir)}): wait for it or "
                          "stop it")
    return run.info.run_id, run_dir, f"named by trainer.resume, {_why(run)}"


def _why(run) -> str:
    return (f"{run.info.status} in MLflow and its process is gone (no live process holds "
            f"{rundir.lock_path(Path(run.data.tags[tag.RUN_DIR]))})")


def _take_latest(client, experiment_id: str, chash: str) -> tuple[str, Path, str] | None:
    """``trainer.resume=auto``: claim the latest interrupted run of config hash ``chash``
    that no live process holds."""
    found = client.search_runs(
        [experiment_id], f"tags.`{tag.CONFIG_HASH}` = '{chash}'",
        order_by=["attributes.start_time DESC"], max_results=20)
    runs = [r for r in found if r.info.status in RESUMABLE and tag.RUN_DIR in r.data.tags]
    for run in runs:
        run_dir = Path(run.data.tags[tag.RUN_DIR])
        pid = rundir.claim(run_dir)
        if pid is None:
            return (run.info.run_id, run_dir,
                    f"the latest interrupted run of this config, {_why(run)}")
        log.info("trainer.resume=auto: not taking run %s: still running in process %s "
                 "(lock %s)", run.info.run_id, pid or "?", rundir.lock_path(run_dir))
    log.info("trainer.resume=auto: no interrupted run of this config%s; starting anew",
             " that no live process holds" if runs else "")
    return None


def _named_run(client, experiment_id: str, resume: str):
    """The run ``trainer.resume=<id>`` names, checked: of this experiment, interrupted, and
    a segkit training run."""
    try:
        run = client.get_run(resume)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"trainer.resume={resume}: no such MLflow run in the tracking "
                          "store: copy the id from the interrupted run's log or the UI"
                          ) from None
    if run.info.experiment_id != experiment_id:
        raise ConfigError(f"trainer.resume={resume} belongs to another experiment: set "
                          "tracking.experiment to the run's experiment")
    if run.info.status not in RESUMABLE:
        raise ConfigError(f"trainer.resume={resume}: the run is {run.info.status}, "
                          "nothing to resume: start a new run without trainer.resume")
    if tag.RUN_DIR not in run.data.tags:
        raise ConfigError(f"trainer.resume={resume}: the run has no segkit.run_dir tag "
                          "(not a segkit training run)")
    return run


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
    """The per-epoch Keras metrics a training run logged, as Keras' ``History.history``
    (under their ``train/``, ``val/`` keys, or the plain names older runs logged)."""
    client = mlflow.MlflowClient()
    history = {}
    for key in HISTORY_KEYS + tuple(f"val_{k}" for k in HISTORY_KEYS):
        points = (client.get_metric_history(run_id, to_mlflow(key))
                  or client.get_metric_history(run_id, key))
        points = sorted(points, key=lambda m: m.step)
        if points:
            history[key] = [m.value for m in points]
    return history


def log_model(model, sample: np.ndarray, registered_name: str | None = None) -> str:
    """Log ``model`` in Keras 3 format with an input/output signature; return its model URI.

    The logged copy is uncompiled (same layers and weights, no optimizer, loss or metrics),
    so it loads with plain Keras or ``mlflow.pyfunc`` where segkit is not installed.
    """
    import keras
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
