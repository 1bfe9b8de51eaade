"""MLflow metric keys in UI groups, and back to segkit's names."""

import pytest

from segkit.metric_names import from_mlflow, internal, mlflow_keys, to_mlflow


@pytest.mark.parametrize(("name", "key"), [
    ("test_mdice", "test/mdice"), ("test_tuned_mdice", "test/tuned_mdice"),
    ("test_mdice_ci_low", "test/mdice_ci_low"), ("val_loss", "val/loss"),
    ("val_mdice", "val/mdice"), ("loss", "train/loss"), ("dice", "train/dice"),
    ("learning_rate", "train/learning_rate"), ("epochs_run", "train/epochs_run"),
    ("epoch_seconds", "time/epoch_seconds"), ("train_seconds", "time/train_seconds"),
    ("best_val_mdice", "best_val_mdice"), ("jobs_total", "jobs_total"),
])
def test_names_map_to_groups_and_back(name, key):
    assert to_mlflow(name) == key
    assert from_mlflow(key) == name


def test_old_underscore_keys_and_foreign_groups_read_as_they_are():
    assert from_mlflow("test_mdice") == "test_mdice"  # a run logged before the groups
    assert from_mlflow("loss") == "loss"
    assert from_mlflow("system/cpu_utilization_percentage") == "system/cpu_utilization_percentage"
    assert from_mlflow("train/unknown") == "train/unknown"  # not ours: not renamed


def test_a_run_reads_back_with_the_names_it_was_logged_with():
    logged = {"test_mdice": 0.8, "val_loss": 0.2, "loss": 0.3, "train_seconds": 12.0}
    assert internal(mlflow_keys(logged)) == logged
    assert set(mlflow_keys(logged)) == {"test/mdice", "val/loss", "train/loss",
                                        "time/train_seconds"}
