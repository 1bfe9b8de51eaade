"""Timing arithmetic: medians, steady-state step times, interleaving order, paired ratios,
and the Keras callback that records the end of every training step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def steady_step_s(ends: Sequence[float], warmup: int) -> float:
    """Seconds per step after the first ``warmup`` steps (which include iterator start-up).

    ``ends`` are the times at which steps ended; with ``warmup=0`` the first step's start is
    unknown, so the first interval starts at its end."""
    if len(ends) <= warmup:
        raise ValueError(f"{len(ends)} steps recorded, {warmup} of them warm-up: need more")
    first = ends[warmup - 1] if warmup else ends[0]
    return (ends[-1] - first) / (len(ends) - max(warmup, 1))


def rotate(items: Sequence, r: int) -> list:
    """``items`` started at position ``r`` (mod len): each repeat runs them in another order."""
    r %= len(items)
    return [*items[r:], *items[:r]]


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a[i] / b[i] for each repeat i: both ran in the same round, close in time."""
    return [x / y for x, y in zip(a, b, strict=True)]


def seconds(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def step_timer():
    """A Keras callback recording the end of every training step (synchronised: the loss is
    read back, so asynchronous devices finish the step before the clock is read)."""
    import keras
    import numpy as np

    class StepTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(np.asarray(logs["loss"]))
            self.ends.append(time.perf_counter())

    return StepTimer()


def logger() -> Callable[[str], None]:
    """``log(msg)`` printing the seconds since this call before each message."""
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    return log
