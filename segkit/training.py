"""Precision policy, optimizer, callbacks and the Keras fit loop."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf

from segkit.checkpoints import TrainingState
from segkit.config import PRECISIONS
from segkit.errors import SegkitError
from segkit.targets import instantiate_all

log = logging.getLogger(__name__)


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has native bf16 matrix units (AMX-BF16 or AVX512-BF16)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve_precision(name: str) -> str:
    """The Keras dtype policy for ``trainer.precision``.

    ``auto`` picks mixed_bfloat16 where the hardware computes bf16 natively (an Ampere or
    newer GPU, or a CPU with AMX/AVX512-BF16), else float32. bf16 needs no loss scaling.
    """
    if name not in PRECISIONS:
        raise SegkitError(f"trainer.precision={name!r} is unknown: use one of {PRECISIONS}")
    if name != "auto":
        return name
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if tuple(cc) >= (8, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


SCHEDULES = ("constant", "cosine", "plateau")


def learning_rate(lr: float, schedule_cfg=None, steps_per_epoch: int = 1, epochs: int = 1):
    """``lr`` itself (constant; plateau and cosine over time: a callback sets it), or Keras'
    CosineDecay with linear warmup over ``warmup_epochs`` down to ``min_lr_ratio * lr`` at the
    last step."""
    name = schedule_cfg.name if schedule_cfg is not None else "constant"
    if name not in SCHEDULES:
        raise SegkitError(f"schedule.name={name!r} is unknown: use one of {SCHEDULES}")
    if name != "cosine" or schedule_cfg.get("over", "epochs") == "time":
        return lr
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(round(schedule_cfg.warmup_epochs * steps_per_epoch)))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr / 100 if warmup else lr, decay_steps=total - warmup,
        alpha=schedule_cfg.min_lr_ratio, warmup_target=lr if warmup else None,
        warmup_steps=warmup)


def build_optimizer(opt_cfg, schedule_cfg=None, steps_per_epoch: int = 1, epochs: int = 1
                    ) -> keras.optimizers.Optimizer:
    """Adam, AdamW or SGD (with momentum) from ``cfg.optimizer``, its learning rate following
    ``cfg.schedule`` over ``epochs`` of ``steps_per_epoch`` steps."""
    common = {"learning_rate": learning_rate(opt_cfg.lr, schedule_cfg, steps_per_epoch, epochs)}
    if opt_cfg.get("clipnorm"):
        common["clipnorm"] = opt_cfg.clipnorm
    name = opt_cfg.name
    if name == "adam":
        return keras.optimizers.Adam(**common)
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=opt_cfg.weight_decay, **common)
    if name == "sgd":
        return keras.optimizers.SGD(momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov,
                                    **common)
    raise SegkitError(f"optimizer.name={name!r} is unknown: use adam, adamw or sgd")


@keras.saving.register_keras_serializable(package="segkit")
class Dice(keras.metrics.BinaryIoU):
    """Pixel-level foreground Dice over everything seen since the last reset.

    Reuses BinaryIoU's confusion-matrix accumulation: for the same TP/FP/FN,
    Dice = 2 IoU / (1 + IoU) exactly.
    """

    def __init__(self, threshold=0.5, name="dice", dtype=None, **kwargs):
        kwargs.pop("target_class_ids", None)
        super().__init__(target_class_ids=[1], threshold=threshold, name=name, dtype=dtype)

    def result(self):
        iou = super().result()
        return 2.0 * iou / (1.0 + iou)


def training_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    """Pixel accuracy, foreground Dice and foreground IoU, pooled over each epoch's pixels
    (the per-image mDice of evaluation is computed by segkit.metrics)."""
    return [
        keras.metrics.BinaryAccuracy(threshold=threshold, name="accuracy"),
        Dice(threshold=threshold, name="dice"),
        keras.metrics.BinaryIoU(target_class_ids=[1], threshold=threshold, name="iou"),
    ]


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


class TimeCosine(keras.callbacks.Callback):
    """Cosine decay over a wall-clock budget (``schedule.over=time``) instead of an epoch
    count: before every step the learning rate is set to
    ``min + (peak - min) * (1 + cos(pi * f)) / 2`` with ``f`` the share of ``minutes``
    spent so far (earlier training of a resumed run included), times a linear warmup over
    the first ``warmup_steps`` steps. With ``trainer.max_minutes`` as the budget, the decay
    ends where TimeLimit stops training however fast or slow the machine runs, where an
    epoch-based schedule would be cut mid-way on a slow (shared) machine or end early on a
    fast one (budgeted training, Li et al. 2020).

    Hand-written: Keras' schedules are functions of the step count only.
    """

    def __init__(self, peak: float, min_ratio: float, warmup_steps: int, minutes: float,
                 spent_seconds: float = 0.0, clock=time.perf_counter):
        super().__init__()
        self.peak, self.min = peak, peak * min_ratio
        self.warmup, self.seconds, self.spent = warmup_steps, minutes * 60.0, spent_seconds
        self.clock = clock

    def rate(self, step: int, elapsed: float) -> float:
        f = min(1.0, max(0.0, elapsed / self.seconds))
        lr = self.min + (self.peak - self.min) * 0.5 * (1.0 + np.cos(np.pi * f))
        if step < self.warmup:
            lr *= (step + 1) / self.warmup
        return float(lr)

    def on_train_begin(self, logs=None):
        self._start = self.clock() - self.spent
        self._step = int(self.model.optimizer.iterations.numpy())  # > 0 on a resumed run

    def on_train_batch_begin(self, batch, logs=None):
        # counted here rather than read from the optimizer: no device read in every step
        self.model.optimizer.learning_rate = self.rate(self._step, self.clock() - self._start)
        self._step += 1


def build_callbacks(cb_cfg, run_dir: Path, max_minutes: float | None = None,
                    restored: dict | None = None, schedule_cfg=None, peak_lr: float = 1e-3,
                    steps_per_epoch: int = 1) -> list[keras.callbacks.Callback]:
    """EarlyStopping and TensorBoard, each switched on by its ``enabled`` flag (they watch
    the validation carve-out), ReduceLROnPlateau for ``schedule=plateau``, a wall-clock
    TimeLimit when
    ``max_minutes`` is set, any ``extra`` callbacks, and last the TrainingState that saves
    the best model (``checkpoint``) and everything a resume needs at every epoch end.
    ``restored`` is the state.json of an interrupted run being resumed. ``schedule=cosine``
    with ``over: time`` gets a TimeCosine from ``peak_lr`` over ``max_minutes``."""
    restored = restored or {}
    callbacks: list[keras.callbacks.Callback] = [EpochTimer()]
    spent = restored.get("train_seconds", 0.0)
    if max_minutes:
        callbacks.append(TimeLimit(max_minutes, spent))
    sc = schedule_cfg
    if sc is not None and sc.name == "cosine" and sc.get("over", "epochs") == "time":
        if not max_minutes:
            raise SegkitError("schedule.over=time needs trainer.max_minutes (the budget the "
                              "cosine decays over): set it, or use schedule.over=epochs")
        callbacks.insert(0, TimeCosine(peak_lr, sc.min_lr_ratio,
                                       int(round(sc.warmup_epochs * steps_per_epoch)),
                                       max_minutes, spent))
    es = cb_cfg.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights, verbose=1))
    rl = schedule_cfg
    if rl is not None and rl.name == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=rl.monitor, mode=rl.mode, factor=rl.factor, patience=rl.patience,
            min_lr=rl.min_lr, verbose=1))
    tb = cb_cfg.tensorboard
    if tb.enabled:
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=str(run_dir / "tensorboard"), histogram_freq=0, write_graph=False,
            profile_batch=0))
    callbacks.extend(instantiate_all(cb_cfg.get("extra") or [], "callbacks.extra"))
    ck = cb_cfg.checkpoint
    callbacks.append(TrainingState(run_dir / "checkpoints", ck.monitor, ck.mode,
                                   save_best=ck.enabled, callbacks=callbacks,
                                   restored=restored or None))
    return callbacks


class MLflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's Keras logs as MLflow metrics, step = epoch index.

    Hand-written rather than ``mlflow.keras.autolog``: autolog also logs params and models
    under its own names, which would duplicate and conflict with what segkit logs.
    """

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()
                   if np.isscalar(v) or np.ndim(v) == 0}
        mlflow.log_metrics(metrics, step=epoch)
