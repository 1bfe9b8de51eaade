"""``schedule=plateau``: Keras' ReduceLROnPlateau on a validation metric."""

from __future__ import annotations

import keras


class Plateau:
    def __init__(self, monitor: str, mode: str, factor: float, patience: int, min_lr: float):
        self.monitor, self.mode, self.factor = monitor, mode, factor
        self.patience, self.min_lr = patience, min_lr

    def learning_rate(self, lr: float, steps_per_epoch: int, epochs: int) -> float:
        return lr  # the callback lowers it

    def callbacks(self, peak_lr: float, steps_per_epoch: int, max_minutes: float | None,
                  spent_seconds: float) -> list[keras.callbacks.Callback]:
        return [keras.callbacks.ReduceLROnPlateau(
            monitor=self.monitor, mode=self.mode, factor=self.factor, patience=self.patience,
            min_lr=self.min_lr, verbose=1)]
