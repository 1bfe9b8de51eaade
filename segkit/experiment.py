"""One experiment, as a story: set up the runtime -> prepare the data -> build the model (or
resume it) -> fit -> log the model -> evaluate -> return the objective.

``run_experiment`` dispatches on ``cfg.task``: ``train`` (train, then evaluate) or
``evaluate`` (evaluate a model logged earlier, in a new run linked to its source). The MLflow
run, phase timings, failure tags and Ctrl-C handling live in one wrapper,
:func:`segkit.lifecycle.tracked_run`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import tensorflow as tf
from omegaconf import DictConfig

from segkit import (
    checkpoints,
    distribute,
    ensemble,
    external,
    report,
    rundir,
    serving,
    sync,
    tracking,
)
from segkit import tags as tag  # `tags` names a run's tags here
from segkit.callbacks import DivergenceGuard, MLflowEpochLogger, TimeLimit, build_callbacks
from segkit.checkpoints import Resume, TrainingState
from segkit.config import validate
from segkit.console import native_startup
from segkit.data import Prepared, prepare
from segkit.data.pipeline import make_dataset
from segkit.errors import ConfigError, DivergedError
from segkit.export import export_trained
from segkit.lifecycle import TrackedRun, tracked_run
from segkit.losses import build_loss
from segkit.models import build_model
from segkit.optimizers import build_optimizer
from segkit.precision import resolve_precision
from segkit.progress import Progress
from segkit.registry import plain
from segkit.runtimes import KerasPredictor, ModelError, Predictor, load_keras
from segkit.schedules import build_schedule
from segkit.search.pruning import search_callbacks
from segkit.summary import print_run_summary
from segkit.trainer import check_batch_size, scaled_lr, steps_per_epoch
from segkit.training_metrics import training_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Where and how this process trains: the tf.distribute strategy, whether it is the chief
    (the process that logs and evaluates), and the Keras dtype policy."""

    name: str  # trainer.strategy
    strategy: tf.distribute.Strategy
    chief: bool
    policy: str

    @property
    def distributed(self) -> bool:
        return self.name != "default"


def setup_runtime(cfg: DictConfig) -> Runtime:
    """Strategy first (multi-worker must configure TensorFlow before any other work), then a
    clean Keras session, the seeds and op determinism."""
    with native_startup(cfg.verbose):  # the devices start here: their chatter is filtered
        strategy = distribute.build_strategy(cfg.trainer.strategy)
        policy = resolve_precision(cfg.trainer.precision)
    keras.backend.clear_session()  # sweeps run many jobs in one process: start clean
    keras.utils.set_random_seed(cfg.seed)
    if cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()
    return Runtime(cfg.trainer.strategy, strategy, distribute.is_chief(strategy), policy)


def prepare_data(cfg: DictConfig, runtime: Runtime) -> Prepared:
    """The split's arrays, and the batch checks that need its sizes."""
    data = prepare(cfg.data, cfg.split)
    check_batch_size(cfg.trainer.batch_size, len(data.split.train))
    distribute.check_global_batch(
        cfg.trainer.batch_size, runtime.strategy.num_replicas_in_sync,
        {p: len(data.images[p]) for p in ("train", "val")}
        if runtime.name == "multi_worker" else None)
    return data


def peak_lr(cfg: DictConfig, strategy: tf.distribute.Strategy) -> float:
    """``optimizer.lr`` under ``trainer.lr_scaling`` for the strategy's replicas."""
    return scaled_lr(cfg.optimizer.lr, cfg.trainer.lr_scaling, strategy.num_replicas_in_sync)


def build_compiled(cfg: DictConfig, policy: str, steps: int,
                   strategy: tf.distribute.Strategy | None = None) -> keras.Model:
    """The model under the dtype policy ``policy`` (restored afterwards: layers keep theirs),
    compiled with the configured loss, optimizer and schedule (``steps`` per epoch), its
    variables created in ``strategy.scope()`` (mirrored over the strategy's replicas)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            model = build_model(cfg.model, cfg.data.image_size)
        finally:
            keras.config.set_dtype_policy(previous)
        schedule = build_schedule(cfg.schedule, cfg.trainer.max_minutes)
        optimizer = build_optimizer(cfg.optimizer, schedule, steps, cfg.trainer.epochs,
                                    lr=peak_lr(cfg, strategy))
        model.compile(optimizer=optimizer, loss=build_loss(cfg.loss),
                      jit_compile=cfg.trainer.jit_compile,
                      metrics=training_metrics(cfg.eval.threshold))
    return model


def fit(cfg: DictConfig, model: keras.Model, data: Prepared, run_dir: Path,
        restored: dict | None = None, chief: bool = True) -> TrainingState:
    """Fit from epoch ``restored["epochs"]`` (0 for a new run) to ``trainer.epochs``; return
    the training state (history of all epochs, before an interruption too). Keras' fit for
    one device and ``mirrored``, segkit.distribute.custom_fit for ``multi_worker``; only the
    chief logs epochs to MLflow. Ends with the best checkpoint's weights in ``model``."""
    t = cfg.trainer
    restored = restored or {}
    done = int(restored.get("epochs", 0))
    train_ds = make_dataset(data.images["train"], data.masks["train"], t.batch_size,
                            training=True, seed=cfg.seed, augment=cfg.augment)
    val_ds = make_dataset(data.images["val"], data.masks["val"], t.batch_size, training=False)
    callbacks = build_callbacks(cfg.callbacks, run_dir, t.max_minutes, restored, cfg.schedule,
                                peak_lr=peak_lr(cfg, model.distribute_strategy),
                                steps_per_epoch=steps_per_epoch(len(data.split.train),
                                                                t.batch_size))
    if chief:
        callbacks.insert(-1, MLflowEpochLogger(run_dir))
        callbacks.insert(-1, Progress(t.epochs, steps_per_epoch(len(data.split.train),
                                                                t.batch_size),
                                      t.max_minutes, restored.get("train_seconds", 0.0)))
        callbacks[-1:-1] = search_callbacks()  # an Optuna trial: reports, may prune
    state: TrainingState = callbacks[-1]
    if not restored.get("finished") and done < t.epochs:
        loop = distribute.custom_fit if t.strategy == "multi_worker" else _keras_fit
        loop(model, train_ds, validation_data=val_ds, epochs=t.epochs, initial_epoch=done,
             callbacks=callbacks, verbose=t.verbose)
    raise_if_diverged(cfg, callbacks, model.dtype_policy.name)
    limited = any(isinstance(cb, TimeLimit) and cb.stopped_early for cb in callbacks)
    state.save_state(finished=True,
                     time_limit_hit=limited or restored.get("time_limit_hit", False))
    state.restore_best(model)  # the epoch the validation carve-out chose, across resumes
    if t.strategy == "multi_worker":  # the same on every worker
        log.info("weights after training: sha256 %s", distribute.weights_digest(model))
    log.info("fit ended after epoch %d", state.state["epochs"])
    return state


def raise_if_diverged(cfg: DictConfig, callbacks: list[keras.callbacks.Callback],
                      policy: str) -> None:
    """DivergedError (the run ends FAILED, nothing logged or evaluated) when the guard
    stopped training at a non-finite loss, with what to try (``policy``: the model's)."""
    guard = next((cb for cb in callbacks if isinstance(cb, DivergenceGuard)), None)
    if guard is None or guard.reason is None:
        return
    tips = [f"lower optimizer.lr (now {float(cfg.optimizer.lr)})"]
    if not cfg.optimizer.get("clipnorm"):
        tips.append("set optimizer.clipnorm (e.g. 1.0)")
    if policy != "float32":
        tips.append("use trainer.precision=float32")
    advice = ", ".join(tips[:-1]) + (" or " if len(tips) > 1 else "") + tips[-1]
    raise DivergedError(f"training diverged: {guard.reason}: {advice}")


def _keras_fit(model: keras.Model, train_ds: tf.data.Dataset, **kwargs: object) -> None:
    model.fit(train_ds, shuffle=False, **kwargs)  # the tf.data pipeline shuffles


def find_resume(cfg: DictConfig) -> Resume | None:
    """The interrupted run ``trainer.resume`` names (or ``auto`` finds), with its state."""
    resume = cfg.trainer.resume
    if not resume:
        return None
    experiment_id = tracking.setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    chash = tracking.config_hash(plain(cfg))
    found = tracking.find_resumable(experiment_id, resume, chash)  # claims the run found
    if not found:
        return None
    run_id, run_dir, why = found
    resumed = checkpoints.load_resume(run_id, run_dir, cfg)
    log.info("resuming run %s after epoch %d in %s: %s", run_id, resumed.state["epochs"],
             run_dir, why)
    return resumed


def log_data(data: Prepared) -> None:
    """The dataset's fingerprint and split sizes, as params and tags."""
    sizes = data.split.sizes()
    mlflow.log_params({"data.fingerprint": data.fingerprint,
                       **{f"split.{k}_size": v for k, v in sizes.items()}})
    mlflow.set_tags({tag.SPLIT: data.split.name,
                     tag.TEST_SPLIT: f"{data.split.name} test ({sizes['test']} images)"})


def start_new(cfg: DictConfig, data: Prepared, runtime: Runtime, run_dir: Path, *,
              root: Path, hydra_dir: Path | None) -> keras.Model:
    """A new run: log its context (config, data, policy), save its config for a resume, and
    build the compiled model."""
    tracking.log_run_context(plain(cfg), root, hydra_dir)
    log_data(data)
    mlflow.log_param("trainer.policy", runtime.policy)
    checkpoints.save_config(run_dir / "checkpoints", cfg)
    steps = steps_per_epoch(len(data.split.train), cfg.trainer.batch_size)
    model = build_compiled(cfg, runtime.policy, steps, runtime.strategy)
    mlflow.log_param("model.params", model.count_params())
    return model


def continue_resumed(resume: Resume, runtime: Runtime) -> keras.Model:
    """The resumed run's last finished epoch, with its optimizer state."""
    with runtime.strategy.scope():
        model = resume.load_last()
    mlflow.set_tag(tag.RESUMED_AFTER_EPOCH, str(resume.state["epochs"]))
    return model


def single_device_copy(model: keras.Model) -> keras.Model:
    """The same layers and weights outside any distribution strategy (for evaluation and
    logging on the chief alone: predicting with a multi-worker model needs every worker)."""
    copy = keras.Model.from_config(model.get_config())  # called outside strategy.scope()
    copy.set_weights(model.get_weights())
    return copy


def log_trained_model(cfg: DictConfig, model: keras.Model, data: Prepared, run_dir: Path,
                      state: TrainingState) -> str:
    """Fit figures, TensorBoard logs and the model (once: a resumed run that logged it keeps
    that one), before evaluation, so a crash there never loses the trained model."""
    report.log_metrics({"train_seconds": state.state["train_seconds"],
                        "epochs_run": state.state["epochs"],
                        "time_limit_hit": float(state.state["time_limit_hit"])})
    if (run_dir / "tensorboard").is_dir():
        mlflow.log_artifacts(str(run_dir / "tensorboard"), "tensorboard")
    model_uri = state.state.get("model_uri")
    if not model_uri:
        model_uri = tracking.log_model(model, data.images["val"][:2],
                                       cfg.tracking.register_model or None)
        state.save_state(model_uri=model_uri)
    mlflow.set_tag(tag.MODEL_URI, model_uri)
    return str(model_uri)


def log_and_evaluate(cfg: DictConfig, model: keras.Model, data: Prepared, run_dir: Path,
                     state: TrainingState, run: TrackedRun) -> dict[str, float]:
    """Log the pending epoch metrics and the model, evaluate (the report is written to the
    run folder before it is logged); return the metrics. A tracking server that stopped
    answering costs one bounded wait: the rest goes on locally, and at the end either the
    server is back (what it lacks is logged) or TrackingUnavailable names ``segkit sync``."""
    outbox = sync.Outbox(cfg.tracking.uri, run_dir, run.run_id)
    with run.phase("log_model"):
        outbox.call("the pending epoch metrics", sync.Journal(run_dir).send, run.run_id)
        outbox.call("the model", log_trained_model, cfg, model, data, run_dir, state)
    with run.phase("evaluate"):
        metrics = outbox.evaluate(run_dir / "evaluation", report.evaluate_and_report, model,
                                  data, cfg, run_dir / "evaluation", state.history)
    if cfg.tracking.get("serving_model", True):  # absent from configs saved before it
        with run.phase("log_serving"):
            outbox.call("the serving model", log_serving_model, cfg, model, metrics, state,
                        run.run_id)
    outbox.finish()
    return metrics


def log_serving_model(cfg: DictConfig, model: keras.Model, metrics: dict[str, float],
                      state: TrainingState, run_id: str) -> None:
    """The pyfunc for ``mlflow models serve`` (segkit.serving) with the threshold chosen on
    validation and ``eval.tta``, once (a resumed run that logged it keeps that one)."""
    if not state.state.get("serving_uri"):
        uri = serving.log_serving_model(model, metrics["val_best_threshold"], cfg.eval.tta)
        state.save_state(serving_uri=uri)
    mlflow.set_tag(tag.SERVING_URI, f"runs:/{run_id}/{serving.NAME}")


def objective(cfg: DictConfig, metrics: dict[str, float], run_id: str) -> float:
    value = float(metrics[cfg.objective])
    log.info("run %s: %s = %.4f; test mDice %.4f, mIoU %.4f, pixel accuracy %.4f", run_id,
             cfg.objective, value, metrics["test_mdice"], metrics["test_miou"],
             metrics["test_pixel_accuracy"])
    return value


def train_worker(cfg: DictConfig, data: Prepared, runtime: Runtime) -> float:
    """A non-chief worker of ``multi_worker``: trains its share of every step in lockstep with
    the chief; its checkpoints go to a temporary folder that is removed; no MLflow."""
    log.info("worker %s: training with the chief, which logs and saves",
             distribute.task_of(runtime.strategy))
    steps = steps_per_epoch(len(data.split.train), cfg.trainer.batch_size)
    model = build_compiled(cfg, runtime.policy, steps, runtime.strategy)
    with distribute.worker_dir(False, None) as folder:
        fit(cfg, model, data, folder, None, chief=False)
    log.info("worker: training done; waiting for the chief to log and evaluate")
    distribute.barrier(runtime.strategy)
    return float("nan")  # the chief evaluates and returns the objective


def train(cfg: DictConfig, *, root: Path, run_dir: Path, hydra_dir: Path | None = None,
          run_name: str | None = None, tags: dict[str, str] | None = None) -> float:
    """Train as ``cfg`` says (or continue the run ``trainer.resume`` names), log the model,
    evaluate; return ``cfg.objective``. Under ``trainer.strategy=multi_worker`` only the chief
    creates the MLflow run, writes the run folder and evaluates; other workers return NaN."""
    tracking.check_reachable(cfg.tracking.uri)
    resume = find_resume(cfg)
    if resume is not None:
        cfg, run_dir = resume.cfg, resume.run_dir
    runtime = setup_runtime(cfg)
    if runtime.chief:  # the folder's lock, held while the run lives: no resume takes it
        rundir.own(run_dir)
    data = prepare_data(cfg, runtime)
    if not runtime.chief:
        return train_worker(cfg, data, runtime)
    run_tags = {**(tags or {}), **_identity_tags(cfg, run_dir)}
    with tracked_run(cfg, run_dir, run_name, run_tags, resume.run_id if resume else None,
                     resume_hint=True) as run:
        sync.record_run(run_dir, run.run_id, cfg.tracking.uri)  # for `segkit sync RUN_DIR`
        with run.phase("build"):
            model = (continue_resumed(resume, runtime) if resume else
                     start_new(cfg, data, runtime, run_dir, root=root, hydra_dir=hydra_dir))
            _tag_strategy(model, runtime)
        with run.phase("fit"):
            state = fit(cfg, model, data, run_dir, resume.state if resume else None)
        if runtime.distributed:
            model = single_device_copy(model)  # evaluated and logged on the chief alone
        metrics = log_and_evaluate(cfg, model, data, run_dir, state, run)
        distribute.barrier(runtime.strategy)  # multi_worker: the other workers may exit now
        if cfg.get("export") and cfg.export.formats:  # ONNX/OpenVINO/SavedModel copies
            with run.phase("export"):
                export_trained(cfg.export, model, data.images["test"], run_dir,
                               model_uri=str(state.state.get("model_uri", "")),
                               threshold=metrics.get("val_best_threshold"))
        with run.phase("external"):  # eval.external, dataset=: one child run per set
            external.score_external(cfg, model, run_dir, source_run_id=run.run_id,
                                    source_model_uri=str(state.state.get("model_uri", "")))
        return objective(cfg, metrics, run.run_id)


def _identity_tags(cfg: DictConfig, run_dir: Path) -> dict[str, str]:
    """Where the run's files are and what it computes (resume and skip_completed find it)."""
    return {tag.RUN_DIR: str(run_dir),
            tag.CONFIG_HASH: tracking.config_hash(plain(cfg))}


def _tag_strategy(model: keras.Model, runtime: Runtime) -> None:
    if runtime.distributed:
        lr = model.optimizer.learning_rate.numpy()
        mlflow.set_tags({**distribute.describe(runtime.strategy), tag.EFFECTIVE_LR: str(lr)})


def model_uris(model_uri: str | Sequence[str]) -> list[str]:
    """``model_uri`` as a list: one URI, or the members of an ensemble."""
    return [model_uri] if isinstance(model_uri, str) else [str(u) for u in model_uri]


def load_for_evaluation(model_uri: str | Sequence[str]) -> Predictor:
    """The model at ``model_uri`` (TensorFlow), or the ensemble of a list of them."""
    members = []
    for uri in model_uris(model_uri):
        try:
            members.append(KerasPredictor(load_keras(uri)))
        except ModelError as exc:  # the key to fix, with the loader's own reason
            raise ConfigError(f"model_uri: {exc}") from exc
    return ensemble.combine(members, model_uris(model_uri))


def _source_tags(uris: list[str], source: str | None) -> dict[str, str]:
    """The tags naming what a task=evaluate run scored: the model (an ensemble: its members,
    as a JSON list in ``segkit.ensemble``) and its training run."""
    tags = {tag.TASK: "evaluate", tag.SOURCE_MODEL_URI: ", ".join(uris),
            tag.SOURCE_RUN_ID: source or ""}
    if len(uris) > 1:
        tags[tag.ENSEMBLE] = json.dumps(uris)
    return tags


def evaluate_saved(cfg: DictConfig, *, root: Path, run_dir: Path,
                   hydra_dir: Path | None = None, run_name: str | None = None,
                   tags: dict[str, str] | None = None) -> float:
    """Evaluate the model at ``cfg.model_uri`` on the configured dataset and split, in a new
    run tagged with its source; the model's own input size overrides ``data.image_size``."""
    tracking.check_reachable(cfg.tracking.uri)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    tracking.open_store(cfg.tracking.uri)  # a fresh sqlite store: created once
    with native_startup(cfg.verbose):
        model = load_for_evaluation(cfg.model_uri)
    keras.utils.set_random_seed(cfg.seed)
    uris = model_uris(cfg.model_uri)
    source = tracking.source_run_id(uris[0]) if len(uris) == 1 else None  # an ensemble: none
    if cfg.eval.external or cfg.get("dataset"):  # only the external sets, one run each
        scored = external.score_external(cfg, model, run_dir,
                                         source_model_uri=", ".join(uris),
                                         source_run_id=source)
        return float(list(scored.values())[-1]["test_mdice"])
    data = prepare(cfg.data, cfg.split, image_size=model.input_size)
    history = tracking.training_history(source) if source else None
    name = uris[0] if len(uris) == 1 else f"ensemble of {len(uris)}"
    with tracked_run(cfg, run_dir, run_name or f"evaluate {name}", tags) as run:
        tracking.log_run_context(plain(cfg), root, hydra_dir)
        log_data(data)
        mlflow.set_tags(_source_tags(uris, source))
        with run.phase("evaluate"):
            metrics = report.evaluate_and_report(model, data, cfg, run_dir / "evaluation",
                                                 history)
        return objective(cfg, metrics, run.run_id)


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
    tracking.bound_http(cfg.tracking.uri, cfg.tracking.http_timeout, cfg.tracking.http_retries)
    task = train if cfg.task == "train" else evaluate_saved
    try:
        value = task(cfg, root=root, run_dir=run_dir, hydra_dir=hydra_dir, run_name=run_name,
                     tags=tags)
    finally:
        rundir.release_all()  # the run has ended: its folder may be resumed from now on
    if math.isfinite(value):  # NaN: a multi-worker worker, which creates no run
        print_run_summary(cfg.tracking.uri, cfg.tracking.experiment, run_dir,
                          in_sweep=bool(tags and tag.PARENT in tags))
    return value
