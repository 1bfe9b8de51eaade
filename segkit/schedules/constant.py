"""``schedule=constant``: the optimizer's learning rate throughout (the reference design)."""

from __future__ import annotations

from typing import Any


class Constant:
    def learning_rate(self, lr: float, steps_per_epoch: int, epochs: int) -> float:
        return lr

    def callbacks(self, peak_lr: float, steps_per_epoch: int, max_minutes: float | None,
                  spent_seconds: float) -> list[Any]:
        return []
