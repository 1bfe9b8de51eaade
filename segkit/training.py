"""Precision policy, optimizer, callbacks and the Keras fit loop."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import tensorflow as tf

from segkit.errors import SegkitError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


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


def build_optimizer(opt_cfg) -> keras.optimizers.Optimizer:
    """Adam, AdamW or SGD (with momentum) from ``cfg.optimizer``."""
    common = {"learning_rate": opt_cfg.lr}
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


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` and ``learning_rate`` to each epoch's logs, so trackers record them."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def build_callbacks(cb_cfg, run_dir: Path) -> list[keras.callbacks.Callback]:
    """EarlyStopping, best-model ModelCheckpoint, ReduceLROnPlateau and TensorBoard, each
    switched on by its ``enabled`` flag; they all watch the validation carve-out."""
    callbacks: list[keras.callbacks.Callback] = [EpochTimer()]
    es = cb_cfg.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights, verbose=1))
    ck = cb_cfg.checkpoint
    if ck.enabled:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / "best.keras"), monitor=ck.monitor, mode=ck.mode,
            save_best_only=True, verbose=0))
    rl = cb_cfg.reduce_lr
    if rl.enabled:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=rl.monitor, mode=rl.mode, factor=rl.factor, patience=rl.patience,
            min_lr=rl.min_lr, verbose=1))
    tb = cb_cfg.tensorboard
    if tb.enabled:
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=str(run_dir / "tensorboard"), histogram_freq=0, write_graph=False,
            profile_batch=0))
    return callbacks
