"""Exact segmentation scores in NumPy (the Keras training metrics live in segkit.training).

Conventions (documented in the README):
- Foreground IoU and Dice of a binary prediction P against truth T:
  IoU = |P&T| / |P|T|, Dice = 2|P&T| / (|P| + |T|).
- Per image, then averaged over images (mDice, mIoU), as the field's papers report.
- Empty truth: an image with no foreground scores 1 when the prediction is empty too and
  0 when anything is predicted (the "empty is a correct answer" convention; MONAI's
  ``ignore_empty=False``). Kvasir-SEG has no empty mask, other datasets do.
- Undefined metrics are NaN, never a made-up number (as MONAI returns NaN for an undefined
  confusion-matrix metric): recall (sensitivity), ROC AUC and average precision are
  undefined when there is no positive pixel in the truth (a split whose masks are all
  empty). Dice, IoU, F2 and precision keep the empty-is-correct convention (1 when neither
  truth nor prediction has a foreground pixel), specificity is 1 when there is no negative
  pixel. Callers leave NaN metrics out of their logs (segkit.report) and show them as
  undefined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Thresholds of the IoU/Dice-vs-threshold curves and of threshold selection.
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image (TP, FP, TN, FN) for boolean arrays of shape (N, ...): int64 array (N, 4)."""
    pred = pred.reshape(len(pred), -1).astype(bool)
    truth = truth.reshape(len(truth), -1).astype(bool)
    tp = np.count_nonzero(pred & truth, axis=1)
    fp = np.count_nonzero(pred & ~truth, axis=1)
    fn = np.count_nonzero(~pred & truth, axis=1)
    tn = truth.shape[1] - tp - fp - fn
    return np.stack([tp, fp, tn, fn], axis=1).astype(np.int64)


def _ratio(num: float | np.ndarray, den: float | np.ndarray, empty: float | np.ndarray
           ) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(den > 0, out, empty)


def per_image_scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image foreground Dice and IoU from (N, 4) counts; empty truth and prediction -> 1."""
    tp, fp, _, fn = counts.T
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0), "iou": _ratio(tp, tp + fp + fn, 1.0)}


SUMMARY_KEYS = ("mdice", "mdice_std", "miou", "miou_std", "pixel_accuracy", "pixel_dice",
                "pixel_iou", "precision", "recall", "specificity", "f2", "tp", "fp", "tn",
                "fn", "images")
SCORE_KEYS = ("auc", "average_precision")


def summarize(counts: np.ndarray) -> dict[str, float]:
    """Split-level figures: per-image means (mDice, mIoU with std) and pixel-level scores."""
    per_image = per_image_scores(counts)
    tp, fp, tn, fn = (float(v) for v in counts.sum(axis=0))
    total = tp + fp + tn + fn
    precision = float(_ratio(tp, tp + fp, 1.0))
    recall = float(_ratio(tp, tp + fn, np.nan))  # undefined without a positive pixel
    return {
        "mdice": float(per_image["dice"].mean()),
        "mdice_std": float(per_image["dice"].std()),
        "miou": float(per_image["iou"].mean()),
        "miou_std": float(per_image["iou"].std()),
        "pixel_accuracy": (tp + tn) / total,
        "pixel_dice": float(_ratio(2 * tp, 2 * tp + fp + fn, 1.0)),
        "pixel_iou": float(_ratio(tp, tp + fp + fn, 1.0)),
        "precision": precision,
        "recall": recall,
        "specificity": float(_ratio(tn, tn + fp, 1.0)),
        # F-beta with beta=2 (recall weighted higher), from the pooled counts.
        "f2": float(_ratio(5 * tp, 5 * tp + 4 * fn + fp, 1.0)),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "images": float(len(counts)),
    }


def threshold_counts(probs: np.ndarray, truth: np.ndarray,
                     thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Per-image (TP, FP, TN, FN) at each threshold (prediction = prob >= t): (N, T, 4)."""
    return np.stack([confusion_counts(probs >= t, truth) for t in thresholds], axis=1)


@dataclass
class ScoreHistogram:
    """Pixel scores of each class counted in ``bins`` equal bins of [0, 1].

    Bounded memory for any number of pixels. ROC AUC and average precision computed from it
    are exact for scores quantised to 1/bins (sklearn on the quantised scores gives the same
    numbers); with 1000 bins that is finer than a bf16 probability's resolution near 0.5.
    """

    bins: int = 1000
    pos: np.ndarray = field(default=None)  # type: ignore[arg-type]  # set in __post_init__
    neg: np.ndarray = field(default=None)  # type: ignore[arg-type]

    def __post_init__(self):
        if self.pos is None:
            self.pos = np.zeros(self.bins, np.int64)
            self.neg = np.zeros(self.bins, np.int64)

    def update(self, probs: np.ndarray, truth: np.ndarray) -> None:
        idx = np.clip((np.asarray(probs, np.float64) * self.bins).astype(np.int64),
                      0, self.bins - 1).ravel()
        truth = np.asarray(truth, bool).ravel()
        self.pos += np.bincount(idx[truth], minlength=self.bins)
        self.neg += np.bincount(idx[~truth], minlength=self.bins)

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """TP and FP when predicting every bin >= k, for k from the top bin down."""
        return np.cumsum(self.pos[::-1]), np.cumsum(self.neg[::-1])

    def roc(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(fpr, tpr, auc), starting at (0, 0); NaN AUC when a class is absent (undefined)."""
        tp, fp = self._cumulative()
        n_pos, n_neg = tp[-1], fp[-1]
        if n_pos == 0 or n_neg == 0:
            return np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")
        fpr = np.concatenate([[0.0], fp / n_neg])
        tpr = np.concatenate([[0.0], tp / n_pos])
        return fpr, tpr, float(np.trapezoid(tpr, fpr))

    def pr(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(recall, precision, average precision) as sklearn defines AP:
        sum over thresholds of (R_k - R_k-1) * P_k; NaN AP (undefined) without a positive
        pixel."""
        tp, fp = self._cumulative()
        keep = (tp + fp) > 0
        tp, fp = tp[keep], fp[keep]
        if len(tp) == 0 or tp[-1] == 0:
            return np.array([0.0]), np.array([1.0]), float("nan")
        recall = tp / tp[-1]
        precision = tp / (tp + fp)
        ap = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
        return recall, precision, ap

    def prevalence(self) -> float:
        total = self.pos.sum() + self.neg.sum()
        return float(self.pos.sum() / total) if total else float("nan")
