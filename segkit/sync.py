"""Tracking that outlives a tracking server going away, and ``segkit sync RUN_DIR``.

Training never waits on the server between epochs: an epoch's metrics the server does not
take are appended to ``<run_dir>/pending_metrics.jsonl`` and sent with the next epoch (or at
the end). The run folder holds everything else already, written before anything is sent:
``checkpoints/`` (best.keras, state.json, config.yaml), ``evaluation/`` (metrics.json and the
report) and ``mlflow_run.json`` (the run's id and tracking URI). When the server is still
gone at the end, :func:`sync_run` (``segkit sync RUN_DIR``) later logs what the server lacks
and ends the run FINISHED.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from segkit import tags as tag
from segkit import tracking
from segkit.errors import SegkitError, TrackingUnavailable
from segkit.fileio import write_text
from segkit.metric_names import internal, mlflow_keys, to_mlflow

log = logging.getLogger(__name__)

PENDING = "pending_metrics.jsonl"  # in the run folder: epoch metrics not yet on the server
RUN_INFO = "mlflow_run.json"  # in the run folder: the run's id and tracking URI
MAX_BATCH = 1000  # metrics per log_batch request (MLflow's limit)
FIT_METRICS = ("train_seconds", "epochs_run", "time_limit_hit")  # from state.json


def record_run(run_dir: Path, run_id: str, uri: str) -> None:
    """What ``segkit sync`` needs to find the run again: its id and tracking URI."""
    write_text(Path(run_dir) / RUN_INFO,
               json.dumps({"run_id": run_id, "tracking_uri": uri}, indent=1))


class Journal:
    """Epoch metrics the server has not taken yet: one JSON line per epoch, appended and
    synced to disk. Earlier lines are never rewritten; a kill during an append can only tear
    the line being written, which reading skips."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / PENDING

    def add(self, step: int, metrics: dict[str, float]) -> None:
        line = json.dumps({"step": step, "timestamp": int(time.time() * 1000),
                           "metrics": metrics})
        torn = self.path.is_file() and not self.path.read_bytes().endswith(b"\n")
        with open(self.path, "a") as f:
            f.write(("\n" if torn else "") + line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:  # torn by a kill during an append
                continue
        return found

    def send(self, run_id: str) -> int:
        """Log every pending epoch with its own step and time, then drop the journal; return
        the number of epochs sent. Raises, the journal untouched, when the server fails
        (sent again later: the store keeps one copy of an identical metric)."""
        from mlflow.entities import Metric

        entries = self.entries()
        if not entries:
            return 0
        metrics = [Metric(to_mlflow(k), float(v), e["timestamp"], e["step"])
                   for e in entries for k, v in e["metrics"].items()]
        client = mlflow.MlflowClient()
        for i in range(0, len(metrics), MAX_BATCH):
            client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH])
        self.path.unlink(missing_ok=True)
        return len(entries)


@dataclass
class Outbox:
    """The MLflow calls at the end of a run (model, evaluation), made so that a tracking
    server that stopped answering costs one bounded wait, not one per call: once it is found
    gone, the remaining calls are skipped and :meth:`finish` decides."""

    uri: str
    run_dir: Path
    run_id: str
    down: bool = False

    def _gone(self, what: str, exc: BaseException) -> bool:
        """Whether ``exc`` came from a server that does not answer (else a real error)."""
        if tracking.is_reachable(self.uri):
            return False
        if not self.down:
            log.warning("tracking server %s stopped answering while logging %s (%s): going "
                        "on; everything stays in %s", self.uri, what,
                        tracking.failure_reason(exc), self.run_dir)
        self.down = True
        return True

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        if self.down:
            return
        try:
            fn(*args)
        except Exception as exc:
            if not self._gone(what, exc):
                raise

    def evaluate(self, out_dir: Path, fn: Callable[..., dict[str, float]],
                 *args: Any) -> dict[str, float]:
        """``fn(*args)``, which writes ``out_dir/metrics.json`` and then logs: when only its
        logging failed for want of a server, the metrics it wrote."""
        started = time.time()
        try:
            return fn(*args)
        except Exception as exc:
            saved = Path(out_dir) / "metrics.json"
            fresh = saved.is_file() and saved.stat().st_mtime >= started - 1
            if not fresh or not self._gone("the evaluation", exc):
                raise
            return json.loads(saved.read_text())["metrics"]

    def finish(self) -> None:
        """After a loss of the server: when it answers again, log what it lacks now; else
        raise TrackingUnavailable (the one line naming ``segkit sync``)."""
        if not self.down:
            return
        if tracking.is_reachable(self.uri):
            try:
                done = complete(self.run_id, self.run_dir)
                log.info("tracking server %s is back: logged %s", self.uri, ", ".join(done))
                return
            except Exception as exc:
                if not self._gone("the rest of the run", exc):
                    raise
        raise TrackingUnavailable(self.uri, self.run_dir, self.run_id)


def _state(run_dir: Path) -> dict[str, Any]:
    from segkit.checkpoints import STATE

    try:
        return json.loads((Path(run_dir) / "checkpoints" / STATE).read_text())
    except (OSError, ValueError):
        return {}


def _metrics(run_dir: Path, state: dict[str, Any]) -> dict[str, float]:
    """The end-of-run metrics the run folder holds: the fit's (state.json) and the
    evaluation's (metrics.json), finite ones only (as the run logs them)."""
    found = {"train_seconds": state.get("train_seconds"), "epochs_run": state.get("epochs"),
             "time_limit_hit": float(bool(state.get("time_limit_hit")))}
    path = Path(run_dir) / "evaluation" / "metrics.json"
    if path.is_file():
        found.update(json.loads(path.read_text())["metrics"])
    return {k: float(v) for k, v in found.items()
            if isinstance(v, (int, float)) and np.isfinite(v)}


def _artifacts(run_id: str, path: str | None = None) -> set[str]:
    return {Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(run_id, path)}


def _log_files(run_id: str, run_dir: Path) -> int:
    """Evaluation files the run lacks (one by one), and tensorboard/ when it lacks it."""
    folder = Path(run_dir) / "evaluation"
    have = _artifacts(run_id, "evaluation")
    missing = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in have
                     and not p.name.startswith(".")) if folder.is_dir() else []
    for path in missing:
        mlflow.log_artifact(str(path), "evaluation")
    board = Path(run_dir) / "tensorboard"
    if board.is_dir() and "tensorboard" not in _artifacts(run_id):
        mlflow.log_artifacts(str(board), "tensorboard")
    return len(missing)


def _log_model(run_dir: Path, state: dict[str, Any]) -> str:
    """The model the run evaluated (checkpoints/best.keras; last.keras when checkpointing
    was off), logged as training logs it, unless state.json already names a logged one."""
    from omegaconf import OmegaConf

    from segkit.checkpoints import BEST, CONFIG, LAST, STATE

    folder = Path(run_dir) / "checkpoints"
    uri = state.get("model_uri")
    if not uri:
        import keras

        path = folder / BEST if (folder / BEST).is_file() else folder / LAST
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        sample = np.zeros((2, *model.input_shape[1:]), np.float32)
        registered = OmegaConf.load(folder / CONFIG).tracking.get("register_model")
        uri = tracking.log_model(model, sample, registered or None)
        write_text(folder / STATE, json.dumps({**state, "model_uri": uri}, indent=1))
    mlflow.set_tag(tag.MODEL_URI, uri)
    return str(uri)


def complete(run_id: str, run_dir: Path) -> list[str]:
    """Log to the active run ``run_id`` what its finished run folder holds and the server
    lacks: pending epoch metrics, end-of-run metrics, evaluation files, TensorBoard logs,
    the model. Returns what it logged, in words."""
    run = mlflow.MlflowClient().get_run(run_id)
    done = []
    epochs = Journal(run_dir).send(run_id)
    if epochs:
        done.append(f"{epochs} epoch(s) of metrics")
    state = _state(run_dir)
    logged = internal(run.data.metrics)
    missing = {k: v for k, v in _metrics(run_dir, state).items() if k not in logged}
    if missing:
        mlflow.log_metrics(mlflow_keys(missing))
        done.append(f"{len(missing)} end-of-run metric(s)")
    files = _log_files(run_id, run_dir)
    if files:
        done.append(f"{files} evaluation file(s)")
    if tag.MODEL_URI not in run.data.tags:
        done.append(f"the model ({_log_model(run_dir, state)})")
    return done or ["nothing (the server had it all)"]


def read_run_info(run_dir: Path) -> dict[str, str]:
    path = Path(run_dir) / RUN_INFO
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise SegkitError(f"{run_dir}: no readable {RUN_INFO}: give the folder of a segkit "
                          "training run (its segkit.run_dir tag)") from None


def unfinished(run_dir: Path) -> str | None:
    """Why the run folder cannot complete its run (None when it can)."""
    state = _state(run_dir)
    if not state.get("finished"):
        return f"training stopped after epoch {state.get('epochs', 0)}"
    if not (Path(run_dir) / "evaluation" / "metrics.json").is_file():
        return "training finished but the evaluation did not"
    return None


def sync_run(run_dir: Path, uri: str | None = None) -> list[str]:
    """``segkit sync RUN_DIR``: send the pending epoch metrics; when training and evaluation
    finished, log what the server lacks and end the run FINISHED (on a failure the run keeps
    its status, and the command can be run again). Returns the lines to print."""
    run_dir = Path(run_dir).resolve()
    info = read_run_info(run_dir)
    uri = uri or info["tracking_uri"]
    run_id = info["run_id"]
    tracking.bound_http(uri)
    if not tracking.is_reachable(uri):
        raise SegkitError(f"tracking server {uri} unreachable: start it (or give "
                          "--tracking-uri) and run segkit sync again")
    mlflow.set_tracking_uri(uri)
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise SegkitError(f"run {run_id} of {run_dir} is not in the tracking store {uri}: "
                          "give the store it was logged to with --tracking-uri") from None
    try:
        return _sync(run, run_dir, uri)
    except mlflow.exceptions.MlflowException as exc:
        if tracking.is_reachable(uri):
            raise
        raise SegkitError(f"tracking server {uri} stopped answering "
                          f"({tracking.failure_reason(exc)}): nothing is lost; run segkit "
                          "sync again once it answers") from None


def _sync(run: Any, run_dir: Path, uri: str) -> list[str]:
    run_id, error = run.info.run_id, run.data.tags.get(tag.ERROR)
    why = unfinished(run_dir)
    if why is not None:
        sent = f"run {run_id}: sent {Journal(run_dir).send(run_id)} epoch(s) of pending metrics"
        if error:  # e.g. a diverged run: nothing to finish
            return [f"{sent}; the run failed ({error}): nothing more to log"]
        return [f"{sent}; {why}: continue it with: python run.py trainer.resume={run_id}"]
    mlflow.start_run(run_id=run_id, log_system_metrics=False)
    try:
        done = complete(run_id, run_dir)
    except BaseException:
        tracking.detach_run()  # the run keeps its status: segkit sync can be run again
        raise
    mlflow.end_run("FINISHED")
    return [f"run {run_id} ({uri}): logged {', '.join(done)}; run FINISHED"]
