"""The self-contained HTML report, the run description, and undefined metrics left out."""

from __future__ import annotations

import base64
import math

import numpy as np
from PIL import Image

from segkit.html_report import render_html, write_html
from segkit.markdown import format_value
from segkit.report import describe_run, log_metrics


def test_figures_are_embedded_and_text_is_escaped(tmp_path):
    png = tmp_path / "fig.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png)
    page = render_html(title="a <b> report", metrics={"test": {"mdice": 0.5, "tp": 1234.0}},
                       figures={"ROC & PR": png}, notes=["x < y"])
    assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() in page
    assert "<title>a &lt;b&gt; report</title>" in page and "x &lt; y" in page
    assert "<h2>ROC &amp; PR</h2>" in page
    assert "<td>0.5000</td>" in page and "<td>1,234</td>" in page
    path = write_html(tmp_path / "report.html", title="t", metrics={}, figures={})
    assert path.read_text().startswith("<!DOCTYPE html>")


def test_undefined_metrics_are_missing_not_numbers(monkeypatch):
    logged = {}
    monkeypatch.setattr("mlflow.log_metrics", logged.update)
    undefined = log_metrics({"test_mdice": 0.8, "test_auc": math.nan, "val_auc": math.inf})
    assert logged == {"test/mdice": 0.8} and undefined == ["test_auc", "val_auc"]  # UI group
    assert format_value("auc", math.nan) == "–"


def test_the_headline_shows_the_bootstrap_interval():
    from segkit.summary import headline

    assert headline({"test_mdice": 0.85, "test_mdice_ci_low": 0.82,
                     "test_mdice_ci_high": 0.88}) == "mDice 0.8500 [0.8200, 0.8800]"


def test_the_run_description_has_the_headline_and_the_command():
    text = describe_run({"test_mdice": 0.81234, "test_miou": 0.7, "test_pixel_accuracy": 0.95,
                         "test_tuned_mdice": math.nan}, ["test_tuned_mdice"])
    assert "mDice 0.8123, mIoU 0.7000, pixel accuracy 0.9500 (95% bootstrap" in text
    assert "at the validation threshold" not in text  # undefined: not shown as a number
    assert "Command: `python " in text and "Undefined on this data, not logged" in text
