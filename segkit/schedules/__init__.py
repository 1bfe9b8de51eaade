"""The learning-rate schedule registry: ``schedule.name`` -> options (checked here) ->
schedule (imported on use).

A schedule gives the optimizer its ``learning_rate`` (a number or a Keras schedule) and the
callbacks that steer it during training (ReduceLROnPlateau, the wall-clock cosine). This
module imports no Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from segkit.errors import ConfigError
from segkit.registry import Registry

SCHEDULES = Registry("schedule")


class Schedule(Protocol):
    """What every registered schedule builds."""

    def learning_rate(self, lr: float, steps_per_epoch: int, epochs: int) -> Any:
        """The optimizer's ``learning_rate``: ``lr`` itself or a Keras schedule of it."""

    def callbacks(self, peak_lr: float, steps_per_epoch: int, max_minutes: float | None,
                  spent_seconds: float) -> list[Any]:
        """Keras callbacks that set the rate during training."""


@SCHEDULES.register("constant", "segkit.schedules.constant:Constant")
@dataclass(frozen=True)
class ConstantOptions:
    """The optimizer's learning rate throughout."""


@SCHEDULES.register("cosine", "segkit.schedules.cosine:Cosine")
@dataclass(frozen=True)
class CosineOptions:
    """Linear warmup, then cosine decay over the epochs or over the wall-clock budget."""

    warmup_epochs: float
    min_lr_ratio: float
    over: str

    def check(self, max_minutes: float | None = None) -> None:
        if self.warmup_epochs < 0:
            raise ConfigError(f"schedule.warmup_epochs={self.warmup_epochs} must be >= 0")
        if self.over not in ("epochs", "time"):
            raise ConfigError(f"schedule.over={self.over!r} is unknown: use epochs or time")
        if self.over == "time" and not max_minutes:
            raise ConfigError("schedule.over=time needs trainer.max_minutes (the budget the "
                              "cosine decays over): set it, or use schedule.over=epochs")
        if not 0 <= self.min_lr_ratio < 1:
            raise ConfigError(f"schedule.min_lr_ratio={self.min_lr_ratio} must be in [0, 1)")


@SCHEDULES.register("plateau", "segkit.schedules.plateau:Plateau")
@dataclass(frozen=True)
class PlateauOptions:
    """Keras' ReduceLROnPlateau on a validation metric."""

    monitor: str
    mode: str
    factor: float
    patience: int
    min_lr: float

    def check(self) -> None:
        if not 0 < self.factor < 1:
            raise ConfigError(f"schedule.factor={self.factor} must be in (0, 1)")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"schedule.mode={self.mode!r} is unknown: use min or max")


def check_schedule(schedule_cfg: Any, max_minutes: float | None) -> None:
    """Check a ``schedule`` config node against the trainer's budget (no Keras import)."""
    SCHEDULES.options(schedule_cfg, max_minutes=max_minutes)


def build_schedule(schedule_cfg: Any, max_minutes: float | None = None) -> Schedule:
    """The schedule of ``schedule_cfg``, its options checked."""
    return SCHEDULES.build(schedule_cfg, max_minutes=max_minutes)


__all__ = ["SCHEDULES", "Schedule", "build_schedule", "check_schedule"]
