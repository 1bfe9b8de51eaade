"""The metrics Keras shows every epoch: pooled pixel accuracy, Dice and IoU, and the per-image
Dice averaged over the epoch's images (``mean_image_dice``, the per-epoch counterpart of
evaluation's mDice, which segkit.metrics computes exactly; the search's pruner watches it)."""

from __future__ import annotations

import keras
from keras import ops


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


def image_dice(y_true, y_pred, threshold=0.5):
    """Foreground Dice of each image of a batch, shape (batch,); an image whose truth and
    prediction are both empty scores 1 (segkit.metrics' convention)."""
    truth = ops.cast(y_true > 0.5, "float32")
    pred = ops.cast(y_pred > threshold, "float32")
    axes = tuple(range(1, len(truth.shape)))
    overlap = ops.sum(truth * pred, axis=axes)
    total = ops.sum(truth, axis=axes) + ops.sum(pred, axis=axes)
    return ops.where(total > 0, 2.0 * overlap / ops.maximum(total, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="segkit")
class MeanImageDice(keras.metrics.MeanMetricWrapper):
    """Per-image Dice averaged over every image seen since the last reset (Keras' Mean
    does the averaging; only the per-image Dice is written here)."""

    def __init__(self, threshold=0.5, name="mean_image_dice", dtype=None, **kwargs):
        kwargs.pop("fn", None)
        super().__init__(fn=image_dice, name=name, dtype=dtype, threshold=threshold)
        self.threshold = threshold

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}


def training_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    """Pixel accuracy, foreground Dice and foreground IoU pooled over each epoch's pixels, and
    the per-image Dice averaged over its images."""
    return [
        keras.metrics.BinaryAccuracy(threshold=threshold, name="accuracy"),
        Dice(threshold=threshold, name="dice"),
        keras.metrics.BinaryIoU(target_class_ids=[1], threshold=threshold, name="iou"),
        MeanImageDice(threshold=threshold),
    ]
