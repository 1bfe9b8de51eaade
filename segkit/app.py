"""One experiment: validate config -> data -> model -> fit -> log model -> evaluate -> objective.

``run_experiment`` dispatches on ``cfg.task``: ``train`` (train, then evaluate) or
``evaluate`` (evaluate a model logged earlier, in a new run linked to its source).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from segkit import plots, tracking
from segkit.config import ConfigError, check_batch_size, validate
from segkit.data import Prepared, prepare
from segkit.data.pipeline import make_dataset
from segkit.evaluation import Evaluation, evaluate, predict_batches
from segkit.fileio import write_text
from segkit.losses import build_loss
from segkit.models import build_model
from segkit.report import write_report
from segkit.training import (
    TimeLimit,
    build_callbacks,
    build_optimizer,
    resolve_precision,
    training_metrics,
)

log = logging.getLogger(__name__)

# Metrics also reported at the threshold chosen on validation (prefix test_tuned_).
TUNED_KEYS = ("mdice", "miou", "pixel_accuracy", "pixel_dice", "pixel_iou", "precision",
              "recall", "specificity", "f2")


def _build_compiled(cfg: DictConfig, policy: str) -> keras.Model:
    """Model under the dtype policy (restored afterwards: layers keep theirs), compiled."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model(cfg.model, cfg.data.image_size)
    finally:
        keras.config.set_dtype_policy(previous)
    model.compile(optimizer=build_optimizer(cfg.optimizer), loss=build_loss(cfg.loss),
                  metrics=training_metrics(cfg.eval.threshold))
    return model


def _fit(cfg: DictConfig, model: keras.Model, data: Prepared, run_dir: Path):
    t = cfg.trainer
    train_ds = make_dataset(data.images["train"], data.masks["train"], t.batch_size,
                            training=True, seed=cfg.seed, augment=cfg.augment.name)
    val_ds = make_dataset(data.images["val"], data.masks["val"], t.batch_size, training=False)
    callbacks = build_callbacks(cfg.callbacks, run_dir, t.max_minutes)
    callbacks.append(tracking.MLflowEpochLogger())
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=t.epochs, callbacks=callbacks,
                        verbose=t.verbose, shuffle=False)  # the tf.data pipeline shuffles
    seconds = time.perf_counter() - start
    best_ckpt = run_dir / "checkpoints" / "best.keras"
    if cfg.callbacks.checkpoint.enabled and best_ckpt.is_file():
        model.load_weights(best_ckpt)  # evaluate the checkpoint the validation carve-out chose
    limited = any(isinstance(cb, TimeLimit) and cb.stopped_early for cb in callbacks)
    return history.history, {"train_seconds": seconds, "epochs_run": len(history.epoch),
                             "time_limit_hit": float(limited)}


def _write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def _gallery_cases(model: keras.Model, data: Prepared, result: Evaluation,
                   batch_size: int) -> list[dict]:
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
    probs = np.concatenate([p for _, p in predict_batches(model, images, batch_size)])
    return [{"title": f"{label}: {rows[i]['name']}", "image": images[j],
             "truth": data.masks["test"][i, ..., 0] > 0, "pred": probs[j] >= result.threshold,
             "dice": rows[i]["dice"]} for j, (label, i) in enumerate(picks)]


def evaluate_and_report(model: keras.Model, data: Prepared, cfg: DictConfig, out_dir: Path,
                        history: dict | None = None) -> dict[str, float]:
    """Score the validation carve-out and the held-out test split, choose the threshold on
    validation, write plots, CSVs, metrics JSON and report.md to ``out_dir``, log them all
    to the active MLflow run, and return the logged metrics."""
    ev = cfg.eval
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {part: evaluate(model, data.images[part], data.masks[part], data.names(part),
                              split=f"{data.split.name}/{part}", threshold=ev.threshold,
                              batch_size=ev.batch_size, bins=ev.bins)
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
                        originals=[data.samples[n] for n in data.names("test")])
        metrics.update({f"test_fullres_{k}": v for k, v in full.metrics.items()})

    for part, r in results.items():
        _write_csv(r.per_image(), out_dir / f"{part}_per_image.csv")
    summary = {"splits": {p: r.split for p, r in results.items()}, "threshold": ev.threshold,
               "chosen_threshold": chosen, "metrics": metrics}
    write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))

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
    figures["Best, median and worst test images"] = plots.plot_gallery(
        _gallery_cases(model, data, test, ev.batch_size), out_dir / "gallery_test.png").name

    sizes = data.split.sizes()
    notes = [f"split: {data.split.name}; train {sizes['train']}, validation {sizes['val']}, "
             f"held-out test {sizes['test']} images; {data.image_size}x{data.image_size}",
             f"threshold {ev.threshold} for every figure; chosen on validation: {chosen} "
             "(test_tuned_* metrics)",
             "mDice / mIoU: per image, then averaged; pixel_*: pooled over all pixels"]
    table = {"validation": val.metrics, "test": test.metrics,
             f"test @ {chosen}": test.at(chosen)}
    write_report(out_dir / "report.md", title="segkit evaluation report", metrics=table,
                 plots=figures, notes=notes)
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(out_dir), "evaluation")
    return metrics


def _start(cfg: DictConfig, run_name: str | None):
    return tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment,
                              run_name or cfg.tracking.run_name)


def _log_data(data: Prepared) -> None:
    sizes = data.split.sizes()
    mlflow.log_params({"data.fingerprint": data.fingerprint,
                       **{f"split.{k}_size": v for k, v in sizes.items()}})
    mlflow.set_tags({"segkit.split": data.split.name,
                     "segkit.test_split": f"{data.split.name} test ({sizes['test']} images)"})


def _objective(cfg: DictConfig, metrics: dict[str, float], run_id: str) -> float:
    objective = float(metrics[cfg.objective])
    log.info("run %s: %s = %.4f; test mDice %.4f, mIoU %.4f, pixel accuracy %.4f", run_id,
             cfg.objective, objective, metrics["test_mdice"], metrics["test_miou"],
             metrics["test_pixel_accuracy"])
    return objective


def train(cfg: DictConfig, *, root: Path, run_dir: Path, hydra_dir: Path | None = None,
          run_name: str | None = None) -> float:
    """Train as ``cfg`` says, log the model, evaluate; return ``cfg.objective``."""
    policy = resolve_precision(cfg.trainer.precision)
    keras.backend.clear_session()  # sweeps run many jobs in one process: start clean
    keras.utils.set_random_seed(cfg.seed)
    data = prepare(cfg.data, cfg.split)
    check_batch_size(cfg.trainer.batch_size, len(data.split.train))
    with _start(cfg, run_name) as run:
        tracking.log_run_context(OmegaConf.to_container(cfg, resolve=True), root, hydra_dir)
        _log_data(data)
        mlflow.log_param("trainer.policy", policy)
        model = _build_compiled(cfg, policy)
        mlflow.log_param("model.params", model.count_params())
        history, fit = _fit(cfg, model, data, run_dir)
        mlflow.log_metrics(fit)
        if (run_dir / "tensorboard").is_dir():
            mlflow.log_artifacts(str(run_dir / "tensorboard"), "tensorboard")
        # Logged before evaluation, so a crash there never loses the trained model.
        model_uri = tracking.log_model(model, data.images["val"][:2],
                                       cfg.tracking.register_model or None)
        mlflow.set_tag("segkit.model_uri", model_uri)
        metrics = evaluate_and_report(model, data, cfg, run_dir / "evaluation", history)
        return _objective(cfg, metrics, run.info.run_id)


def evaluate_saved(cfg: DictConfig, *, root: Path, run_dir: Path,
                   hydra_dir: Path | None = None, run_name: str | None = None) -> float:
    """Evaluate the model at ``cfg.model_uri`` on the configured dataset and split, in a new
    run tagged with its source; the model's own input size overrides ``data.image_size``."""
    mlflow.set_tracking_uri(cfg.tracking.uri)
    try:
        model = mlflow.keras.load_model(cfg.model_uri)
    except Exception as exc:  # MLflow raises several types for a bad URI
        raise ConfigError(f"model_uri={cfg.model_uri!r} could not be loaded ({exc}): "
                          "use runs:/<run_id>/model, models:/<name>/<version> or a path"
                          ) from exc
    size = int(model.input_shape[1])
    keras.utils.set_random_seed(cfg.seed)
    data = prepare(cfg.data, cfg.split, image_size=size)
    source = tracking.source_run_id(cfg.model_uri)
    history = tracking.training_history(source) if source else None
    with _start(cfg, run_name or f"evaluate {cfg.model_uri}") as run:
        tracking.log_run_context(OmegaConf.to_container(cfg, resolve=True), root, hydra_dir)
        _log_data(data)
        mlflow.set_tags({"segkit.task": "evaluate", "segkit.source_model_uri": cfg.model_uri,
                         "segkit.source_run_id": source or ""})
        metrics = evaluate_and_report(model, data, cfg, run_dir / "evaluation", history)
        return _objective(cfg, metrics, run.info.run_id)


def run_experiment(cfg: DictConfig, *, root: Path, run_dir: Path,
                   hydra_dir: Path | None = None, run_name: str | None = None) -> float:
    """``cfg.task`` = train | evaluate, inside one MLflow run; returns ``cfg.objective``.

    ``root`` is the project checkout (for the git commit), ``run_dir`` receives checkpoints,
    TensorBoard logs and the evaluation report, ``hydra_dir`` holds Hydra's config files.
    """
    validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = train if cfg.task == "train" else evaluate_saved
    return task(cfg, root=root, run_dir=run_dir, hydra_dir=hydra_dir, run_name=run_name)
