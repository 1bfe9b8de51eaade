"""Score a model on one split, batch by batch, holding only confusion counts in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from segkit.metrics import confusion_counts, per_image_scores, summarize


@dataclass
class Evaluation:
    """Metrics of one split at one threshold, and the per-image table behind them."""

    split: str
    threshold: float
    metrics: dict[str, float]
    names: list[str]
    counts: np.ndarray  # (N, 4): TP, FP, TN, FN per image

    def per_image(self) -> list[dict]:
        scores = per_image_scores(self.counts)
        tp, fp, _, fn = self.counts.T
        pixels = self.counts.sum(axis=1)
        return [
            {"name": name, "dice": float(scores["dice"][i]), "iou": float(scores["iou"][i]),
             "truth_fraction": float((tp[i] + fn[i]) / pixels[i]),
             "pred_fraction": float((tp[i] + fp[i]) / pixels[i])}
            for i, name in enumerate(self.names)
        ]


def predict_batches(model: keras.Model, images: np.ndarray, batch_size: int):
    """Yield (start index, float32 probabilities) per batch of uint8 images."""
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype(np.float32)
        yield start, np.asarray(model.predict_on_batch(batch), dtype=np.float32)


def evaluate(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    names: Sequence[str],
    *,
    split: str,
    threshold: float = 0.5,
    batch_size: int = 8,
) -> Evaluation:
    """Predict ``images`` (uint8) in batches and score against ``masks`` ({0,1})."""
    counts = np.zeros((len(images), 4), np.int64)
    for start, probs in predict_batches(model, images, batch_size):
        stop = start + len(probs)
        counts[start:stop] = confusion_counts(probs >= threshold, masks[start:stop] > 0)
    return Evaluation(split, threshold, summarize(counts), list(names), counts)
