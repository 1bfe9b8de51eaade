"""Batch-wise evaluation against directly computed numbers, threshold choice, original size."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from segkit.data.dataset import Sample
from segkit.evaluation import evaluate
from segkit.metrics import confusion_counts, summarize
from tests.helpers import random_data


def red_channel_model(size: int) -> keras.Model:
    """A model whose 'probability' is the red channel / 255: the test controls every score."""
    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(1, 1, use_bias=False)
    outputs = conv(inputs)
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.array([1 / 255, 0, 0], np.float32).reshape(1, 1, 3, 1)])
    return model


def data(n=5, size=8, seed=0):
    """Random images and masks of scattered pixels (40 % foreground)."""
    return random_data(n, size, seed=seed, masks="noise")


def test_metrics_equal_direct_computation_at_any_grid_threshold():
    images, masks = data()
    probs = images[..., 0].astype(np.float32) / 255
    res = evaluate(red_channel_model(8), images, masks, list("abcde"), split="x/test",
                   threshold=0.5, batch_size=2)
    for t in (0.5, 0.25, 0.8):
        direct = summarize(confusion_counts(probs >= t, masks[..., 0] > 0))
        for key in ("mdice", "miou", "pixel_accuracy", "tp", "fp", "f2"):
            assert res.at(t)[key] == pytest.approx(direct[key], abs=1e-6), (t, key)
    assert res.metrics == res.at(0.5)
    rows = res.per_image()
    assert [r["name"] for r in rows] == list("abcde")
    assert rows[0]["truth_fraction"] == pytest.approx(masks[0].mean())
    assert rows[0]["pred_fraction"] == pytest.approx((probs[0] >= 0.5).mean())
    with pytest.raises(ValueError, match="grid"):
        res.at(0.33)


def test_threshold_outside_default_grid_is_added():
    images, masks = data()
    res = evaluate(red_channel_model(8), images, masks, list("abcde"), split="x",
                   threshold=0.42)
    assert 0.42 in res.thresholds and 0.05 in res.thresholds


def test_best_threshold_is_where_mdice_peaks():
    # Truth = red >= 0.7 * 255: thresholds at or just below 0.7 segment perfectly.
    images, _ = data(n=4, size=8, seed=1)
    masks = (images[..., :1] >= 0.7 * 255).astype(np.uint8)
    res = evaluate(red_channel_model(8), images, masks, list("abcd"), split="x")
    assert res.best_threshold() == pytest.approx(0.7)
    assert res.at(0.7)["mdice"] == pytest.approx(1.0)
    curves = res.curves()
    assert curves["mDice"].argmax() == list(res.thresholds).index(0.7)
    assert len(curves["mIoU"]) == len(res.thresholds)


def test_original_resolution_scores_against_full_size_masks(tmp_path):
    # Two 30x20 images: left half red (255), right half black; truth = left half.
    samples, small = [], []
    for name in ("p", "q"):
        img = np.zeros((20, 30, 3), np.uint8)
        img[:, :15, 0] = 255
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / "images" / f"{name}.png")
        mask = np.zeros((20, 30), np.uint8)
        mask[:, :15] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
        samples.append(Sample(name, tmp_path / "images" / f"{name}.png",
                              tmp_path / "masks" / f"{name}.png"))
        small.append(np.asarray(Image.fromarray(img).resize((8, 8), Image.Resampling.NEAREST)))
    images = np.stack(small)
    masks = (images[..., :1] > 127).astype(np.uint8)
    res = evaluate(red_channel_model(8), images, masks, ["p", "q"], split="x",
                   originals=samples)
    assert res.counts[:, 0].sum(axis=1).tolist() == [600, 600]  # 30 x 20 pixels each
    assert res.metrics["tp"] + res.metrics["fn"] == 2 * 300
    assert res.metrics["mdice"] > 0.9


def test_tta_averages_the_flipped_predictions():
    import keras

    from segkit.evaluation import predict_batches

    images, _ = random_data(3, 8)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(
        keras.layers.Rescaling(1 / 255)(inputs)))
    x = images.astype(np.float32)
    p = lambda a: model.predict_on_batch(a)[..., 0]  # noqa: E731
    expected = (p(x) + p(x[:, :, ::-1])[:, :, ::-1] + p(x[:, ::-1])[:, ::-1]
                + p(x[:, ::-1, ::-1])[:, ::-1, ::-1]) / 4
    (_, plain), = predict_batches(model, images, 8)
    (_, tta), = predict_batches(model, images, 8, tta=True)
    np.testing.assert_allclose(tta, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tta, plain, atol=1e-4)  # a random 3x3 kernel is not flip-symmetric


def test_boundary_metrics_are_scored_at_the_original_resolution(tmp_path):
    """A 40x40 image whose red left half is predicted; its truth mask is the left 16
    columns: at the original resolution the predicted edge is 4 px from the true one."""
    from segkit.boundary import boundary_scores
    from segkit.data.dataset import load_mask
    from segkit.evaluation import resize_probs

    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20, 0] = 255
    mask = np.zeros((40, 40), np.uint8)
    mask[:, :16] = 255
    for sub, arr in (("images", img), ("masks", mask)):
        (tmp_path / sub).mkdir()
        Image.fromarray(arr).save(tmp_path / sub / "a.png")
    sample = Sample("a", tmp_path / "images" / "a.png", tmp_path / "masks" / "a.png")
    small = np.asarray(Image.fromarray(img).resize((8, 8), Image.Resampling.NEAREST))[None]
    small_masks = (small[..., :1] > 127).astype(np.uint8)
    model = red_channel_model(8)
    res = evaluate(model, small, small_masks, ["a"], split="x", boundary=([sample], 2.0))
    prob = resize_probs(model.predict_on_batch(small.astype(np.float32))[0, ..., 0], (40, 40))
    expected = boundary_scores(prob >= 0.5, load_mask(sample.mask)[..., 0] > 0, 2.0)
    (row,) = res.per_image()
    assert (row["hd95"], row["nsd"]) == pytest.approx(expected)
    assert row["hd95"] == pytest.approx(4.0)  # the vertical edges, 4 px apart
    assert res.metrics["mhd95"] == pytest.approx(expected[0])
    assert res.metrics["mnsd"] == pytest.approx(expected[1])
    assert res.metrics["hd95_undefined"] == 0
    plain = evaluate(model, small, small_masks, ["a"], split="x")
    assert "hd95" not in plain.per_image()[0] and "mhd95" not in plain.metrics
