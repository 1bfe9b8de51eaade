"""Exact segmentation scores in NumPy (the Keras training metrics live in segkit.training).

Conventions (documented in the README):
- Foreground IoU and Dice of a binary prediction P against truth T:
  IoU = |P&T| / |P|T|, Dice = 2|P&T| / (|P| + |T|).
- Per image, then averaged over images (mDice, mIoU), as the field's papers report.
- Empty truth: an image with no foreground scores 1 when the prediction is empty too and
  0 when anything is predicted (the "empty is a correct answer" convention; MONAI's
  ``ignore_empty=False``). Kvasir-SEG has no empty mask, other datasets do.
"""

from __future__ import annotations

import numpy as np


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image (TP, FP, TN, FN) for boolean arrays of shape (N, ...): int64 array (N, 4)."""
    pred = pred.reshape(len(pred), -1).astype(bool)
    truth = truth.reshape(len(truth), -1).astype(bool)
    tp = np.count_nonzero(pred & truth, axis=1)
    fp = np.count_nonzero(pred & ~truth, axis=1)
    fn = np.count_nonzero(~pred & truth, axis=1)
    tn = truth.shape[1] - tp - fp - fn
    return np.stack([tp, fp, tn, fn], axis=1).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray, empty: float | np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(den > 0, out, empty)


def per_image_scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image foreground Dice and IoU from (N, 4) counts; empty truth and prediction -> 1."""
    tp, fp, _, fn = counts.T
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0), "iou": _ratio(tp, tp + fp + fn, 1.0)}


SUMMARY_KEYS = ("mdice", "mdice_std", "miou", "miou_std", "pixel_accuracy", "pixel_dice",
                "pixel_iou", "precision", "recall", "specificity", "tp", "fp", "tn", "fn",
                "images")


def summarize(counts: np.ndarray) -> dict[str, float]:
    """Split-level figures: per-image means (mDice, mIoU with std) and pixel-level scores."""
    per_image = per_image_scores(counts)
    tp, fp, tn, fn = (float(v) for v in counts.sum(axis=0))
    total = tp + fp + tn + fn
    return {
        "mdice": float(per_image["dice"].mean()),
        "mdice_std": float(per_image["dice"].std()),
        "miou": float(per_image["iou"].mean()),
        "miou_std": float(per_image["iou"].std()),
        "pixel_accuracy": (tp + tn) / total,
        "pixel_dice": float(_ratio(2 * tp, 2 * tp + fp + fn, 1.0)),
        "pixel_iou": float(_ratio(tp, tp + fp + fn, 1.0)),
        "precision": float(_ratio(tp, tp + fp, 1.0)),
        "recall": float(_ratio(tp, tp + fn, 1.0)),
        "specificity": float(_ratio(tn, tn + fp, 1.0)),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "images": float(len(counts)),
    }
