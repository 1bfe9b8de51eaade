"""What a finished run leaves for a person: the self-contained HTML report and the run
description in MLflow, the bootstrap intervals, and the summary it prints at the end."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from segkit.metric_names import internal
from segkit.summary import run_lines, ui_page


@pytest.mark.e2e  # reads the session's smoke run
def test_the_html_report_embeds_its_figures_and_the_run_has_a_description(smoke_run,
                                                                          tmp_path):
    client = MlflowClient(smoke_run.uri)
    page = Path(client.download_artifacts(smoke_run.run_id, "evaluation/report.html",
                                          str(tmp_path))).read_text()
    assert page.count("data:image/png;base64,") >= 5  # history, confusion, ROC, PR, ...
    note = smoke_run.run.data.tags["mlflow.note.content"]
    assert note.startswith("**Held-out test:** mDice ")
    assert "Command: `python " in note


@pytest.mark.e2e
def test_test_mdice_and_miou_have_bootstrap_intervals(smoke_run):
    m = internal(smoke_run.run.data.metrics)
    for key in ("test_mdice", "test_miou"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"]
        assert m[f"{key}_ci_low"] < m[f"{key}_ci_high"]


def test_the_end_of_run_summary_names_every_place():
    run = SimpleNamespace(
        info=SimpleNamespace(status="FINISHED", run_name="bright-owl", run_id="abc",
                             experiment_id="3", artifact_uri="file:///m/abc/artifacts"),
        data=SimpleNamespace(metrics={"test/mdice": 0.8, "test/miou": 0.7,  # as logged
                                      "test/pixel_accuracy": 0.95},
                             tags={"segkit.model_uri": "models:/m-1"}))
    lines = run_lines(run, "sqlite:////x/mlflow.db", "segkit", Path("/out/run1"))
    assert lines == [
        "run FINISHED: experiment 'segkit', run 'bright-owl' (id abc)",
        "  held-out test: mDice 0.8000, mIoU 0.7000, pixel accuracy 0.9500",
        "  page:   http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning",
        "          (start the UI with: mlflow ui --backend-store-uri sqlite:////x/mlflow.db)",
        "  report: file:///m/abc/artifacts/evaluation/report.html",
        "  model:  models:/m-1",
        "  folder: /out/run1"]
    assert ui_page("http://10.0.0.1:5000/", "3", "abc") == \
        "http://10.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"


def test_run_names_differ_under_one_seed_and_leave_the_seeded_state_alone():
    import random
    import re

    from segkit.tracking import fresh_name

    names = set()
    for _ in range(5):
        random.seed(42)  # what keras.utils.set_random_seed(42) does to Python's random
        names.add(fresh_name())
        assert random.random() == random.Random(42).random()  # the seeded stream is intact
    assert len(names) > 1
    assert all(re.fullmatch(r"[a-z]+-[a-z]+-\d+", n) for n in names), names  # MLflow's form
