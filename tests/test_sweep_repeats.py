"""A sweep over seeds is a group: the parent run gets each metric's mean, std, min, max and
95% t interval across the seeds, and the console says so."""

from __future__ import annotations

import csv

import pytest
from mlflow.tracking import MlflowClient

from segkit.metric_names import internal
from tests.helpers import cli_env, fresh_store, run_py

pytestmark = pytest.mark.e2e


def test_a_seed_sweep_logs_its_interval_to_the_parent(real_root, smoke_cache, tmp_path):
    uri = fresh_store(tmp_path / "mlflow.db")
    res = run_py("-m", "debug=smoke", "trainer.epochs=1", "split.val_fraction=0.34",
                 "eval.plots=false", "callbacks.tensorboard.enabled=false",
                 f"data.cache_dir={smoke_cache}", f"hydra.sweep.dir={tmp_path}/sweep",
                 "seed=1,2", env=cli_env(uri=uri, data=real_root))
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("segkit-smoke").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("segkit.sweep") == "parent"]
    children = [r for r in runs if r is not parent and "mlflow.parentRunId" in r.data.tags]
    values = sorted(internal(c.data.metrics)["test_mdice"] for c in children)
    m = internal(parent.data.metrics)
    assert m["test_mdice_mean"] == pytest.approx(sum(values) / 2)
    assert (m["test_mdice_min"], m["test_mdice_max"]) == pytest.approx(tuple(values))
    assert m["test_mdice_n"] == 2
    if values[0] != values[1]:
        assert m["test_mdice_ci_low"] < m["test_mdice_mean"] < m["test_mdice_ci_high"]
    assert "val_mdice_mean" in m
    with open(tmp_path / "sweep" / "groups.csv", newline="") as fh:
        (group,) = list(csv.DictReader(fh))
    assert int(group["runs"]) == 2
    assert "1 configuration(s) over repeated seeds/folds" in res.stdout
