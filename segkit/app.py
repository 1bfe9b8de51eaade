"""One experiment: validate config -> data -> model -> fit -> log model -> evaluate -> objective."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from segkit import tracking
from segkit.config import check_batch_size, validate
from segkit.data import Prepared, prepare
from segkit.data.pipeline import make_dataset
from segkit.evaluation import Evaluation, evaluate
from segkit.losses import build_loss
from segkit.models import build_model
from segkit.training import (
    TimeLimit,
    build_callbacks,
    build_optimizer,
    resolve_precision,
    training_metrics,
)

log = logging.getLogger(__name__)


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


def _fit(cfg: DictConfig, model: keras.Model, data: Prepared, run_dir: Path) -> dict:
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
    return {"train_seconds": seconds, "epochs_run": len(history.epoch),
            "time_limit_hit": float(limited)}


def _log_evaluation(result: Evaluation, prefix: str) -> None:
    mlflow.log_metrics({f"{prefix}_{k}": v for k, v in result.metrics.items()})
    rows = result.per_image()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    mlflow.log_text(buf.getvalue(), f"evaluation/{prefix}_per_image.csv")
    mlflow.log_dict({"split": result.split, "threshold": result.threshold, **result.metrics},
                    f"evaluation/{prefix}_metrics.json")


def run_experiment(cfg: DictConfig, *, root: Path, run_dir: Path,
                   hydra_dir: Path | None = None, run_name: str | None = None) -> float:
    """Train and evaluate as ``cfg`` says, all inside one MLflow run; return ``cfg.objective``.

    ``root`` is the project checkout (for the git commit), ``run_dir`` receives checkpoints
    and TensorBoard logs, ``hydra_dir`` holds Hydra's config.yaml / overrides.yaml.
    """
    validate(cfg)
    policy = resolve_precision(cfg.trainer.precision)
    keras.backend.clear_session()  # sweeps run many jobs in one process: start clean
    keras.utils.set_random_seed(cfg.seed)
    data = prepare(cfg.data, cfg.split)
    check_batch_size(cfg.trainer.batch_size, len(data.split.train))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    sizes = data.split.sizes()
    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment,
                            run_name or cfg.tracking.run_name) as run:
        tracking.log_run_context(OmegaConf.to_container(cfg, resolve=True), root, hydra_dir)
        mlflow.log_params({"data.fingerprint": data.fingerprint, "trainer.policy": policy,
                           **{f"split.{k}_size": v for k, v in sizes.items()}})
        mlflow.set_tags({"segkit.split": data.split.name,
                         "segkit.test_split": f"{data.split.name} test ({sizes['test']} images)"})
        model = _build_compiled(cfg, policy)
        mlflow.log_param("model.params", model.count_params())
        fit = _fit(cfg, model, data, run_dir)
        mlflow.log_metrics(fit)
        if (run_dir / "tensorboard").is_dir():
            mlflow.log_artifacts(str(run_dir / "tensorboard"), "tensorboard")
        # Logged before evaluation, so a crash there never loses the trained model.
        model_uri = tracking.log_model(model, data.images["val"][:2],
                                       cfg.tracking.register_model or None)
        mlflow.set_tag("segkit.model_uri", model_uri)

        results = {}
        for part in ("val", "test"):
            if not len(data.images[part]):
                continue
            results[part] = evaluate(model, data.images[part], data.masks[part],
                                     data.names(part), split=f"{data.split.name}/{part}",
                                     threshold=cfg.eval.threshold,
                                     batch_size=cfg.eval.batch_size)
            _log_evaluation(results[part], part)
        all_metrics = {f"{p}_{k}": v for p, r in results.items() for k, v in r.metrics.items()}
        objective = float(all_metrics[cfg.objective])
        log.info("run %s: %s = %.4f; test mDice %.4f, mIoU %.4f, pixel accuracy %.4f",
                 run.info.run_id, cfg.objective, objective,
                 all_metrics.get("test_mdice", np.nan), all_metrics.get("test_miou", np.nan),
                 all_metrics.get("test_pixel_accuracy", np.nan))
    return objective
