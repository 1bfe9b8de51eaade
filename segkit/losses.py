"""Losses, selected by ``cfg.loss.name``: Keras built-ins wherever Keras has them."""

from __future__ import annotations

import keras

from segkit.errors import SegkitError

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


def build_loss(loss_cfg) -> keras.losses.Loss:
    """The loss named by ``loss_cfg.name`` (bce | dice | bce_dice)."""
    name = loss_cfg.name
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "dice":
        return keras.losses.Dice(axis=_PER_IMAGE, name="dice_loss")
    if name == "bce_dice":
        return BCEDice(loss_cfg.get("bce_weight", 1.0), loss_cfg.get("dice_weight", 1.0))
    raise SegkitError(f"loss.name={name!r} is unknown: use bce, dice or bce_dice")
