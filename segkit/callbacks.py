"""The Keras callbacks of a training run, from ``cfg.callbacks``, ``cfg.schedule`` and the
trainer's budget: a guard that stops at a non-finite loss, EarlyStopping, the schedule's
callbacks, TensorBoard, a wall-clock TimeLimit, any ``extra`` ones, and last the
TrainingState that saves everything a resume needs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np

from segkit import metric_names, tracking
from segkit.checkpoints import BEST, ES_BEST, TrainingState
from segkit.schedules import build_schedule
from segkit.sync import Journal
from segkit.targets import instantiate_all

log = logging.getLogger(__name__)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` and ``learning_rate`` to each epoch's logs for the trackers."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))


class TimeLimit(keras.callbacks.Callback):
    """Stops training at an epoch boundary once another epoch would exceed ``minutes``.

    Hand-written: Keras has no wall-clock stopping callback. ``stopped_early`` tells
    whether the limit, rather than the epoch count, ended training.
    """

    def __init__(self, minutes: float, spent_seconds: float = 0.0):
        super().__init__()
        self.seconds = minutes * 60.0
        self.spent = spent_seconds  # training time before an interruption counts too
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self._last = time.perf_counter()
        self._start = self._last - self.spent

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        epoch_seconds, self._last = now - self._last, now
        if now - self._start + epoch_seconds > self.seconds:
            self.stopped_early = True
            self.model.stop_training = True
            log.info("trainer.max_minutes=%.4g reached after epoch %d: stopping",
                     self.seconds / 60, epoch + 1)


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss: ``loss`` after every batch, every
    ``*loss`` of the epoch's logs (``val_loss`` too) at its end; ``reason`` says where.
    segkit.experiment.fit then raises DivergedError, so the run ends FAILED with the reason.

    Hand-written rather than keras.callbacks.TerminateOnNaN, which stops silently (the run
    would go on to log and evaluate a NaN model and report a finite score), ignores inf and
    the validation loss. Free: Keras' callback list turns each batch's logs into Python
    floats anyway (the TensorFlow backend has no asynchronous callbacks). The custom
    multi-worker loop passes no batch logs: there it stops at the epoch's end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None
        self._epoch = 0

    def _stop(self, key: str, value: float, where: str) -> None:
        if self.reason is None:
            self.reason = f"{key} is {value} {where}"
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is not None and not np.isfinite(value):
            self._stop("loss", float(value), f"at epoch {self._epoch + 1} batch {batch + 1}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and np.ndim(value) == 0 and not np.isfinite(value):
                self._stop(key, float(value), f"at the end of epoch {epoch + 1}")


class MLflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's Keras logs as MLflow metrics (``train/loss``, ``val/dice``: see
    segkit.metric_names), step = the epoch number counted from 1 as on the console and in the
    history figure, and never raises:
    metrics the tracking server does not take wait in ``<run_dir>/pending_metrics.jsonl``
    (segkit.sync.Journal) and go with the next epoch the server answers /health for (or at
    the end of the run, or with ``segkit sync``). Training never waits on the server.

    Hand-written rather than ``mlflow.keras.autolog``: autolog also logs params and models
    under its own names, which would duplicate and conflict with what segkit logs.
    """

    def __init__(self, run_dir: Path):
        super().__init__()
        self.journal = Journal(run_dir)
        self.offline = False  # warned once per outage

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()
                   if np.isscalar(v) or np.ndim(v) == 0}
        try:
            self._send_backlog()
            mlflow.log_metrics(metric_names.mlflow_keys(metrics), step=epoch + 1)
        except Exception as exc:
            self._keep(epoch, metrics, exc)

    def _send_backlog(self) -> None:
        if not self.journal.path.is_file():
            return
        uri = mlflow.get_tracking_uri()
        if not tracking.is_reachable(uri, timeout=2):
            raise ConnectionError(f"tracking server {uri} does not answer /health")
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("no active MLflow run to send the pending metrics to")
        sent = self.journal.send(active.info.run_id)
        self.offline = False
        log.info("tracking server %s answers again: sent %d pending epoch(s)", uri, sent)

    def _keep(self, epoch: int, metrics: dict[str, float], exc: Exception) -> None:
        first, self.offline = not self.offline, True
        try:
            self.journal.add(epoch + 1, metrics)
        except OSError as disk:
            log.warning("epoch %d metrics lost: not logged (%s), not kept (%s)", epoch + 1,
                        tracking.failure_reason(exc), disk)
            return
        if first:
            log.warning("tracking server unreachable at epoch %d (%s): training goes on; "
                        "the metrics wait in %s", epoch + 1, tracking.failure_reason(exc),
                        self.journal.path)


def build_callbacks(cb_cfg: Any, run_dir: Path, max_minutes: float | None = None,
                    restored: dict | None = None, schedule_cfg: Any = None,
                    peak_lr: float = 1e-3, steps_per_epoch: int = 1
                    ) -> list[keras.callbacks.Callback]:
    """A DivergenceGuard; EarlyStopping and TensorBoard, each switched on by its ``enabled``
    flag (they watch the validation carve-out), the schedule's callbacks (ReduceLROnPlateau,
    the wall-clock cosine from ``peak_lr`` over ``max_minutes``), a TimeLimit when
    ``max_minutes`` is set, any ``extra`` callbacks, and last the TrainingState that saves
    the best model (``checkpoint``) and everything a resume needs at every epoch end.
    ``restored`` is the state.json of an interrupted run being resumed."""
    restored = restored or {}
    spent = restored.get("train_seconds", 0.0)
    schedule = build_schedule(schedule_cfg or {"name": "constant"}, max_minutes)
    steering = schedule.callbacks(peak_lr, steps_per_epoch, max_minutes, spent)
    # A per-step rate setter runs first; ReduceLROnPlateau after EarlyStopping, as before.
    callbacks: list[keras.callbacks.Callback] = [
        *[cb for cb in steering if not isinstance(cb, keras.callbacks.ReduceLROnPlateau)],
        EpochTimer(), DivergenceGuard()]
    if max_minutes:
        callbacks.append(TimeLimit(max_minutes, spent))
    es = cb_cfg.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(  # its restore: see _training_state
            monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=False, verbose=1))
    callbacks.extend(cb for cb in steering if isinstance(cb, keras.callbacks.ReduceLROnPlateau))
    if cb_cfg.tensorboard.enabled:
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=str(run_dir / "tensorboard"), histogram_freq=0, write_graph=False,
            profile_batch=0))
    callbacks.extend(instantiate_all(cb_cfg.extra or [], "callbacks.extra"))
    callbacks.append(_training_state(cb_cfg, run_dir, callbacks, restored or None))
    return callbacks


def _training_state(cb_cfg: Any, run_dir: Path, callbacks: list[keras.callbacks.Callback],
                    restored: dict | None) -> TrainingState:
    """The TrainingState, keeping on disk the best epoch that is evaluated after training:
    ``best.keras`` by the checkpoint's monitor, or, with the checkpoint off and
    ``early_stopping.restore_best_weights``, early stopping's best under a name of its own.
    EarlyStopping's own restore keeps its best weights in memory, lost on a resume (it then
    restores and names the first resumed epoch), so it is always off."""
    ck, es = cb_cfg.checkpoint, cb_cfg.early_stopping
    es_restore = bool(es.enabled and es.restore_best_weights and not ck.enabled)
    monitor, mode = (es.monitor, es.mode) if es_restore else (ck.monitor, ck.mode)
    return TrainingState(run_dir / "checkpoints", monitor, mode,
                         save_best=bool(ck.enabled) or es_restore, callbacks=callbacks,
                         restored=restored, best_name=ES_BEST if es_restore else BEST)
