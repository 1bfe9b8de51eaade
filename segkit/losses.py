"""Losses, selected by ``cfg.loss.name``: Keras built-ins wherever Keras has them."""

from __future__ import annotations

import keras
from keras import ops

from segkit.config import ConfigError

# Per image: sum over (H, W, C) of each sample, then the mean over the batch.
_PER_IMAGE = (1, 2, 3)


@keras.saving.register_keras_serializable(package="segkit")
class BCEDice(keras.losses.Loss):
    """``bce_weight * BCE + dice_weight * (1 - per-image soft Dice)``.

    Hand-written only because Keras has no weighted sum of two losses as one Loss object.
    """

    def __init__(self, bce_weight=1.0, dice_weight=1.0, name="bce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        self._bce = keras.losses.BinaryCrossentropy()
        self._dice = keras.losses.Dice(axis=_PER_IMAGE)

    def call(self, y_true, y_pred):
        return (self.bce_weight * self._bce(y_true, y_pred)
                + self.dice_weight * self._dice(y_true, y_pred))

    def get_config(self):
        return {**super().get_config(), "bce_weight": self.bce_weight,
                "dice_weight": self.dice_weight}


@keras.saving.register_keras_serializable(package="segkit")
class Tversky(keras.losses.Loss):
    """``1 - TP / (TP + alpha * FP + beta * FN)`` per image (soft counts summed over H, W, C),
    averaged over the batch (Salehi et al., 2017); alpha = beta = 0.5 is the soft Dice loss.
    As with ``dice``, an image with an empty mask scores 1 whatever is predicted (no gradient).

    Hand-written because ``keras.losses.Tversky`` (Keras <= 3.15 at least) applies ``alpha``
    to the false negatives and ``beta`` to the false positives, the reverse of its docs and of
    the paper (fixed upstream by keras-team/keras#23333), so its meaning would change with
    the installed Keras version.
    """

    def __init__(self, alpha=0.3, beta=0.7, name="tversky", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.beta = alpha, beta

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        tp = ops.sum(y_true * y_pred, axis=_PER_IMAGE)
        fp = ops.sum((1 - y_true) * y_pred, axis=_PER_IMAGE)
        fn = ops.sum(y_true * (1 - y_pred), axis=_PER_IMAGE)
        return 1 - tp / (tp + self.alpha * fp + self.beta * fn + keras.config.epsilon())

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


def _tversky(c) -> Tversky:
    alpha, beta = c.get("alpha", 0.3), c.get("beta", 0.7)
    if min(alpha, beta) < 0 or alpha + beta <= 0:
        raise ConfigError(f"loss.alpha={alpha}, loss.beta={beta}: both must be >= 0 and not "
                          "both 0 (0.5, 0.5 is the Dice loss)")
    return Tversky(alpha, beta)


def _focal(c) -> keras.losses.Loss:
    alpha, gamma = c.get("alpha", 0.25), c.get("gamma", 2.0)
    if not 0 <= alpha <= 1 or gamma < 0:
        raise ConfigError(f"loss.alpha={alpha}, loss.gamma={gamma}: alpha must be in [0, 1] "
                          "and gamma >= 0")
    return keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=c.get("apply_class_balancing", False), alpha=alpha, gamma=gamma,
        name="focal")


# loss.name -> builder taking the loss config (conf/loss/<name>.yaml).
LOSSES = {
    "bce": lambda c: keras.losses.BinaryCrossentropy(name="bce"),
    "dice": lambda c: keras.losses.Dice(axis=_PER_IMAGE, name="dice_loss"),
    "bce_dice": lambda c: BCEDice(c.get("bce_weight", 1.0), c.get("dice_weight", 1.0)),
    "focal": _focal,
    "tversky": _tversky,
}


def build_loss(loss_cfg) -> keras.losses.Loss:
    """The loss named by ``loss_cfg.name`` (one of ``LOSSES``)."""
    if loss_cfg.name not in LOSSES:
        raise ConfigError(f"loss.name={loss_cfg.name!r} is unknown: use one of "
                          f"{', '.join(LOSSES)}")
    return LOSSES[loss_cfg.name](loss_cfg)
