"""`segkit compare`: paired per-image differences of two runs (or groups of runs) read from
their logged per-image scores, checked against SciPy; refusals name the difference."""

from __future__ import annotations

import csv

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats

from segkit.compare import CompareError, compare
from tests.helpers import restored_tracking_uri


def _run_with_scores(uri: str, tmp_path, name: str, scores: dict[str, float]) -> str:
    """A finished run of experiment "models" whose evaluation logged ``scores`` (through the
    client: no global MLflow state is left for later tests)."""
    folder = tmp_path / name / "evaluation"
    folder.mkdir(parents=True)
    with open(folder / "test_per_image.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "dice", "iou", "truth_fraction", "pred_fraction"])
        for image, dice in scores.items():
            writer.writerow([image, dice, dice / (2 - dice), 0.1, 0.1])
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("models")
    run = client.create_run(exp.experiment_id if exp else client.create_experiment("models"),
                            run_name=name)
    client.log_artifacts(run.info.run_id, str(folder), "evaluation")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rng = np.random.default_rng(0)
    names = [f"img{i:03d}" for i in range(40)]
    a = rng.uniform(0.5, 0.9, 40)
    b = np.clip(a + rng.normal(0.03, 0.04, 40), 0, 1)
    ids = {"a": _run_with_scores(uri, tmp_path, "a", dict(zip(names, a, strict=True))),
           "b": _run_with_scores(uri, tmp_path, "b", dict(zip(names, b, strict=True))),
           "b2": _run_with_scores(uri, tmp_path, "b2", dict(zip(names, b - 0.02,
                                                                   strict=True))),
           "other": _run_with_scores(uri, tmp_path, "other",
                                     {f"x{i}": 0.5 for i in range(40)})}
    with restored_tracking_uri():  # compare() points MLflow at the store: undone afterwards
        yield uri, ids, a, b


def test_paired_numbers_match_scipy_and_a_run_is_logged(store, tmp_path):
    uri, ids, a, b = store
    res, run_id, _ = compare(ids["a"], ids["b"], tracking_uri=uri, output=tmp_path / "out",
                          seed=1, draws=2000)
    diff = b - a
    assert res.n == 40 and res.mean_diff == pytest.approx(diff.mean())
    assert res.p_value == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert res.wins == (diff > 0).sum() and res.losses == (diff < 0).sum()
    assert res.ci_low < res.mean_diff < res.ci_high
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "comparison.json", "comparison.md", "paired.png", "paired_scores.csv"}
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["segkit.compare.a"] == ids["a"]
    assert run.data.tags["segkit.compare.b"] == ids["b"]
    assert run.data.metrics["mean_diff"] == pytest.approx(diff.mean())


def test_groups_average_image_by_image(store, tmp_path):
    uri, ids, a, b = store
    res, _, _ = compare(ids["a"], f"{ids['b']},{ids['b2']}", tracking_uri=uri,
                     output=tmp_path / "g", draws=500)
    assert res.mean_b == pytest.approx((b - 0.01).mean())


def test_refusals_name_the_problem(store, tmp_path):
    uri, ids, _, _ = store
    with pytest.raises(CompareError, match="different test images: 40 only in A"):
        compare(ids["a"], ids["other"], tracking_uri=uri, output=tmp_path / "x")
    with pytest.raises(CompareError, match="no such MLflow run"):
        compare(ids["a"], "0123456789abcdef0123456789abcdef", tracking_uri=uri,
                output=tmp_path / "x")
    with pytest.raises(CompareError, match="--metric hd95"):
        compare(ids["a"], ids["b"], metric="hd95", tracking_uri=uri, output=tmp_path / "x")


def test_the_cli_prints_the_table(store, tmp_path, capsys):
    from segkit.cli import main

    uri, ids, _, _ = store
    assert main(["compare", ids["a"], ids["b"], "--tracking-uri", uri, "--draws", "500",
                 "--output", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "B - A" in out and "Wilcoxon p" in out and "logged as run" in out
    assert main(["compare", ids["a"], ids["other"], "--tracking-uri", uri,
                 "--output", str(tmp_path / "cli2")]) == 2
    assert "error: the two sides were scored on different test images" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_run_without_per_image_scores_is_evaluated_on_the_other_split(smoke_run, tmp_path):
    """A run that logged no per-image CSV (an older run) has its model evaluated on the test
    split of the other side's run: the same model on the same images gives every image the
    same score, so B - A is exactly 0 with all ties."""
    client = MlflowClient(smoke_run.uri)
    mlflow.set_tracking_uri(smoke_run.uri)
    with mlflow.start_run(experiment_id=smoke_run.run.info.experiment_id, run_name="old",
                          tags={"segkit.model_uri": smoke_run.model_uri}) as old:
        pass
    res, _, (a, b) = compare(smoke_run.run_id, old.info.run_id, tracking_uri=smoke_run.uri,
                             output=tmp_path / "o", draws=200)
    logged = client.download_artifacts(smoke_run.run_id, "evaluation/test_per_image.csv",
                                       str(tmp_path))
    with open(logged, newline="") as fh:
        expected = {r["name"]: float(r["dice"]) for r in csv.DictReader(fh)}
    assert b.scores == pytest.approx(expected) and a.scores == pytest.approx(expected)
    assert res.mean_diff == 0 and res.ties == res.n == len(expected)
    with pytest.raises(CompareError, match="no per-image scores .* on either side"):
        compare(old.info.run_id, old.info.run_id, tracking_uri=smoke_run.uri,
                output=tmp_path / "x")
