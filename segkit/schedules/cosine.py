"""``schedule=cosine``: linear warmup to ``optimizer.lr``, then cosine decay to
``min_lr_ratio * lr``, over ``trainer.epochs`` (Keras' CosineDecay) or over the wall-clock
budget ``trainer.max_minutes`` (:class:`TimeCosine`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np


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
                 spent_seconds: float = 0.0, clock: Callable[[], float] = time.perf_counter):
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


class Cosine:
    def __init__(self, warmup_epochs: float, min_lr_ratio: float, over: str):
        self.warmup_epochs, self.min_lr_ratio, self.over = warmup_epochs, min_lr_ratio, over

    def learning_rate(self, lr: float, steps_per_epoch: int, epochs: int) -> Any:
        """Keras' CosineDecay with linear warmup from ``lr / 100`` (over time: ``lr``, which
        TimeCosine then sets before every step)."""
        if self.over == "time":
            return lr
        total = max(1, steps_per_epoch * epochs)
        warmup = min(total - 1, int(round(self.warmup_epochs * steps_per_epoch)))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 100 if warmup else lr, decay_steps=total - warmup,
            alpha=self.min_lr_ratio, warmup_target=lr if warmup else None,
            warmup_steps=warmup)

    def callbacks(self, peak_lr: float, steps_per_epoch: int, max_minutes: float | None,
                  spent_seconds: float) -> list[keras.callbacks.Callback]:
        if self.over != "time" or not max_minutes:  # the options' check guarantees the budget
            return []
        return [TimeCosine(peak_lr, self.min_lr_ratio,
                           int(round(self.warmup_epochs * steps_per_epoch)), max_minutes,
                           spent_seconds)]
