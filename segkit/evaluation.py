"""Score a model on one split, batch by batch: per-image confusion counts at a grid of
thresholds and class-wise score histograms are all that is kept in memory.

A model here is a predictor (``segkit.runtimes``: any runtime; or a ``segkit.ensemble``) or
a Keras model, which :func:`as_predictor` wraps; every probability map of segkit, evaluation
and ``segkit predict`` alike, comes from :func:`predict_probs`, the one place test-time
augmentation is done. Predictors take what the models take: float32 RGB in 0-255.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from segkit.boundary import boundary_from_probs, boundary_scores
from segkit.data.dataset import Sample, load_truth
from segkit.metrics import (
    THRESHOLDS,
    ScoreHistogram,
    per_image_scores,
    summarize,
    threshold_counts,
)
from segkit.runtimes import KerasPredictor, Predictor

if TYPE_CHECKING:
    import keras


@dataclass
class Evaluation:
    """Everything measured on one split; metrics at any grid threshold derive from it."""

    split: str
    names: list[str]
    thresholds: np.ndarray
    counts: np.ndarray  # (N, T, 4): TP, FP, TN, FN per image and threshold
    hist: ScoreHistogram
    threshold: float = 0.5  # the threshold that ``metrics`` reports
    # Per image at ``threshold`` and original resolution (segkit.boundary), when measured:
    boundary: np.ndarray | None = None  # (N, 2): HD95 (NaN: undefined), NSD
    _cache: dict = field(default_factory=dict, repr=False)

    def _index(self, threshold: float) -> int:
        i = int(np.argmin(np.abs(self.thresholds - threshold)))
        if not np.isclose(self.thresholds[i], threshold):
            raise ValueError(f"threshold {threshold} is not on the evaluation grid")
        return i

    def at(self, threshold: float) -> dict[str, float]:
        """All metrics at ``threshold`` (on the grid), with ROC AUC and average precision."""
        if threshold not in self._cache:
            _, _, auc = self.hist.roc()
            _, _, ap = self.hist.pr()
            self._cache[threshold] = {**summarize(self.counts[:, self._index(threshold)]),
                                      "auc": auc, "average_precision": ap}
        return self._cache[threshold]

    @property
    def metrics(self) -> dict[str, float]:
        """Metrics at ``threshold``, with the boundary metrics when measured: mean HD95 over
        the images where it is defined, how many it is undefined on, mean NSD."""
        out = dict(self.at(self.threshold))
        if self.boundary is not None:
            hd95, nsd = self.boundary[:, 0], self.boundary[:, 1]
            defined = np.isfinite(hd95)
            out.update({"mhd95": float(hd95[defined].mean()) if defined.any() else np.nan,
                        "hd95_undefined": float((~defined).sum()),
                        "mnsd": float(nsd.mean())})
        return out

    def curves(self) -> dict[str, np.ndarray]:
        """Per-image mean Dice and IoU at every grid threshold."""
        scores = [per_image_scores(self.counts[:, k]) for k in range(len(self.thresholds))]
        return {"mDice": np.array([s["dice"].mean() for s in scores]),
                "mIoU": np.array([s["iou"].mean() for s in scores])}

    def best_threshold(self) -> float:
        """The grid threshold with the highest mDice (ties: the one closest to 0.5)."""
        mdice = self.curves()["mDice"]
        best = np.flatnonzero(np.isclose(mdice, mdice.max(), rtol=0, atol=1e-12))
        return float(self.thresholds[best[np.argmin(np.abs(self.thresholds[best] - 0.5))]])

    def per_image(self, threshold: float | None = None) -> list[dict]:
        """name, Dice, IoU, truth and predicted foreground fractions, per image."""
        counts = self.counts[:, self._index(self.threshold if threshold is None else threshold)]
        scores = per_image_scores(counts)
        tp, fp, _, fn = counts.T
        pixels = counts.sum(axis=1)
        rows = [
            {"name": name, "dice": float(scores["dice"][i]), "iou": float(scores["iou"][i]),
             "truth_fraction": float((tp[i] + fn[i]) / pixels[i]),
             "pred_fraction": float((tp[i] + fp[i]) / pixels[i])}
            for i, name in enumerate(self.names)
        ]
        if self.boundary is not None and threshold in (None, self.threshold):
            for row, (hd95, nsd) in zip(rows, self.boundary, strict=True):
                row.update({"hd95": float(hd95), "nsd": float(nsd)})
        return rows


def as_predictor(model: keras.Model | Predictor) -> Predictor:
    """``model`` itself when it is a predictor; a Keras model (anything with Keras'
    ``predict_on_batch``) wrapped as one, runtime tf."""
    if hasattr(model, "predict_on_batch") and not hasattr(model, "input_size"):
        return KerasPredictor(model)
    return model


FLIPS = ((1,), (2,), (1, 2))  # test-time augmentation: horizontal, vertical, both


def predict_probs(predictor: Predictor, images: np.ndarray, tta: bool = False) -> np.ndarray:
    """Float32 probabilities (B, H, W) of a batch of uint8 images (B, H, W, 3).

    ``tta``: test-time augmentation, the mean of the predictions on the image and on its
    horizontal, vertical and double flips (each flipped back): 4x the prediction cost.
    """
    batch = np.asarray(images, dtype=np.float32)
    total = np.array(predictor(batch), dtype=np.float32)[..., 0]  # a copy: summed into
    if not tta:
        return total
    for axes in FLIPS:
        total += np.flip(np.asarray(predictor(np.flip(batch, axes)), np.float32)[..., 0], axes)
    return total / (len(FLIPS) + 1)


def predict_batches(model: keras.Model | Predictor, images: np.ndarray, batch_size: int,
                    tta: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start index, float32 probabilities (B, H, W)) per batch of uint8 images
    (:func:`predict_probs` on each batch of ``batch_size``)."""
    predictor = as_predictor(model)
    for start in range(0, len(images), batch_size):
        yield start, predict_probs(predictor, images[start:start + batch_size], tta)


def resize_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one (H, W) probability map to (height, width) = ``size``."""
    image = Image.fromarray(probs.astype(np.float32), mode="F")
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def grid(threshold: float) -> np.ndarray:
    """The curve thresholds plus ``threshold`` itself."""
    return np.unique(np.round(np.append(THRESHOLDS, threshold), 6))


def evaluate(model: keras.Model | Predictor, images: np.ndarray, masks: np.ndarray,
             names: Sequence[str], *, split: str, threshold: float = 0.5, batch_size: int = 8,
             bins: int = 1000, originals: Sequence[Sample] | None = None, tta: bool = False,
             boundary: tuple[Sequence[Sample], float] | None = None) -> Evaluation:
    """Predict ``images`` (uint8, model size) in batches with ``model`` (a predictor or a
    Keras model) and score them.

    Against ``masks`` ({0,1}, model size) by default; with ``originals`` (the samples of
    the same images), each probability map is resized back to its image's own resolution
    and scored against the original mask, which is what a clinician would see.
    ``boundary`` = (the samples, NSD tolerance in pixels): also HD95 and NSD per image at
    ``threshold``, at each image's original resolution (segkit.boundary).
    """
    thresholds = grid(threshold)
    hist = ScoreHistogram(bins)
    counts = np.zeros((len(images), len(thresholds), 4), np.int64)
    edges = np.full((len(images), 2), np.nan)
    # The boundary metrics of a batch run on a thread per core (Pillow's decode and resize,
    # NumPy's large array operations and SciPy's k-d tree release the GIL), one batch at a
    # time, so memory stays that of one batch.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start, probs in predict_batches(model, images, batch_size, tta):
            jobs = []
            for i, prob in enumerate(probs, start):
                original = originals[i] if originals is not None else None
                prob, truth = _at_scoring_size(prob, masks[i], original)
                counts[i] = threshold_counts(prob[None], truth[None], thresholds)[0]
                hist.update(prob, truth)
                if boundary is not None:  # the original mask, when already read
                    read = truth if original is not None else None
                    jobs.append((i, pool.submit(_boundary_at_original, prob, boundary[0][i],
                                                threshold, boundary[1], read)))
            for i, job in jobs:
                edges[i] = job.result()
    return Evaluation(split, list(names), thresholds, counts, hist, threshold,
                      edges if boundary is not None else None)


def _at_scoring_size(prob: np.ndarray, mask: np.ndarray, original: Sample | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, boolean truth) at the model's size, or at the image's own resolution
    when its ``original`` sample is given (the original mask read, the probabilities resized)."""
    if original is None:
        return prob, mask[..., 0] > 0
    truth = load_truth(original.mask)
    return resize_probs(prob, truth.shape), truth


def _boundary_at_original(prob: np.ndarray, sample: Sample, threshold: float, tau: float,
                          truth: np.ndarray | None) -> tuple[float, float]:
    """HD95 and NSD of one prediction at its image's original resolution (``truth``: the
    original mask when already read)."""
    if truth is None:  # resizes only the box that can hold foreground (same values)
        return boundary_from_probs(prob, load_truth(sample.mask), threshold, tau)
    return boundary_scores(prob >= threshold, truth, tau)
