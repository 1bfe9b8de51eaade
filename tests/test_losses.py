"""Loss values against NumPy hand computations, config wiring, and save/load round trips."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from segkit.errors import ConfigError
from segkit.losses import LOSSES, build_loss
from tests.helpers import ROOT

EPS = keras.config.epsilon()
# Three 2x3 images: a large mask, a 1-pixel mask, an empty mask (with false positives).
Y = np.array([[[1, 1, 1], [1, 0, 0]],
              [[0, 0, 0], [0, 1, 0]],
              [[0, 0, 0], [0, 0, 0]]], np.float32)[..., None]
P = np.random.default_rng(0).uniform(0.05, 0.95, Y.shape).astype(np.float32)


def _cfg(name, **kw):
    """conf/loss/<name>.yaml (the single place its defaults live) with ``kw`` changed."""
    cfg = OmegaConf.load(ROOT / "conf" / "loss" / f"{name}.yaml")
    cfg.update(kw)
    return cfg


def _loss(name, y=Y, p=P, **kw):
    return float(build_loss(_cfg(name, **kw))(y, p))


def _counts(y, p):
    """Soft TP, FP, FN per image."""
    y, p = y.astype(np.float64), p.astype(np.float64)
    return ((y * p).sum((1, 2, 3)), ((1 - y) * p).sum((1, 2, 3)), (y * (1 - p)).sum((1, 2, 3)))


def _bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_bce_dice_and_bce_dice_by_hand():
    y, p = Y.astype(np.float64), P.astype(np.float64)
    bce = _bce(y, p).mean()
    tp, fp, fn = _counts(Y, P)
    dice = 1 - 2 * tp / (2 * tp + fp + fn + EPS)
    assert dice[2] == pytest.approx(1.0)  # the empty mask: no TP, loss 1 whatever is predicted
    assert _loss("bce") == pytest.approx(bce, rel=1e-5)
    assert _loss("dice") == pytest.approx(dice.mean(), rel=1e-5)
    pooled = 1 - 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    assert abs(_loss("dice") - pooled) > 0.02  # per image is not the pooled value
    assert _loss("bce_dice", bce_weight=2.0, dice_weight=0.5) == pytest.approx(
        2 * bce + 0.5 * dice.mean(), rel=1e-5)


def test_tversky_by_hand_per_image():
    tp, fp, fn = _counts(Y, P)
    per_image = 1 - tp / (tp + 0.3 * fp + 0.7 * fn + EPS)
    assert per_image[2] == pytest.approx(1.0)
    assert _loss("tversky", alpha=0.3, beta=0.7) == pytest.approx(per_image.mean(), rel=1e-5)
    pooled = 1 - tp.sum() / (tp.sum() + 0.3 * fp.sum() + 0.7 * fn.sum())
    assert abs(per_image.mean() - pooled) > 0.02
    # Defaults (no alpha/beta keys) are conf/loss/tversky.yaml's 0.3 / 0.7.
    assert _loss("tversky") == pytest.approx(per_image.mean(), rel=1e-5)


def test_tversky_alpha_weights_false_positives():
    y = np.array([1, 0, 0, 0], np.float32).reshape(1, 2, 2, 1)
    p = np.array([1, 1, 0, 0], np.float32).reshape(1, 2, 2, 1)  # TP 1, FP 1, FN 0
    assert _loss("tversky", y, p, alpha=1.0, beta=0.0) == pytest.approx(0.5)
    assert _loss("tversky", y, p, alpha=0.0, beta=1.0) == pytest.approx(0.0, abs=1e-6)


def test_tversky_half_half_is_dice():
    assert _loss("tversky", alpha=0.5, beta=0.5) == pytest.approx(_loss("dice"), rel=1e-6)


def test_empty_mask_gives_no_region_gradient():
    """Per-image Dice/Tversky of an empty mask is the constant 1: no gradient from it."""
    p = tf.Variable(P)
    with tf.GradientTape() as tape:
        value = build_loss(_cfg("tversky"))(Y, p)
    grad = tape.gradient(value, p).numpy()
    assert np.all(grad[2] == 0) and np.any(grad[:2] != 0)


@pytest.mark.parametrize("gamma, balance, alpha", [(2.0, False, 0.25), (2.0, True, 0.25),
                                                   (0.5, True, 0.8)])
def test_focal_by_hand(gamma, balance, alpha):
    y, p = Y.astype(np.float64), P.astype(np.float64)
    p_t = y * p + (1 - y) * (1 - p)
    focal = (1 - p_t) ** gamma * _bce(y, p)
    if balance:
        focal *= y * alpha + (1 - y) * (1 - alpha)
    value = _loss("focal", gamma=gamma, apply_class_balancing=balance, alpha=alpha)
    assert value == pytest.approx(focal.mean(), rel=1e-5)
    assert value == pytest.approx(float(keras.ops.mean(keras.losses.binary_focal_crossentropy(
        Y, P, apply_class_balancing=balance, alpha=alpha, gamma=gamma))), rel=1e-6)


def test_focal_gamma_zero_is_bce():
    assert _loss("focal", gamma=0.0) == pytest.approx(_loss("bce"), rel=1e-5)


def test_every_conf_loss_composes_and_builds(compose_cfg):
    stems = {p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml")}
    assert stems == set(LOSSES)
    for name in sorted(stems):
        loss = build_loss(compose_cfg(f"loss={name}").loss)
        assert isinstance(loss, keras.losses.Loss)
    tversky = build_loss(compose_cfg("loss=tversky").loss)
    assert (tversky.alpha, tversky.beta) == (0.3, 0.7)


def test_bad_names_and_options_fail_in_one_line():
    with pytest.raises(ConfigError, match="loss.name='focalish' is unknown: use one of bce, "
                       "dice, bce_dice, focal, tversky$"):
        build_loss(OmegaConf.create({"name": "focalish"}))
    with pytest.raises(ConfigError, match="loss.alpha=-0.1"):
        build_loss(_cfg("tversky", alpha=-0.1))
    with pytest.raises(ConfigError, match="loss.gamma=-1"):
        build_loss(_cfg("focal", gamma=-1))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_compiled_model_round_trips_with_each_loss(name, tmp_path):
    inputs = keras.Input((2, 3, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs))
    model.compile("adam", loss=build_loss(
        _cfg(name, alpha=0.4, beta=0.6) if name == "tversky" else _cfg(name)))
    model.optimizer.build(model.trainable_variables)  # its state is saved with the model
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded.loss) is type(model.loss)
    assert json.dumps(loaded.loss.get_config()) == json.dumps(model.loss.get_config())
    assert float(loaded.loss(Y, P)) == pytest.approx(float(model.loss(Y, P)), rel=1e-6)
