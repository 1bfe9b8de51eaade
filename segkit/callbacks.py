"""The Keras callbacks of a training run, from ``cfg.callbacks``, ``cfg.schedule`` and the
trainer's budget: EarlyStopping, the schedule's callbacks, TensorBoard, a wall-clock
TimeLimit, any ``extra`` ones, and last the TrainingState that saves everything a resume
needs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np

from segkit.checkpoints import TrainingState
from segkit.schedules import build_schedule
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


class MLflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's Keras logs as MLflow metrics, step = epoch index.

    Hand-written rather than ``mlflow.keras.autolog``: autolog also logs params and models
    under its own names, which would duplicate and conflict with what segkit logs.
    """

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()
                   if np.isscalar(v) or np.ndim(v) == 0}
        mlflow.log_metrics(metrics, step=epoch)


def build_callbacks(cb_cfg: Any, run_dir: Path, max_minutes: float | None = None,
                    restored: dict | None = None, schedule_cfg: Any = None,
                    peak_lr: float = 1e-3, steps_per_epoch: int = 1
                    ) -> list[keras.callbacks.Callback]:
    """EarlyStopping and TensorBoard, each switched on by its ``enabled`` flag (they watch
    the validation carve-out), the schedule's callbacks (ReduceLROnPlateau, the wall-clock
    cosine from ``peak_lr`` over ``max_minutes``), a TimeLimit when ``max_minutes`` is set,
    any ``extra`` callbacks, and last the TrainingState that saves the best model
    (``checkpoint``) and everything a resume needs at every epoch end. ``restored`` is the
    state.json of an interrupted run being resumed."""
    restored = restored or {}
    spent = restored.get("train_seconds", 0.0)
    schedule = build_schedule(schedule_cfg or {"name": "constant"}, max_minutes)
    steering = schedule.callbacks(peak_lr, steps_per_epoch, max_minutes, spent)
    # A per-step rate setter runs first; ReduceLROnPlateau after EarlyStopping, as before.
    callbacks: list[keras.callbacks.Callback] = [
        *[cb for cb in steering if not isinstance(cb, keras.callbacks.ReduceLROnPlateau)],
        EpochTimer()]
    if max_minutes:
        callbacks.append(TimeLimit(max_minutes, spent))
    es = cb_cfg.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights, verbose=1))
    callbacks.extend(cb for cb in steering if isinstance(cb, keras.callbacks.ReduceLROnPlateau))
    if cb_cfg.tensorboard.enabled:
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=str(run_dir / "tensorboard"), histogram_freq=0, write_graph=False,
            profile_batch=0))
    callbacks.extend(instantiate_all(cb_cfg.extra or [], "callbacks.extra"))
    ck = cb_cfg.checkpoint
    callbacks.append(TrainingState(run_dir / "checkpoints", ck.monitor, ck.mode,
                                   save_best=ck.enabled, callbacks=callbacks,
                                   restored=restored or None))
    return callbacks
