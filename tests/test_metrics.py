"""Metric and loss values against hand-computed numbers and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    fbeta_score,
    jaccard_score,
    precision_score,
    recall_score,
)

from segkit.losses import build_loss
from segkit.metrics import (
    ScoreHistogram,
    confusion_counts,
    per_image_scores,
    summarize,
    threshold_counts,
)
from segkit.training_metrics import Dice, MeanImageDice, training_metrics

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
    acc, dice, iou, _ = training_metrics()
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


def _quantised_scores(n=4000, bins=1000, seed=0):
    """Scores on bin centres (so binning loses nothing) with a class-dependent shift."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.2
    raw = np.clip(rng.normal(np.where(truth, 0.65, 0.35), 0.2), 0, 0.9999)
    return (np.floor(raw * bins) + 0.5) / bins, truth


def test_histogram_auc_and_ap_equal_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores, truth = _quantised_scores()
    hist = ScoreHistogram(1000)
    for part in np.array_split(np.arange(len(scores)), 7):  # accumulated over batches
        hist.update(scores[part], truth[part])
    _, _, auc = hist.roc()
    _, _, ap = hist.pr()
    assert auc == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(truth, scores), abs=1e-12)
    assert hist.prevalence() == pytest.approx(truth.mean())


def test_histogram_curves_by_hand():
    hist = ScoreHistogram(4)
    hist.update(np.array([0.9, 0.6, 0.3, 0.1]), np.array([True, False, True, False]))
    fpr, tpr, auc = hist.roc()
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert auc == pytest.approx(0.75)
    recall, precision, ap = hist.pr()
    np.testing.assert_allclose(recall, [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3, 0.5])
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_single_class_gives_nan_auc():
    hist = ScoreHistogram(10)
    hist.update(np.array([0.2, 0.7]), np.array([False, False]))
    assert np.isnan(hist.roc()[2]) and np.isnan(hist.pr()[2])


def test_threshold_counts_and_f2():
    probs = np.array([[[0.2, 0.6], [0.8, 0.4]]])
    truth = np.array([[[True, True], [False, False]]])
    c = threshold_counts(probs, truth, np.array([0.3, 0.7]))
    np.testing.assert_array_equal(c[0], [[1, 2, 0, 1], [0, 1, 1, 2]])
    m = summarize(c[:, 0])
    p, r = 1 / 3, 1 / 2
    assert m["f2"] == pytest.approx(5 * p * r / (4 * p + r))
    assert m["f2"] == pytest.approx(fbeta_score(truth.ravel(), probs.ravel() >= 0.3, beta=2))


def test_mean_image_dice_averages_per_image_dice():
    """Per image, then averaged over images (not pooled): image 0 Dice 2*1/(2+1), image 1
    Dice 2*1/(1+2); an image with empty truth and empty prediction counts 1."""
    truth = np.zeros((3, 2, 2, 1), np.float32)
    probs = np.full((3, 2, 2, 1), 0.1, np.float32)
    truth[0, 0, :2] = 1
    probs[0, 0, 0] = 0.9
    truth[1, 0, 0] = 1
    probs[1, 0, :2] = 0.9
    metric = training_metrics()[3]
    assert isinstance(metric, MeanImageDice) and metric.name == "mean_image_dice"
    metric.update_state(truth[:2], probs[:2])
    assert float(metric.result()) == pytest.approx((2 / 3 + 2 / 3) / 2)
    metric.update_state(truth[2:], probs[2:])
    assert float(metric.result()) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    clone = MeanImageDice.from_config(metric.get_config())
    assert clone.threshold == 0.5 and clone.name == "mean_image_dice"
