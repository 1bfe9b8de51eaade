"""Metric and loss values against hand-computed numbers and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score

from segkit.losses import build_loss
from segkit.metrics import confusion_counts, per_image_scores, summarize
from segkit.training import Dice, training_metrics

# Two 2x2 images. Image 0: truth 2 px, prediction 3 px, overlap 2 -> Dice 0.8, IoU 2/3.
TRUTH = np.array([[[1, 1], [0, 0]], [[0, 1], [0, 0]]], np.uint8)[..., None]
PRED = np.array([[[1, 1], [1, 0]], [[0, 0], [0, 0]]], np.uint8)[..., None]


def test_confusion_counts_by_hand():
    np.testing.assert_array_equal(confusion_counts(PRED > 0, TRUTH > 0), [[2, 1, 1, 0],
                                                                          [0, 0, 3, 1]])


def test_per_image_scores_by_hand():
    s = per_image_scores(confusion_counts(PRED > 0, TRUTH > 0))
    np.testing.assert_allclose(s["dice"], [0.8, 0.0])
    np.testing.assert_allclose(s["iou"], [2 / 3, 0.0])


def test_empty_truth_convention():
    truth = np.zeros((2, 3, 3, 1), bool)
    pred = np.zeros_like(truth)
    pred[1, 0, 0] = True
    s = per_image_scores(confusion_counts(pred, truth))
    np.testing.assert_array_equal(s["dice"], [1.0, 0.0])  # empty/empty = 1, FP on empty = 0
    np.testing.assert_array_equal(s["iou"], [1.0, 0.0])


def test_summary_matches_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.random((5, 8, 8, 1)) < 0.3
    pred = rng.random((5, 8, 8, 1)) < 0.4
    m = summarize(confusion_counts(pred, truth))
    t, p = truth.ravel(), pred.ravel()
    assert m["pixel_accuracy"] == pytest.approx(accuracy_score(t, p))
    assert m["pixel_dice"] == pytest.approx(f1_score(t, p))
    assert m["pixel_iou"] == pytest.approx(jaccard_score(t, p))
    assert m["precision"] == pytest.approx(precision_score(t, p))
    assert m["recall"] == pytest.approx(recall_score(t, p))
    assert m["specificity"] == pytest.approx(recall_score(~t, ~p))
    per_image = [f1_score(truth[i].ravel(), pred[i].ravel()) for i in range(5)]
    assert m["mdice"] == pytest.approx(np.mean(per_image))
    assert m["mdice_std"] == pytest.approx(np.std(per_image))
    assert m["miou"] == pytest.approx(np.mean([jaccard_score(truth[i].ravel(), pred[i].ravel())
                                               for i in range(5)]))
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == truth.size


def test_keras_training_metrics_by_hand():
    probs = np.where(PRED > 0, 0.9, 0.1).astype(np.float32)
    acc, dice, iou = training_metrics()
    for metric in (acc, dice, iou):
        metric.update_state(TRUTH.astype(np.float32), probs)
    # Pooled over both images: TP 2, FP 1, FN 1, TN 4.
    assert float(acc.result()) == pytest.approx(6 / 8)
    assert float(dice.result()) == pytest.approx(4 / 6)
    assert float(iou.result()) == pytest.approx(2 / 4)
    assert isinstance(dice, Dice)


def _loss(name, **kw):
    return float(build_loss(OmegaConf.create({"name": name, **kw}))(
        TRUTH.astype(np.float32), np.where(PRED > 0, 0.9, 0.1).astype(np.float32)))


def test_losses_by_hand():
    y, p = TRUTH.astype(np.float64), np.where(PRED > 0, 0.9, 0.1)
    bce = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    # soft Dice per image: 1 - 2*sum(y*p) / (sum(y) + sum(p)), averaged over the 2 images
    soft = [1 - 2 * (y[i] * p[i]).sum() / (y[i].sum() + p[i].sum()) for i in range(2)]
    assert _loss("bce") == pytest.approx(bce, rel=1e-5)
    assert _loss("dice") == pytest.approx(np.mean(soft), rel=1e-5)
    assert _loss("bce_dice", bce_weight=2.0, dice_weight=0.5) == pytest.approx(
        2 * bce + 0.5 * np.mean(soft), rel=1e-5)
