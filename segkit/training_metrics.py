"""The pooled pixel metrics Keras shows every epoch (the per-image mDice of evaluation is
computed by segkit.metrics)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="segkit")
class Dice(keras.metrics.BinaryIoU):
    """Pixel-level foreground Dice over everything seen since the last reset.

    Reuses BinaryIoU's confusion-matrix accumulation: for the same TP/FP/FN,
    Dice = 2 IoU / (1 + IoU) exactly.
    """

    def __init__(self, threshold=0.5, name="dice", dtype=None, **kwargs):
        kwargs.pop("target_class_ids", None)
        super().__init__(target_class_ids=[1], threshold=threshold, name=name, dtype=dtype)

    def result(self):
        iou = super().result()
        return 2.0 * iou / (1.0 + iou)


def training_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    """Pixel accuracy, foreground Dice and foreground IoU, pooled over each epoch's pixels."""
    return [
        keras.metrics.BinaryAccuracy(threshold=threshold, name="accuracy"),
        Dice(threshold=threshold, name="dice"),
        keras.metrics.BinaryIoU(target_class_ids=[1], threshold=threshold, name="iou"),
    ]
