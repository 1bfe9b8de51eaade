"""One experiment: validate config -> data -> model -> fit -> log model -> evaluate -> objective.

``run_experiment`` dispatches on ``cfg.task``: ``train`` (train, then evaluate) or
``evaluate`` (evaluate a model logged earlier, in a new run linked to its source).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import mlflow
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from segkit import checkpoints, distribute, report, tracking
from segkit.checkpoints import Resume, TrainingState, sigterm_interrupts
from segkit.config import ConfigError, check_batch_size, validate
from segkit.data import Prepared, prepare
from segkit.data.pipeline import make_dataset
from segkit.losses import build_loss
from segkit.models import build_model
from segkit.training import (
    MLflowEpochLogger,
    TimeLimit,
    build_callbacks,
    build_optimizer,
    resolve_precision,
    training_metrics,
)

log = logging.getLogger(__name__)

def _strategy_name(cfg: DictConfig) -> str:
    return cfg.trainer.get("strategy", "default")  # runs saved before the key existed: default


def _steps_per_epoch(cfg: DictConfig, data: Prepared) -> int:
    return math.ceil(len(data.split.train) / cfg.trainer.batch_size)


def _peak_lr(cfg: DictConfig, strategy: tf.distribute.Strategy) -> float:
    """``optimizer.lr`` under ``trainer.lr_scaling`` for the strategy's replicas."""
    return distribute.scaled_lr(cfg.optimizer.lr, cfg.trainer.get("lr_scaling", "none"),
                                strategy.num_replicas_in_sync)


def _build_compiled(cfg: DictConfig, policy: str, steps_per_epoch: int,
                    strategy: tf.distribute.Strategy | None = None) -> keras.Model:
    """Model under the dtype policy (restored afterwards: layers keep theirs), compiled, its
    variables created in ``strategy.scope()`` (mirrored over the strategy's replicas)."""
    strategy = strategy or tf.distribute.get_strategy()
    opt_cfg = cfg.optimizer
    lr = _peak_lr(cfg, strategy)
    if lr != opt_cfg.lr:
        opt_cfg = OmegaConf.create({**OmegaConf.to_container(opt_cfg, resolve=True), "lr": lr})
    with strategy.scope():
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            model = build_model(cfg.model, cfg.data.image_size)
        finally:
            keras.config.set_dtype_policy(previous)
        optimizer = build_optimizer(opt_cfg, cfg.schedule, steps_per_epoch, cfg.trainer.epochs)
        jit = cfg.trainer.get("jit_compile", "auto")
        model.compile(optimizer=optimizer, loss=build_loss(cfg.loss), jit_compile=jit,
                      metrics=training_metrics(cfg.eval.threshold))
    return model


def _fit(cfg: DictConfig, model: keras.Model, data: Prepared, run_dir: Path,
         restored: dict | None = None, chief: bool = True):
    """Fit from epoch ``restored["epochs"]`` (0 for a new run) to ``trainer.epochs``; return
    the history of all epochs (before an interruption too) and the fit metrics. Keras' fit
    for one device and ``mirrored``, segkit.distribute.custom_fit for ``multi_worker``; only
    the chief logs epochs to MLflow."""
    t = cfg.trainer
    restored = restored or {}
    done = int(restored.get("epochs", 0))
    train_ds = make_dataset(data.images["train"], data.masks["train"], t.batch_size,
                            training=True, seed=cfg.seed, augment=cfg.augment)
    val_ds = make_dataset(data.images["val"], data.masks["val"], t.batch_size, training=False)
    callbacks = build_callbacks(cfg.callbacks, run_dir, t.max_minutes, restored, cfg.schedule,
                                peak_lr=_peak_lr(cfg, model.distribute_strategy),
                                steps_per_epoch=_steps_per_epoch(cfg, data))
    if chief:
        callbacks.insert(-1, MLflowEpochLogger())
    state: TrainingState = callbacks[-1]
    start = time.perf_counter()
    if not restored.get("finished") and done < t.epochs:
        with sigterm_interrupts():
            if _strategy_name(cfg) == "multi_worker":
                distribute.custom_fit(model, train_ds, validation_data=val_ds,
                                      epochs=t.epochs, initial_epoch=done,
                                      callbacks=callbacks, verbose=t.verbose)
            else:
                model.fit(train_ds, validation_data=val_ds, epochs=t.epochs,
                          initial_epoch=done, callbacks=callbacks, verbose=t.verbose,
                          shuffle=False)  # the tf.data pipeline shuffles
    limited = any(isinstance(cb, TimeLimit) and cb.stopped_early for cb in callbacks)
    state.save_state(finished=True, time_limit_hit=limited or restored.get("time_limit_hit",
                                                                             False))
    best = run_dir / "checkpoints" / "best.keras"
    if cfg.callbacks.checkpoint.enabled and best.is_file():
        model.load_weights(best)  # evaluate the checkpoint the validation carve-out chose
    if _strategy_name(cfg) == "multi_worker":  # the same on every worker
        log.info("weights after training: sha256 %s", distribute.weights_digest(model))
    log.info("fit ended after epoch %d (%.0f s in this process)", state.state["epochs"],
             time.perf_counter() - start)
    return state, {"train_seconds": state.state["train_seconds"],
                           "epochs_run": state.state["epochs"],
                           "time_limit_hit": float(state.state["time_limit_hit"])}


def _start(cfg: DictConfig, run_name: str | None, tags: dict[str, str] | None = None,
           run_id: str | None = None):
    return tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment,
                              run_name or cfg.tracking.run_name, tags=tags, run_id=run_id)


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


def _resume(cfg: DictConfig) -> Resume | None:
    resume = cfg.trainer.get("resume")
    if not resume:
        return None
    experiment_id = tracking.setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    chash = tracking.config_hash(OmegaConf.to_container(cfg, resolve=True))
    found = tracking.find_resumable(experiment_id, resume, chash)
    return checkpoints.load_resume(*found, cfg) if found else None


def _single_device_copy(model: keras.Model) -> keras.Model:
    """The same layers and weights outside any distribution strategy (for evaluation and
    logging on the chief alone: predicting with a multi-worker model needs every worker)."""
    copy = keras.Model.from_config(model.get_config())  # called outside strategy.scope()
    copy.set_weights(model.get_weights())
    return copy


def _train_worker(cfg: DictConfig, data: Prepared, policy: str,
                  strategy: tf.distribute.Strategy) -> float:
    """A non-chief worker of ``multi_worker``: trains its share of every step in lockstep with
    the chief; its checkpoints go to a temporary folder that is removed; no MLflow."""
    log.info("worker %s: training with the chief, which logs and saves", distribute.task_of(
        strategy))
    model = _build_compiled(cfg, policy, _steps_per_epoch(cfg, data), strategy)
    with distribute.worker_dir(False, None) as folder:
        _fit(cfg, model, data, folder, None, chief=False)
    log.info("worker: training done; waiting for the chief to log and evaluate")
    distribute.barrier(strategy)
    return float("nan")  # the chief evaluates and returns the objective


def train(cfg: DictConfig, *, root: Path, run_dir: Path, hydra_dir: Path | None = None,
          run_name: str | None = None, tags: dict[str, str] | None = None) -> float:
    """Train as ``cfg`` says (or continue the run ``trainer.resume`` names), log the model,
    evaluate; return ``cfg.objective``. Under ``trainer.strategy=multi_worker`` only the chief
    creates the MLflow run, writes the run folder and evaluates; other workers return NaN."""
    tracking.check_reachable(cfg.tracking.uri)
    resume = _resume(cfg)
    if resume is not None:
        cfg, run_dir = resume.cfg, resume.run_dir
        log.info("resuming run %s after epoch %d in %s", resume.run_id, resume.state["epochs"],
                 run_dir)
    strategy = distribute.build_strategy(_strategy_name(cfg))  # before any TensorFlow work
    chief = distribute.is_chief(strategy)
    policy = resolve_precision(cfg.trainer.precision)
    keras.backend.clear_session()  # sweeps run many jobs in one process: start clean
    keras.utils.set_random_seed(cfg.seed)
    if cfg.trainer.get("deterministic"):
        tf.config.experimental.enable_op_determinism()
    data = prepare(cfg.data, cfg.split)
    check_batch_size(cfg.trainer.batch_size, len(data.split.train))
    distribute.check_global_batch(
        cfg.trainer.batch_size, strategy.num_replicas_in_sync,
        {p: len(data.images[p]) for p in ("train", "val")}
        if _strategy_name(cfg) == "multi_worker" else None)
    if not chief:
        return _train_worker(cfg, data, policy, strategy)
    container = OmegaConf.to_container(cfg, resolve=True)
    tags = {**(tags or {}), "segkit.run_dir": str(run_dir),
            "segkit.config_hash": tracking.config_hash(container)}
    run_id = None
    try:
        with _start(cfg, run_name, tags, resume.run_id if resume else None) as run:
            run_id = run.info.run_id
            if resume is None:
                tracking.log_run_context(container, root, hydra_dir)
                _log_data(data)
                mlflow.log_param("trainer.policy", policy)
                checkpoints.save_config(run_dir / "checkpoints", cfg)
                model = _build_compiled(cfg, policy, _steps_per_epoch(cfg, data), strategy)
                mlflow.log_param("model.params", model.count_params())
            else:
                with strategy.scope():
                    model = resume.load_last()
                mlflow.set_tag("segkit.resumed_after_epoch", str(resume.state["epochs"]))
            if _strategy_name(cfg) != "default":
                mlflow.set_tags({**distribute.describe(strategy),
                                 "segkit.effective_lr": str(model.optimizer.learning_rate
                                                            .numpy())})
            state, fit = _fit(cfg, model, data, run_dir, resume.state if resume else None)
            if _strategy_name(cfg) != "default":
                model = _single_device_copy(model)  # evaluated and logged on the chief alone
            mlflow.log_metrics(fit)
            if (run_dir / "tensorboard").is_dir():
                mlflow.log_artifacts(str(run_dir / "tensorboard"), "tensorboard")
            model_uri = state.state.get("model_uri")
            if not model_uri:
                # Logged before evaluation, so a crash there never loses the trained model.
                model_uri = tracking.log_model(model, data.images["val"][:2],
                                               cfg.tracking.register_model or None)
                state.save_state(model_uri=model_uri)
            mlflow.set_tag("segkit.model_uri", model_uri)
            metrics = report.evaluate_and_report(model, data, cfg, run_dir / "evaluation",
                                                 state.history)
            distribute.barrier(strategy)  # multi_worker: the other workers may exit now
            return _objective(cfg, metrics, run.info.run_id)
    except KeyboardInterrupt:
        if run_id:
            log.warning("interrupted: run %s is KILLED with its last finished epoch saved in "
                        "%s; continue it with: python run.py trainer.resume=%s", run_id,
                        run_dir / "checkpoints", run_id)
        raise


def evaluate_saved(cfg: DictConfig, *, root: Path, run_dir: Path,
                   hydra_dir: Path | None = None, run_name: str | None = None,
                   tags: dict[str, str] | None = None) -> float:
    """Evaluate the model at ``cfg.model_uri`` on the configured dataset and split, in a new
    run tagged with its source; the model's own input size overrides ``data.image_size``."""
    tracking.check_reachable(cfg.tracking.uri)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    try:
        model = mlflow.keras.load_model(cfg.model_uri, load_model_kwargs={"safe_mode": True})
    except Exception as exc:  # MLflow raises several types for a bad URI
        raise ConfigError(f"model_uri={cfg.model_uri!r} could not be loaded ({exc}): "
                          "use runs:/<run_id>/model, models:/<name>/<version> or a path"
                          ) from exc
    size = int(model.input_shape[1])
    keras.utils.set_random_seed(cfg.seed)
    data = prepare(cfg.data, cfg.split, image_size=size)
    source = tracking.source_run_id(cfg.model_uri)
    history = tracking.training_history(source) if source else None
    with _start(cfg, run_name or f"evaluate {cfg.model_uri}", tags) as run:
        tracking.log_run_context(OmegaConf.to_container(cfg, resolve=True), root, hydra_dir)
        _log_data(data)
        mlflow.set_tags({"segkit.task": "evaluate", "segkit.source_model_uri": cfg.model_uri,
                         "segkit.source_run_id": source or ""})
        metrics = report.evaluate_and_report(model, data, cfg, run_dir / "evaluation", history)
        return _objective(cfg, metrics, run.info.run_id)


def run_experiment(cfg: DictConfig, *, root: Path, run_dir: Path,
                   hydra_dir: Path | None = None, run_name: str | None = None,
                   tags: dict[str, str] | None = None) -> float:
    """``cfg.task`` = train | evaluate, inside one MLflow run; returns ``cfg.objective``.

    ``root`` is the project checkout (for the git commit), ``run_dir`` receives checkpoints,
    TensorBoard logs and the evaluation report, ``hydra_dir`` holds Hydra's config files.
    ``tags`` go on the run when it is created (a sweep passes ``mlflow.parentRunId`` there,
    which nests the run under the sweep's parent run in the UI).
    """
    validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = train if cfg.task == "train" else evaluate_saved
    return task(cfg, root=root, run_dir=run_dir, hydra_dir=hydra_dir, run_name=run_name,
                tags=tags)
