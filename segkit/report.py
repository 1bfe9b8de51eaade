"""The evaluation report: score the validation and test splits, choose the threshold, draw
the figures, write report.md (metric table + figures), CSVs and JSON, and log them.

The Markdown is rendered by hand on purpose (no template engine, no Markdown library): the
report is a heading, a few notes, one table and one image per figure.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig

from segkit import plots
from segkit.data import Prepared
from segkit.evaluation import Evaluation, evaluate, predict_batches
from segkit.fileio import write_text

# Metrics that count pixels or images: shown as integers with thousands separators.
COUNT_METRICS = frozenset({"tp", "fp", "tn", "fn", "images"})
MISSING = "–"


def format_value(name: str, value: object) -> str:
    """One table cell: counts as ``1,234,567``, other numbers with 4 decimals."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            return str(number)
        if name.lower() in COUNT_METRICS and number.is_integer():
            return f"{int(number):,}"
        return f"{number:.4f}"
    return _cell(str(value))


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no pipes, no line breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def metric_table(metrics: Mapping[str, Mapping[str, object]]) -> list[str]:
    """Markdown table lines: one row per metric (first-seen order), one column per split."""
    splits = list(metrics)
    names = list(dict.fromkeys(name for split in splits for name in metrics[split]))
    lines = ["| metric | " + " | ".join(_cell(s) for s in splits) + " |",
             "|:--|" + "--:|" * len(splits)]
    for name in names:
        cells = [format_value(name, metrics[s][name]) if name in metrics[s] else MISSING
                 for s in splits]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    return lines


def _image(caption: str, file: str) -> str:
    alt = " ".join(caption.split()).replace("[", "\\[").replace("]", "\\]")
    target = f"<{file}>" if any(c.isspace() or c in "()<>" for c in file) else file
    return f"![{alt}]({target})"


def render_report(*, title: str, metrics: Mapping[str, Mapping[str, object]],
                  plots: Mapping[str, str], notes: Sequence[str] | None = None) -> str:
    """The Markdown text of the report (see :func:`write_report`)."""
    lines = [f"# {' '.join(title.split())}", ""]
    if notes:
        for note in notes:
            first, *rest = str(note).strip().splitlines() or [""]
            lines.append(f"- {first}")
            lines.extend(f"  {line}" for line in rest)
        lines.append("")
    lines.append("## Metrics")
    lines.append("")
    lines.extend(metric_table(metrics) if metrics else ["No metrics."])
    lines.append("")
    for caption, file in plots.items():
        lines += [f"## {' '.join(caption.split())}", "", _image(caption, file), ""]
    return "\n".join(lines)


def write_report(path: Path, *, title: str, metrics: dict[str, dict[str, float]],
                 plots: dict[str, str], notes: list[str] | None = None) -> Path:
    """Write the Markdown report atomically (temp file in the same folder, then rename).

    ``metrics`` maps split -> metric -> value (one table column per split, rows in
    first-seen order, "–" where a split lacks a metric); ``plots`` maps caption -> PNG file
    name relative to the report; ``notes`` become a bullet list under the title.
    """
    return write_text(path, render_report(title=title, metrics=metrics, plots=plots,
                                          notes=notes))


# Metrics also reported at the threshold chosen on validation (prefix test_tuned_).
TUNED_KEYS = ("mdice", "miou", "pixel_accuracy", "pixel_dice", "pixel_iou", "precision",
              "recall", "specificity", "f2")


def _write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def _gallery_cases(model: keras.Model, data: Prepared, result: Evaluation,
                   batch_size: int, tta: bool = False) -> list[dict]:
    """Best, median and worst test images by Dice (two of each when there are enough)."""
    rows = result.per_image()
    order = np.argsort([r["dice"] for r in rows], kind="stable")
    n = len(order)
    k = 2 if n >= 6 else 1
    picks = [("best", i) for i in order[::-1][:k]]
    picks += [("median", i) for i in order[n // 2 - k // 2: n // 2 - k // 2 + k]]
    picks += [("worst", i) for i in order[:k]]
    idx = np.array([i for _, i in picks])
    images = data.images["test"][idx]
    probs = np.concatenate([p for _, p in predict_batches(model, images, batch_size, tta)])
    return [{"title": f"{label}: {rows[i]['name']}", "image": images[j],
             "truth": data.masks["test"][i, ..., 0] > 0, "pred": probs[j] >= result.threshold,
             "dice": rows[i]["dice"]} for j, (label, i) in enumerate(picks)]


def _figures(model: keras.Model, data: Prepared, cfg: DictConfig, results: dict,
             chosen: float, out_dir: Path, history: dict | None) -> dict[str, str]:
    """The evaluation figures (caption -> PNG file name in ``out_dir``)."""
    test, ev = results["test"], cfg.eval
    figures = {}
    if history:
        monitor = cfg.callbacks.checkpoint.monitor
        scores = history.get(monitor)
        best = None
        if scores:
            pick = np.argmax if cfg.callbacks.checkpoint.mode == "max" else np.argmin
            best = int(pick(scores))
        figures["Training history"] = plots.plot_history(
            history, out_dir / "history.png", best_epoch=best, monitor=monitor).name
    m = test.metrics
    figures["Confusion matrix (test)"] = plots.plot_confusion(
        m["tp"], m["fp"], m["tn"], m["fn"], out_dir / "confusion_test.png").name
    fpr, tpr, auc = test.hist.roc()
    figures["ROC (test)"] = plots.plot_roc(fpr, tpr, auc, out_dir / "roc_test.png").name
    recall, precision, ap = test.hist.pr()
    figures["Precision-recall (test)"] = plots.plot_pr(
        recall, precision, ap, out_dir / "pr_test.png", prevalence=test.hist.prevalence()).name
    for part, r in results.items():
        figures[f"IoU and Dice vs threshold ({part})"] = plots.plot_threshold_curves(
            r.thresholds, r.curves(), out_dir / f"threshold_{part}.png", chosen=chosen,
            split="validation" if part == "val" else "test").name
    figures["Per-image Dice (test)"] = plots.plot_dice_histogram(
        np.array([row["dice"] for row in test.per_image()]), out_dir / "dice_hist_test.png").name
    cases = _gallery_cases(model, data, test, ev.batch_size, ev.tta)
    figures["Best, median and worst test images"] = plots.plot_gallery(
        cases, out_dir / "gallery_test.png").name
    return figures


def evaluate_and_report(model: keras.Model, data: Prepared, cfg: DictConfig, out_dir: Path,
                        history: dict | None = None) -> dict[str, float]:
    """Score the validation carve-out and the held-out test split, choose the threshold on
    validation, write plots, CSVs, metrics JSON and report.md to ``out_dir``, log them all
    to the active MLflow run, and return the logged metrics."""
    ev = cfg.eval
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {part: evaluate(model, data.images[part], data.masks[part], data.names(part),
                              split=f"{data.split.name}/{part}", threshold=ev.threshold,
                              batch_size=ev.batch_size, bins=ev.bins, tta=ev.tta)
               for part in ("val", "test")}
    val, test = results["val"], results["test"]
    chosen = val.best_threshold() if ev.select_threshold else ev.threshold
    metrics = {f"{p}_{k}": v for p, r in results.items() for k, v in r.metrics.items()}
    metrics["val_best_threshold"] = chosen
    metrics.update({f"test_tuned_{k}": test.at(chosen)[k] for k in TUNED_KEYS})
    if ev.original_resolution:
        full = evaluate(model, data.images["test"], data.masks["test"], data.names("test"),
                        split=f"{data.split.name}/test (original resolution)",
                        threshold=chosen, batch_size=ev.batch_size, bins=ev.bins,
                        originals=[data.samples[n] for n in data.names("test")], tta=ev.tta)
        metrics.update({f"test_fullres_{k}": v for k, v in full.metrics.items()})

    for part, r in results.items():
        _write_csv(r.per_image(), out_dir / f"{part}_per_image.csv")
    summary = {"splits": {p: r.split for p, r in results.items()}, "threshold": ev.threshold,
               "chosen_threshold": chosen, "metrics": metrics}
    write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))

    plots_on = ev.get("plots", True)
    figures = _figures(model, data, cfg, results, chosen, out_dir, history) if plots_on else {}

    sizes = data.split.sizes()
    notes = [f"split: {data.split.name}; train {sizes['train']}, validation {sizes['val']}, "
             f"held-out test {sizes['test']} images; {data.image_size}x{data.image_size}",
             f"threshold {ev.threshold} for every figure; chosen on validation: {chosen} "
             "(test_tuned_* metrics)",
             "mDice / mIoU: per image, then averaged; pixel_*: pooled over all pixels",
             "test-time augmentation (flip averaging): " + ("on" if ev.tta else "off")]
    if not plots_on:
        notes.append("figures: off (eval.plots=false)")
    table = {"validation": val.metrics, "test": test.metrics,
             f"test @ {chosen}": test.at(chosen)}
    write_report(out_dir / "report.md", title="segkit evaluation report", metrics=table,
                 plots=figures, notes=notes)
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(out_dir), "evaluation")
    return metrics
