"""End to end: `run.py debug=smoke` on a few real Kvasir-SEG files trains, logs to MLflow,
and the logged model reloads and predicts exactly what the evaluated model predicted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from segkit.metric_names import internal, to_mlflow
from segkit.precision import float32_copy
from tests.helpers import (
    ROOT,
    SMOKE_ARGS,
    Job,
    cli_env,
    fresh_store,
    start_early,
    tracking_uri,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def smoke(smoke_run):
    """The session's smoke run (tests/conftest.py), with MLflow's tracking URI on its store
    during the test."""
    with tracking_uri(smoke_run.uri):
        yield smoke_run


# Three checks on the smoke run need a process of their own; they are independent, so those
# the selected tests need start together as soon as the module begins (and the run exists).
@pytest.fixture(scope="module", autouse=True)
def _start_processes_early(request):
    start_early(request, "fresh_load_job", "evaluate_job", "predict_job")


@pytest.fixture(scope="module")
def fresh_load_job(smoke_run):
    """A fresh interpreter without segkit loading the logged model as a pyfunc and printing
    the shape of one prediction."""
    code = (f"import mlflow, numpy as np; m = mlflow.pyfunc.load_model({smoke_run.model_uri!r}); "
            "print(np.asarray(m.predict(np.zeros((1, 64, 64, 3), np.float32))).shape)")
    job = Job([sys.executable, "-c", code], env=cli_env(uri=smoke_run.uri))
    yield job
    job.kill()


@pytest.fixture(scope="module")
def evaluate_job(smoke_run, real_root):
    """`run.py task=evaluate` of the smoke run's logged model, into the smoke run's store."""
    job = Job.run_py(*SMOKE_ARGS, "task=evaluate", f"model_uri={smoke_run.model_uri}",
                     f"hydra.run.dir={smoke_run.run_dir}-eval",
                     f"data.cache_dir={smoke_run.cache}",
                     env=cli_env(uri=smoke_run.uri, data=real_root))
    yield job
    job.kill()


@pytest.fixture(scope="module")
def predict_job(smoke_run, real_root, tmp_path_factory):
    """`segkit predict` with the logged model on 3 real images; (job, inputs, output)."""
    out = tmp_path_factory.mktemp("predict")
    inputs = sorted((real_root / "images").iterdir())[:3]
    job = Job.segkit("predict", "--model", smoke_run.model_uri, "--output", out,
                     "--tracking-uri", smoke_run.uri, "--threshold", "0.5", "--no-progress",
                     *inputs)
    yield job, inputs, out
    job.kill()


def test_run_logs_params_metrics_and_context(smoke):
    uri, run = smoke.uri, smoke.run
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["model.depth"] == "2" and p["data.image_size"] == "64"
    assert p["optimizer.name"] == "adam" and p["loss.name"] == "bce"
    assert (p["split.train_size"], p["split.val_size"], p["split.test_size"]) == ("8", "4", "4")
    assert len(p["data.fingerprint"]) == 64
    assert p["trainer.policy"] in ("mixed_bfloat16", "float32")
    m = internal(run.data.metrics)
    for key in ("test_mdice", "test_miou", "test_pixel_accuracy", "val_mdice", "train_seconds"):
        assert key in m
    assert 0 <= m["test_mdice"] <= 1 and 0 <= m["test_pixel_accuracy"] <= 1
    history = MlflowClient(uri).get_metric_history(run.info.run_id, to_mlflow("loss"))
    assert [h.step for h in history] == [1, 2]
    assert len(run.data.tags["segkit.git_commit"]) in (40, 7) or \
        run.data.tags["segkit.git_commit"] == "unknown"
    assert run.data.tags["segkit.split"] == "official"
    arts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "config")}
    assert {"config/config.yaml", "config/overrides.yaml"} <= arts
    ev = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "evaluation")}
    expected = {"test_per_image.csv", "val_per_image.csv", "metrics.json", "report.md",
                "history.png", "confusion_test.png", "roc_test.png", "pr_test.png",
                "threshold_val.png", "threshold_test.png", "dice_hist_test.png",
                "gallery_test.png"}
    assert {f"evaluation/{name}" for name in expected} <= ev
    for key in ("test_auc", "test_average_precision", "val_best_threshold", "test_tuned_mdice",
                "test_f2", "test_tp"):
        assert key in m
    assert m["test_tp"] + m["test_fp"] + m["test_tn"] + m["test_fn"] == 4 * 64 * 64
    assert MlflowClient(uri).list_artifacts(run.info.run_id, "tensorboard")
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                artifact_path="environment/packages.json")
    assert "tensorflow" in json.loads(Path(local).read_text())


def test_logged_model_reloads_and_reproduces_metrics(smoke, real_root, fresh_load_job):
    import keras

    from segkit.data.cache import load_arrays
    from segkit.data.dataset import discover
    from segkit.evaluation import evaluate

    run, model_uri = smoke.run, smoke.model_uri
    reloaded = mlflow.keras.load_model(model_uri)
    best = keras.saving.load_model(smoke.run_dir / "checkpoints" / "best.keras", compile=False)

    test_names = (real_root / "splits" / "val.txt").read_text().split()
    samples = [s for s in discover(real_root) if s.name in test_names]
    images, masks, _ = load_arrays(samples, 64, smoke.cache)
    x = images.astype(np.float32)
    np.testing.assert_allclose(reloaded.predict_on_batch(x), best.predict_on_batch(x), atol=1e-6)
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x)), reloaded.predict_on_batch(x),
                               atol=1e-6)
    # A fresh interpreter without segkit loads it too (the logged copy is uncompiled).
    res = fresh_load_job.wait(timeout=300)
    assert res.stdout.strip().endswith("(1, 64, 64, 1)"), res.stderr[-2000:]
    again = evaluate(reloaded, images, masks, [s.name for s in samples], split="official/test")
    logged = internal(run.data.metrics)
    assert again.metrics["mdice"] == pytest.approx(logged["test_mdice"], abs=1e-9)
    assert again.metrics["pixel_accuracy"] == pytest.approx(logged["test_pixel_accuracy"], abs=1e-9)


def test_evaluate_task_reproduces_the_training_run(smoke, evaluate_job):
    uri, run = smoke.uri, smoke.run
    res = evaluate_job.wait()
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([run.info.experiment_id],
                              filter_string="tags.`segkit.task` = 'evaluate'")
    assert len(runs) == 1
    ev = runs[0]
    assert ev.data.tags["segkit.source_run_id"] == run.info.run_id
    arts = {a.path for a in client.list_artifacts(ev.info.run_id, "evaluation")}
    assert {"evaluation/report.md", "evaluation/history.png"} <= arts  # history from source
    for key in ("test_mdice", "test_miou", "test_pixel_accuracy", "test_auc", "val_mdice"):
        assert internal(ev.data.metrics)[key] == pytest.approx(
            internal(run.data.metrics)[key], abs=1e-9), key


def test_predict_command_matches_the_logged_model(smoke, predict_job):
    from PIL import Image

    from segkit.data.dataset import load_image
    from segkit.evaluation import resize_probs

    job, inputs, out = predict_job
    res = job.wait()
    assert res.returncode == 0, res.stderr[-3000:]
    model = float32_copy(mlflow.keras.load_model(smoke.model_uri))  # as segkit predicts
    for path in inputs:
        written = np.asarray(Image.open(out / f"{path.stem}_mask.png"))
        with Image.open(path) as im:
            assert written.shape == (im.height, im.width)
        prob = model.predict_on_batch(load_image(path, 64)[None].astype(np.float32))[0, ..., 0]
        expected = np.where(resize_probs(prob, written.shape) >= 0.5, 255, 0)
        # Batch composition moves probabilities by ~1e-6: allow pixels sitting on 0.5 to flip.
        assert np.mean(written != expected) < 1e-3


def test_a_crash_in_evaluation_marks_the_run_failed_and_keeps_the_model(
        compose_cfg, real_root, tmp_path, monkeypatch):
    from segkit import experiment, report

    def crash(*args, **kwargs):
        raise RuntimeError("plotting exploded")

    monkeypatch.setattr(report, "evaluate_and_report", crash)
    uri = fresh_store(tmp_path / "mlflow.db")
    cfg = compose_cfg("debug=smoke", "trainer.epochs=1", f"data.root={real_root}",
                      f"data.cache_dir={tmp_path}/cache", f"tracking.uri={uri}",
                      "split.val_fraction=0.34", "callbacks.tensorboard.enabled=false")
    with pytest.raises(RuntimeError, match="plotting exploded"):
        experiment.run_experiment(cfg, root=ROOT, run_dir=tmp_path / "out")
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("segkit-smoke").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["segkit.error"] == "RuntimeError: plotting exploded"
    assert mlflow.keras.load_model(run.data.tags["segkit.model_uri"]).output_shape == (
        None, 64, 64, 1)
