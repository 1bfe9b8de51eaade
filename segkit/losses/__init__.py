"""The loss registry: ``loss.name`` -> options (checked here) -> builder (imported on use).

Keras built-ins wherever Keras has the loss; the two it lacks are in ``custom.py``. This
module imports no Keras, so a config check through it is instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segkit.errors import ConfigError
from segkit.registry import Registry

if TYPE_CHECKING:
    import keras

LOSSES = Registry("loss")


# stacked decorators run bottom-up: listed here in reverse of the registry order
@LOSSES.register("dice", "segkit.losses.custom:dice")
@LOSSES.register("bce", "segkit.losses.custom:bce")
@dataclass(frozen=True)
class NoOptions:
    """A loss without options."""


@LOSSES.register("bce_dice", "segkit.losses.custom:BCEDice")
@dataclass(frozen=True)
class BCEDiceOptions:
    bce_weight: float
    dice_weight: float


@LOSSES.register("focal", "segkit.losses.custom:focal")
@dataclass(frozen=True)
class FocalOptions:
    gamma: float
    apply_class_balancing: bool
    alpha: float

    def check(self) -> None:
        if not 0 <= self.alpha <= 1 or self.gamma < 0:
            raise ConfigError(f"loss.alpha={self.alpha}, loss.gamma={self.gamma}: alpha must be "
                              "in [0, 1] and gamma >= 0")


@LOSSES.register("tversky", "segkit.losses.custom:Tversky")
@dataclass(frozen=True)
class TverskyOptions:
    alpha: float
    beta: float

    def check(self) -> None:
        if min(self.alpha, self.beta) < 0 or self.alpha + self.beta <= 0:
            raise ConfigError(f"loss.alpha={self.alpha}, loss.beta={self.beta}: both must be "
                              ">= 0 and not both 0 (0.5, 0.5 is the Dice loss)")


def check_loss(loss_cfg: Any) -> None:
    """Check a ``loss`` config node without building anything (no Keras import)."""
    LOSSES.options(loss_cfg)


def build_loss(loss_cfg: Any) -> keras.losses.Loss:
    """The loss named by ``loss_cfg.name`` (one of ``LOSSES``), its options checked."""
    loss: keras.losses.Loss = LOSSES.build(loss_cfg)
    return loss


def __getattr__(name: str) -> Any:
    """``from segkit.losses import BCEDice, Tversky`` imports Keras only then (PEP 562)."""
    if name in ("BCEDice", "Tversky"):
        from segkit.losses import custom  # the Keras classes: imported on first use only

        return getattr(custom, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LOSSES", "build_loss", "check_loss"]
