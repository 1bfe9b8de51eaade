"""The losses Keras lacks (BCEDice, Tversky) and the builders ``segkit.losses.LOSSES`` names.

The builders take the options the registry checked; none checks anything itself."""

from __future__ import annotations

import keras
from keras import ops

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


def bce() -> keras.losses.Loss:
    return keras.losses.BinaryCrossentropy(name="bce")


def dice() -> keras.losses.Loss:
    return keras.losses.Dice(axis=_PER_IMAGE, name="dice_loss")


def focal(gamma: float, apply_class_balancing: bool, alpha: float) -> keras.losses.Loss:
    """Binary focal cross-entropy (Lin et al. 2017), Keras' own."""
    return keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=apply_class_balancing, alpha=alpha, gamma=gamma, name="focal")
