"""A diverged run (a NaN or inf loss) stops at once and ends FAILED with the reason: nothing
is logged or evaluated, run.py prints one line and exits 1, and in a sweep the job is a
failed job, never a score that `sweep.skip_completed` would take as done."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from segkit.metric_names import internal
from tests.helpers import Job, cli_env, fresh_store

SMOKE = ("debug=smoke", "eval.plots=false", "callbacks.tensorboard.enabled=false",
         "split.val_fraction=0.34")
# Adam steps every weight by about lr: at 1e20 the next forward pass overflows to NaN on any
# data (at lr 1e3 the loss is NaN on some data, finite but huge on the tests' 16 images).
DIVERGING = "optimizer.lr=1e20"


def test_guard_stops_at_the_first_nonfinite_batch_and_keeps_no_diverged_checkpoint(tmp_path):
    """Batches of 2, NaN inputs from the 3rd batch: training stops after that batch (not at
    the epoch's end), the guard says where, and TrainingState saves no NaN model."""
    import keras

    from segkit.callbacks import DivergenceGuard
    from segkit.checkpoints import TrainingState

    x = np.ones((8, 4), np.float32)
    x[4:] = np.nan
    y = np.ones((8, 1), np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    guard, batches = DivergenceGuard(), []
    seen = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(b))
    state = TrainingState(tmp_path, "val_loss", "min")
    model.fit(x, y, batch_size=2, epochs=3, shuffle=False, validation_data=(x[:2], y[:2]),
              callbacks=[guard, seen, state], verbose=0)
    assert guard.reason == "loss is nan at epoch 1 batch 3"
    assert batches == [0, 1, 2]
    assert not list(tmp_path.iterdir())  # no best/last.keras, no state.json of a NaN epoch


def _runs(uri: str, experiment: str = "segkit-smoke") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100)


@pytest.mark.e2e
def test_a_diverged_run_fails_with_one_line_and_logs_no_model(real_root, smoke_cache,
                                                               tmp_path):
    uri = fresh_store(tmp_path / "mlflow.db")
    out = tmp_path / "run"
    res = Job.run_py(*SMOKE, DIVERGING, f"hydra.run.dir={out}", f"data.cache_dir={smoke_cache}",
                     env=cli_env(uri=uri, data=real_root)).wait(300)
    assert res.returncode == 1, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    assert errors[0].startswith("error: training diverged: loss is nan at epoch 1 batch ")
    assert "lower optimizer.lr (now 1e+20)" in errors[0]
    assert "optimizer.clipnorm" in errors[0]
    assert "Traceback" not in res.stderr
    (run,) = _runs(uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["segkit.error"].startswith("DivergedError: training diverged: ")
    assert "segkit.model_uri" not in run.data.tags
    assert not any(k.startswith("test_") for k in internal(run.data.metrics))  # not evaluated
    client = MlflowClient(uri)
    logged = client.search_logged_models([run.info.experiment_id])
    assert not [m for m in logged if m.source_run_id == run.info.run_id]
    assert not (out / "evaluation").exists()
    assert not (out / "checkpoints" / "last.keras").exists()  # no NaN model saved


@pytest.mark.e2e
def test_a_diverged_sweep_job_is_failed_and_never_a_completed_score(real_root, smoke_cache,
                                                                     tmp_path):
    """Two jobs, lr 1e-3 and 1e20: the second diverges. The summary counts it failed, its run
    is FAILED with the reason, and skip_completed finds only the healthy job done."""
    from omegaconf import OmegaConf

    from segkit.sweep.job import find_completed

    uri = fresh_store(tmp_path / "mlflow.db")
    res = Job.run_py("-m", *SMOKE, "trainer.epochs=1", "optimizer.lr=1e-3,1e20",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", f"data.cache_dir={smoke_cache}",
                     env=cli_env(uri=uri, data=real_root)).wait(600)
    assert res.returncode == 1, res.stderr[-3000:]  # a sweep with a failed job exits 1
    assert "1 failed" in res.stdout, res.stdout[-3000:]
    jobs = {r.data.params.get("optimizer.lr"): r for r in _runs(uri)
            if "mlflow.parentRunId" in r.data.tags}
    good, bad = jobs["0.001"], jobs["1e+20"]
    assert good.info.status == "FINISHED" and "val_mdice" in internal(good.data.metrics)
    assert bad.info.status == "FAILED"
    assert "training diverged" in bad.data.tags["segkit.error"]
    assert "val_mdice" not in internal(bad.data.metrics)  # no score
    cfg = OmegaConf.create({"tracking": {"uri": uri, "experiment": "segkit-smoke"},
                            "objective": "val_mdice"})
    assert find_completed(cfg, bad.data.tags["segkit.config_hash"]) is None
    found = find_completed(cfg, good.data.tags["segkit.config_hash"])
    assert found is not None and found.info.run_id == good.info.run_id
