"""The optimizer registry: ``optimizer.name`` -> options (checked here) -> Keras optimizer.

The builders are Keras' own classes, imported when an optimizer is built (this module imports
no Keras, so a config check through it is instant). ``optimizer.lr`` becomes the optimizer's
``learning_rate``: a number, or the schedule ``segkit.schedules`` makes of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segkit.errors import ConfigError
from segkit.registry import Registry

if TYPE_CHECKING:
    import keras

    from segkit.schedules import Schedule

OPTIMIZERS = Registry("optimizer")


@dataclass(frozen=True)
class _Common:
    lr: float
    clipnorm: float | None

    def check(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr={self.lr} must be > 0")
        if self.clipnorm is not None and self.clipnorm <= 0:
            raise ConfigError(f"optimizer.clipnorm={self.clipnorm} must be > 0 or null")


@OPTIMIZERS.register("adam", "keras.optimizers:Adam")
@dataclass(frozen=True)
class AdamOptions(_Common):
    pass


@OPTIMIZERS.register("adamw", "keras.optimizers:AdamW")
@dataclass(frozen=True)
class AdamWOptions(_Common):
    weight_decay: float


@OPTIMIZERS.register("sgd", "keras.optimizers:SGD")
@dataclass(frozen=True)
class SGDOptions(_Common):
    momentum: float
    nesterov: bool


def check_optimizer(opt_cfg: Any) -> None:
    """Check an ``optimizer`` config node (no Keras import)."""
    OPTIMIZERS.options(opt_cfg)


def build_optimizer(opt_cfg: Any, schedule: Schedule | None = None, steps_per_epoch: int = 1,
                    epochs: int = 1, lr: float | None = None) -> keras.optimizers.Optimizer:
    """The optimizer of ``opt_cfg``, its learning rate ``lr`` (default ``opt_cfg.lr``)
    following ``schedule`` over ``epochs`` of ``steps_per_epoch`` steps; ``clipnorm`` only
    when set."""
    entry = OPTIMIZERS.get(opt_cfg.name)
    kwargs = dataclasses.asdict(OPTIMIZERS.options(opt_cfg))
    peak, clipnorm = kwargs.pop("lr"), kwargs.pop("clipnorm")
    if lr is not None:
        peak = lr
    if clipnorm:
        kwargs["clipnorm"] = clipnorm
    rate = peak if schedule is None else schedule.learning_rate(peak, steps_per_epoch, epochs)
    optimizer: keras.optimizers.Optimizer = entry.build_fn()(learning_rate=rate, **kwargs)
    return optimizer
