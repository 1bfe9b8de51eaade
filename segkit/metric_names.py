"""The names metrics have in MLflow, and back.

Inside segkit (JSON, CSV, history, ``objective: val_mdice``) a metric keeps its underscore
name; in MLflow it is logged under a ``/`` group, because the MLflow UI groups a run's charts
by the text before the first ``/``:

    test_mdice -> test/mdice        val_loss -> val/loss         loss -> train/loss
    test_tuned_mdice -> test/tuned_mdice    epoch_seconds -> time/epoch_seconds

``from_mlflow`` inverts ``to_mlflow``; names of neither form (older runs logged
``test_mdice`` as is) pass through both unchanged, so every reader works on old and new runs.
"""

from __future__ import annotations

from collections.abc import Mapping

SPLITS = ("test", "val")  # ``<split>_<name>`` -> ``<split>/<name>``
TRAIN = ("loss", "accuracy", "dice", "iou", "mean_image_dice", "learning_rate", "epochs_run",
         "time_limit_hit")
TIME = ("epoch_seconds", "train_seconds")


def to_mlflow(name: str) -> str:
    """The MLflow key of the segkit metric ``name``."""
    for split in SPLITS:
        if name.startswith(f"{split}_"):
            return f"{split}/{name[len(split) + 1:]}"
    if name in TRAIN:
        return f"train/{name}"
    if name in TIME:
        return f"time/{name}"
    return name


def from_mlflow(key: str) -> str:
    """The segkit name of the MLflow metric ``key``."""
    group, sep, rest = key.partition("/")
    if not sep:
        return key
    if group in SPLITS:
        return f"{group}_{rest}"
    if (group == "train" and rest in TRAIN) or (group == "time" and rest in TIME):
        return rest
    return key


def mlflow_keys(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` keyed by their MLflow keys, ready to log."""
    return {to_mlflow(k): v for k, v in metrics.items()}


def internal(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's ``data.metrics`` keyed by segkit names (old runs' keys pass as they are)."""
    return {from_mlflow(k): v for k, v in metrics.items()}
