"""The lines a finished run prints: where its results went (experiment, run, the MLflow UI
page, the report, the model, the run folder) and its headline held-out metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import mlflow

from segkit import tags as tag
from segkit.metric_names import internal

UI_DEFAULT = "http://127.0.0.1:5000"  # where `mlflow ui` (and `make ui`) serves by default
HEADLINE = (("test_mdice", "mDice"), ("test_miou", "mIoU"), ("test_pixel_accuracy",
                                                            "pixel accuracy"),
            ("test_tuned_mdice", "mDice at the validation threshold"))


def ui_page(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI: the server itself for http(s) stores, else the
    default address of ``mlflow ui`` started on the same store. ``workflowType`` opens the
    UI's model-training view (its default view is GenAI's, which hides the runs' charts)."""
    base = tracking_uri.rstrip("/") if urlparse(tracking_uri).scheme in ("http", "https") \
        else UI_DEFAULT
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def headline(metrics: Mapping[str, float]) -> str:
    """``mDice 0.8503 [0.8170, 0.8801], mIoU ..., pixel accuracy ...``: the finite headline
    test metrics, each with its bootstrap interval when the run has one."""
    shown = []
    for key, label in HEADLINE:
        value = metrics.get(key, math.nan)
        if not math.isfinite(value):
            continue
        lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        ci = f" [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""
        shown.append(f"{label} {value:.4f}{ci}")
    return ", ".join(shown) or "no held-out metric"


def run_lines(run: mlflow.entities.Run, tracking_uri: str, experiment: str,
              run_dir: Path) -> list[str]:
    """The summary of a finished run, one fact per line."""
    info, data = run.info, run.data
    lines = [f"run {info.status}: experiment {experiment!r}, run {info.run_name!r} "
             f"(id {info.run_id})",
             f"  held-out test: {headline(internal(data.metrics))}",
             f"  page:   {ui_page(tracking_uri, info.experiment_id, info.run_id)}"]
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        lines.append(f"          (start the UI with: mlflow ui --backend-store-uri "
                     f"{tracking_uri})")
    lines += [f"  report: {info.artifact_uri}/evaluation/report.html",
              f"  model:  {data.tags.get(tag.MODEL_URI) or data.tags.get(tag.SOURCE_MODEL_URI)}",
              f"  folder: {run_dir}"]
    return lines


def print_run_summary(tracking_uri: str, experiment: str, run_dir: Path,
                      in_sweep: bool = False) -> None:
    """Print where the last finished run's results are; one line inside a sweep (whose
    own summary follows at its end)."""
    last = mlflow.last_active_run()
    if last is None:
        return
    run = mlflow.MlflowClient(tracking_uri).get_run(last.info.run_id)
    if in_sweep:
        metrics = internal(run.data.metrics)
        print(f"job run {run.info.run_id} ({run.info.run_name}): {headline(metrics)}", flush=True)
        return
    print("\n".join(run_lines(run, tracking_uri, experiment, run_dir)), flush=True)
