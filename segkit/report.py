"""The evaluation report: score the validation and test splits, choose the threshold, draw
the figures, write report.md (segkit.markdown renders it), CSVs and JSON, and log them."""

from __future__ import annotations

import csv
import io
import json
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig

from segkit import metric_names, plots
from segkit import tags as tag
from segkit.data import Prepared
from segkit.data.external import ExternalData
from segkit.evaluation import Evaluation, evaluate, predict_batches
from segkit.fileio import write_text
from segkit.html_report import write_html
from segkit.markdown import write_report
from segkit.runtimes import Predictor
from segkit.statistics import bootstrap_ci
from segkit.summary import headline

TITLE = "segkit evaluation report"
# Metrics also reported at the threshold chosen on validation (prefix test_tuned_).
TUNED_KEYS = ("mdice", "miou", "pixel_accuracy", "pixel_dice", "pixel_iou", "precision",
              "recall", "specificity", "f2")


def _write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def _gallery_cases(model: keras.Model | Predictor, arrays: tuple[np.ndarray, np.ndarray],
                   result: Evaluation, batch_size: int, tta: bool = False) -> list[dict]:
    """Best, median and worst images by Dice (two of each when there are enough), from the
    (images, masks) ``arrays`` at the model's size that ``result`` scored."""
    rows = result.per_image()
    order = np.argsort([r["dice"] for r in rows], kind="stable")
    n = len(order)
    k = 2 if n >= 6 else 1
    picks = [("best", i) for i in order[::-1][:k]]
    picks += [("median", i) for i in order[n // 2 - k // 2: n // 2 - k // 2 + k]]
    picks += [("worst", i) for i in order[:k]]
    idx = np.array([i for _, i in picks])
    images = arrays[0][idx]
    probs = np.concatenate([p for _, p in predict_batches(model, images, batch_size, tta)])
    return [{"title": f"{label}: {rows[i]['name']}", "image": images[j],
             "truth": arrays[1][i, ..., 0] > 0, "pred": probs[j] >= result.threshold,
             "dice": rows[i]["dice"]} for j, (label, i) in enumerate(picks)]


def _figures(model: keras.Model | Predictor, data: Prepared, cfg: DictConfig, results: dict,
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
    cases = _gallery_cases(model, (data.images["test"], data.masks["test"]), test,
                           ev.batch_size, ev.tta)
    figures["Best, median and worst test images"] = plots.plot_gallery(
        cases, out_dir / "gallery_test.png", threshold=test.threshold).name
    return figures


def score(model: keras.Model | Predictor, data: Prepared,
          ev: DictConfig) -> tuple[dict, float, dict]:
    """Per-split evaluations (validation, test), the threshold chosen on validation, and the
    flat metrics to log (``val_*``, ``test_*``, ``test_tuned_*``, ``test_fullres_*``)."""
    samples = [data.samples[n] for n in data.names("test")]
    edges = {"test": (samples, ev.nsd_tolerance)} if ev.boundary else {}
    results = {part: evaluate(model, data.images[part], data.masks[part], data.names(part),
                              split=f"{data.split.name}/{part}", threshold=ev.threshold,
                              batch_size=ev.batch_size, bins=ev.bins, tta=ev.tta,
                              boundary=edges.get(part))
               for part in ("val", "test")}
    test = results["test"]
    chosen = results["val"].best_threshold() if ev.select_threshold else ev.threshold
    metrics = {f"{p}_{k}": v for p, r in results.items() for k, v in r.metrics.items()}
    metrics["val_best_threshold"] = chosen
    metrics.update({f"test_tuned_{k}": test.at(chosen)[k] for k in TUNED_KEYS})
    if ev.original_resolution:
        full = evaluate(model, data.images["test"], data.masks["test"], data.names("test"),
                        split=f"{data.split.name}/test (original resolution)",
                        threshold=chosen, batch_size=ev.batch_size, bins=ev.bins,
                        originals=samples, tta=ev.tta)
        metrics.update({f"test_fullres_{k}": v for k, v in full.metrics.items()})
    return results, chosen, metrics


def bootstrap_intervals(test: Evaluation, draws: int, seed: int) -> dict[str, float]:
    """95% percentile-bootstrap intervals of the test mDice and mIoU, resampling images
    (``test_mdice_ci_low`` ... ``test_miou_ci_high``); nothing when ``draws`` is 0."""
    if not draws:
        return {}
    rows = test.per_image()
    out = {}
    for key, column in (("mdice", "dice"), ("miou", "iou")):
        lo, hi = bootstrap_ci(np.array([r[column] for r in rows]), draws=draws, seed=seed)
        out.update({f"test_{key}_ci_low": lo, f"test_{key}_ci_high": hi})
    return out


def _interval_note(metrics: Mapping[str, float], draws: int) -> list[str]:
    if "test_mdice_ci_low" not in metrics:
        return []
    return [f"95% bootstrap intervals over test images ({draws:,} draws): mDice "
            f"{metrics['test_mdice']:.4f} [{metrics['test_mdice_ci_low']:.4f}, "
            f"{metrics['test_mdice_ci_high']:.4f}], mIoU {metrics['test_miou']:.4f} "
            f"[{metrics['test_miou_ci_low']:.4f}, {metrics['test_miou_ci_high']:.4f}]"]


def _notes(data: Prepared, ev: DictConfig, chosen: float) -> list[str]:
    sizes = data.split.sizes()
    notes = [f"split: {data.split.name}; train {sizes['train']}, validation {sizes['val']}, "
             f"held-out test {sizes['test']} images; {data.image_size}x{data.image_size}",
             f"threshold {ev.threshold} for every figure; chosen on validation: {chosen} "
             "(test_tuned_* metrics)",
             "mDice / mIoU: per image, then averaged; pixel_*: pooled over all pixels",
             "test-time augmentation (flip averaging): " + ("on" if ev.tta else "off")]
    if ev.boundary:
        notes.append(f"HD95 / NSD: per test image at its original resolution, threshold "
                     f"{ev.threshold}, NSD tolerance {ev.nsd_tolerance:g} px; both masks empty:"
                     " HD95 0, NSD 1; one empty: HD95 undefined (left out of mhd95, counted "
                     "in hd95_undefined), NSD 0")
    if not ev.plots:
        notes.append("figures: off (eval.plots=false)")
    return notes


def describe_run(metrics: Mapping[str, float], undefined: Sequence[str]) -> str:
    """The run's MLflow description (the note on its run page): the headline held-out
    metrics and the command that made it."""
    lines = [f"**Held-out test:** {headline(metrics)} (95% bootstrap intervals in brackets).",
             "", f"Command: `{shlex.join(['python', *sys.argv])}`", "",
             "Report: `evaluation/report.html` (figures embedded) and `evaluation/report.md`."]
    if undefined:
        lines += ["", f"Undefined on this data, not logged: {', '.join(undefined)}."]
    return "\n".join(lines)


def _write_and_log(out_dir: Path, title: str, table: dict, figures: dict[str, str],
                   notes: list[str], metrics: dict[str, float],
                   undefined: list[str]) -> dict[str, float]:
    """report.md and report.html in ``out_dir``, then the metrics, the run's description and
    the folder (as ``evaluation/``) logged to the active run; returns ``metrics``."""
    write_report(out_dir / "report.md", title=title, metrics=table, plots=figures, notes=notes)
    write_html(out_dir / "report.html", title=title, metrics=table, notes=notes,
               figures={c: out_dir / f for c, f in figures.items()})
    log_metrics(metrics)
    mlflow.set_tag(tag.NOTE, describe_run(metrics, undefined))
    mlflow.log_artifacts(str(out_dir), "evaluation")
    return metrics


def log_metrics(metrics: Mapping[str, float]) -> list[str]:
    """Log the finite metrics; return the names of the undefined ones (NaN: e.g. AUC when
    a split has no positive pixel), which are left out rather than logged as numbers."""
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
    mlflow.log_metrics(metric_names.mlflow_keys(finite))
    return sorted(set(metrics) - set(finite))


def evaluate_and_report(model: keras.Model | Predictor, data: Prepared, cfg: DictConfig,
                        out_dir: Path, history: dict | None = None) -> dict[str, float]:
    """Score the validation carve-out and the held-out test split, choose the threshold on
    validation, write plots, CSVs, metrics JSON, report.md and a self-contained report.html
    to ``out_dir``, log them all to the active MLflow run with a run description, and
    return the metrics."""
    ev = cfg.eval
    out_dir.mkdir(parents=True, exist_ok=True)
    results, chosen, metrics = score(model, data, ev)
    metrics.update(bootstrap_intervals(results["test"], ev.bootstrap_draws, cfg.seed))
    for part, r in results.items():
        _write_csv(r.per_image(), out_dir / f"{part}_per_image.csv")
    summary = {"splits": {p: r.split for p, r in results.items()}, "threshold": ev.threshold,
               "chosen_threshold": chosen, "metrics": metrics}
    write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))
    figures = _figures(model, data, cfg, results, chosen, out_dir, history) if ev.plots else {}
    val, test = results["val"], results["test"]
    table = {"validation": val.metrics, "test": test.metrics,
             f"test @ {chosen}": test.at(chosen)}
    undefined = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    notes = _notes(data, ev, chosen) + _interval_note(metrics, ev.bootstrap_draws)
    if undefined:
        notes.append(f"undefined on this data (shown as –, not logged): {', '.join(undefined)}")
    return _write_and_log(out_dir, TITLE, table, figures, notes, metrics, undefined)


def _external_figures(model: keras.Model | Predictor, ext: ExternalData, result: Evaluation,
                      ev: DictConfig, out_dir: Path) -> dict[str, str]:
    """The figures of an external set (caption -> PNG file name in ``out_dir``)."""
    m = result.metrics
    fpr, tpr, auc = result.hist.roc()
    recall, precision, ap = result.hist.pr()
    dice = np.array([row["dice"] for row in result.per_image()])
    cases = _gallery_cases(model, (ext.images, ext.masks), result, ev.batch_size, ev.tta)
    return {
        "Confusion matrix": plots.plot_confusion(m["tp"], m["fp"], m["tn"], m["fn"],
                                                 out_dir / "confusion_test.png").name,
        "ROC": plots.plot_roc(fpr, tpr, auc, out_dir / "roc_test.png").name,
        "Precision-recall": plots.plot_pr(recall, precision, ap, out_dir / "pr_test.png",
                                          prevalence=result.hist.prevalence()).name,
        "IoU and Dice vs threshold": plots.plot_threshold_curves(
            result.thresholds, result.curves(), out_dir / "threshold_test.png",
            chosen=ev.threshold, split="test").name,
        "Per-image Dice": plots.plot_dice_histogram(dice, out_dir / "dice_hist_test.png").name,
        "Best, median and worst images (model size)": plots.plot_gallery(
            cases, out_dir / "gallery_test.png", threshold=result.threshold).name}


def _external_notes(ext: ExternalData, ev: DictConfig) -> list[str]:
    notes = [f"external test set {ext.source.name}: {len(ext.samples)} images from "
             f"{ext.source.root}, every one a test image (no split), model input "
             f"{ext.images.shape[1]}x{ext.images.shape[2]}",
             "scored at each image's original resolution: probabilities resized back "
             f"bilinearly, masks thresholded at 128, threshold {ev.threshold}",
             "mDice / mIoU: per image, then averaged; pixel_*: pooled over all pixels",
             "test-time augmentation (flip averaging): " + ("on" if ev.tta else "off")]
    if ev.boundary:
        notes.append(f"HD95 / NSD: NSD tolerance {ev.nsd_tolerance:g} px; both masks empty: "
                     "HD95 0, NSD 1; one empty: HD95 undefined (left out of mhd95, counted in "
                     "hd95_undefined), NSD 0")
    return notes


def report_external(model: keras.Model | Predictor, ext: ExternalData, cfg: DictConfig,
                    out_dir: Path) -> dict[str, float]:
    """Score ``model`` on an external set at each image's original resolution (HD95/NSD and
    the bootstrap interval as configured), write the report, per-image CSV and JSON to
    ``out_dir``, log them and the ``test_*`` metrics to the active MLflow run; return them."""
    ev = cfg.eval
    out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate(model, ext.images, ext.masks, ext.names,
                      split=f"{ext.source.name} (external)", threshold=ev.threshold,
                      batch_size=ev.batch_size, bins=ev.bins, originals=ext.samples,
                      tta=ev.tta,
                      boundary=(ext.samples, ev.nsd_tolerance) if ev.boundary else None)
    metrics = {f"test_{k}": v for k, v in result.metrics.items()}
    metrics.update(bootstrap_intervals(result, ev.bootstrap_draws, cfg.seed))
    _write_csv(result.per_image(), out_dir / "test_per_image.csv")
    write_text(out_dir / "metrics.json", json.dumps(
        {"dataset": ext.source.name, "root": str(ext.source.root), "images": len(ext.samples),
         "threshold": ev.threshold, "metrics": metrics}, indent=2))
    figures = _external_figures(model, ext, result, ev, out_dir) if ev.plots else {}
    undefined = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    notes = _external_notes(ext, ev) + _interval_note(metrics, ev.bootstrap_draws)
    table = {ext.source.name: result.metrics}
    title = f"{TITLE}: external test set {ext.source.name}"
    return _write_and_log(out_dir, title, table, figures, notes, metrics, undefined)
