"""Ensembles: the mean of the members' probabilities (by hand), in `segkit predict --model A
--model B` and in `python run.py task=evaluate model_uri=[A,B]` (its metrics logged like a
model's, its members listed in the run's tags); members of different sizes: one line, exit 2."""

from __future__ import annotations

import json

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from segkit.data.dataset import load_image
from segkit.ensemble import Ensemble, combine
from segkit.errors import ConfigError
from segkit.evaluation import resize_probs
from segkit.metric_names import internal
from segkit.models import build_unet
from segkit.precision import float32_copy
from tests.helpers import SMOKE_ARGS, cli_env, run_py, segkit_cli
from tests.helpers.tracking import fresh_store, tracking_uri


class Constant:
    """A fake predictor answering ``value`` everywhere."""

    runtime = "fake"

    def __init__(self, value: float, size: int = 2):
        self.value, self.input_size = value, size

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.full((*batch.shape[:3], 1), self.value, np.float32)


class Red:
    """A fake predictor: the red channel / 255."""

    runtime, input_size = "other", 2

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return (batch[..., :1] / 255.0).astype(np.float32)


def test_ensemble_is_the_mean_of_its_members_by_hand():
    batch = np.zeros((1, 2, 2, 3), np.float32)
    batch[0, 0, 0, 0] = 255.0
    ens = Ensemble([Constant(0.2), Red(), Constant(0.5)], ["a", "b", "c"])
    # top left: (0.2 + 1 + 0.5) / 3; elsewhere (0.2 + 0 + 0.5) / 3
    np.testing.assert_allclose(ens(batch)[0, ..., 0], [[1.7 / 3, 0.7 / 3], [0.7 / 3, 0.7 / 3]],
                               rtol=1e-6)
    assert ens.input_size == 2 and ens.runtime == "fake+other"
    single = Constant(0.3)
    assert combine([single], ["a"]) is single  # one model is not wrapped


def test_members_of_different_sizes_are_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        combine([Constant(0.1, 64), Constant(0.2, 128)], ["runs:/a/model", "b.keras"])
    assert str(err.value) == ("an ensemble's models must take the same input size: "
                              "runs:/a/model (64x64), b.keras (128x128); use models trained "
                              "at one data.image_size")


# ---------------------------------------------------------------- with the smoke model


@pytest.fixture(scope="module")
def second(smoke_run, tmp_path_factory):
    """A second model of the smoke model's size (an untrained U-Net whose probabilities
    spread over (0, 1)) as a .keras file, and a store holding both as logged models."""
    from segkit.tracking import log_model

    with tracking_uri(smoke_run.uri):
        smoke = mlflow.keras.load_model(smoke_run.model_uri)
    size = int(smoke.input_shape[1])
    keras.utils.set_random_seed(3)
    other = build_unet(image_size=size, depth=2, filters=4)
    kernel, bias = other.get_layer("mask").get_weights()
    other.get_layer("mask").set_weights([kernel * 5, bias])
    tmp = tmp_path_factory.mktemp("ensemble")
    other.save(tmp / "other.keras")
    uri = fresh_store(tmp / "mlflow.db")
    uris = []
    experiment = mlflow.MlflowClient(uri).create_experiment("ensemble-members")
    with tracking_uri(uri):
        for model in (smoke, other):
            with mlflow.start_run(experiment_id=experiment):  # not a global active one
                uris.append(log_model(model, np.zeros((1, size, size, 3), np.float32)))
    # the references: segkit's inference, float32 whatever policy the smoke run trained in
    return {"file": tmp / "other.keras", "models": (float32_copy(smoke), other), "store": uri,
            "uris": uris, "size": size}


def _probs(model, image: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_on_batch(image[None].astype(np.float32)), np.float32)[0, ..., 0]


@pytest.mark.e2e
def test_cli_ensemble_writes_the_mean_of_the_two_models(smoke_run, second, real_root, tmp_path):
    images = sorted((real_root / "images").iterdir())[:2]
    res = segkit_cli("predict", "--model", smoke_run.model_uri, "--model", second["file"],
                     "--tracking-uri", smoke_run.uri, "--threshold", 0.5, "--probabilities",
                     "16", "--output", tmp_path / "out", "--no-progress", *images, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    size = second["size"]
    assert f"model ensemble of 2 models ({size}x{size}, runtime tf)" in res.stdout
    for path in images:
        small = load_image(path, size)
        members = [_probs(m, small) for m in second["models"]]
        mean = resize_probs((members[0] + members[1]) / 2, load_image(path).shape[:2])
        with Image.open(tmp_path / "out" / f"{path.stem}_prob.png") as im:
            got = np.asarray(im).astype(int)
        assert np.abs(got - np.round(mean * 65535)).max() <= 1
        assert np.abs(members[0] - members[1]).max() > 0.1  # the two really differ


def test_cli_refuses_members_of_different_sizes_before_predicting(tmp_path):
    import contextlib
    import io

    from segkit.cli import main

    models = []
    for size in (32, 16):
        models += ["--model", str(tmp_path / f"m{size}.keras")]
        build_unet(image_size=size, depth=2, filters=4).save(tmp_path / f"m{size}.keras")
    Image.new("RGB", (20, 10)).save(tmp_path / "in.png")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["predict", *models, "--output", str(tmp_path / "out"),
                       str(tmp_path / "in.png")])
    assert status == 2 and not (tmp_path / "out").exists()
    assert err.getvalue() == (
        f"error: an ensemble's models must take the same input size: {tmp_path}/m32.keras "
        f"(32x32), {tmp_path}/m16.keras (16x16); use models trained at one data.image_size\n")


@pytest.mark.e2e
def test_evaluate_ensemble_logs_its_metrics_and_members(smoke_run, second, real_root,
                                                        compose_cfg, tmp_path):
    from segkit.data import prepare

    cfg = compose_cfg(*SMOKE_ARGS, f"data.root={real_root}", f"data.cache_dir={smoke_run.cache}")
    data = prepare(cfg.data, cfg.split, image_size=second["size"])
    truth = data.masks["test"][..., 0] > 0
    members = [np.stack([_probs(m, im) for im in data.images["test"]])
               for m in second["models"]]
    mean = (members[0] + members[1]) / 2
    t = gap_threshold(mean)  # where the mean's mask differs from each member's

    def mdice(probs: np.ndarray) -> float:
        pred = probs >= t
        tp = (pred & truth).sum(axis=(1, 2))
        total = pred.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))
        return float(np.mean(np.where(total == 0, 1.0, 2 * tp / np.maximum(total, 1))))

    assert all(abs(mdice(m) - mdice(mean)) > 1e-3 for m in members)  # not just one member
    uris = second["uris"]
    res = run_py(*SMOKE_ARGS, "task=evaluate", f"model_uri=[{uris[0]},{uris[1]}]",
                 f"eval.threshold={t}", "eval.select_threshold=false", "eval.plots=false",
                 "eval.bootstrap_draws=0", "eval.boundary=false",
                 f"data.cache_dir={smoke_run.cache}", f"hydra.run.dir={tmp_path}/out",
                 env=cli_env(uri=second["store"], data=real_root), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    client = mlflow.MlflowClient(second["store"])
    (run,) = [r for r in client.search_runs(
        [client.get_experiment_by_name("segkit-smoke").experiment_id])
        if r.data.tags.get("segkit.task") == "evaluate"]
    assert json.loads(run.data.tags["segkit.ensemble"]) == uris
    assert run.data.tags["segkit.source_model_uri"] == ", ".join(uris)
    assert internal(run.data.metrics)["test_mdice"] == pytest.approx(mdice(mean), abs=1e-6)


def gap_threshold(probs: np.ndarray) -> float:
    """The midpoint of the widest gap between the middle half of the distinct values: no
    pixel within half that gap of it, so float rounding (~1e-7) never flips one."""
    values = np.unique(probs)
    lo, hi = len(values) // 4, 3 * len(values) // 4
    gaps = np.diff(values[lo:hi])
    k = int(np.argmax(gaps))
    assert gaps[k] > 1e-5
    return round(float(values[lo + k] + gaps[k] / 2), 6)
