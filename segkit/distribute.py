"""Training on several devices and machines with tf.distribute (``trainer.strategy``).

- ``default``: one device, Keras ``model.fit`` (unchanged single-device behaviour).
- ``mirrored``: every local GPU (or the logical CPU devices a test configures) with
  ``tf.distribute.MirroredStrategy``; still ``model.fit``, the model built and compiled in
  ``strategy.scope()`` (Keras 3 on TensorFlow distributes fit's steps itself).
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` configured from the
  ``TF_CONFIG`` environment variable, trained by :func:`custom_fit`. Keras 3.15's ``fit`` fails
  under that strategy ("Attempt to convert a value (PerReplica ...)", keras-team/keras#20585).

:func:`custom_fit` is ``model.fit``'s epoch loop written out over ``strategy.run``: each step
runs the model's own ``train_step`` on each replica (so loss, loss scaling for mixed
precision, gradient all-reduce through the Keras optimizer and metric updates are exactly
what fit computes; Keras divides each replica's mean loss by the number of replicas, i.e. the
global mean when the global batch splits evenly), the validation pass runs ``test_step``,
and the epoch's logs are the metrics read in the cross-replica context (pooled over all
replicas and workers). The same Keras callbacks are driven through ``CallbackList`` with
fit's call order, so EarlyStopping, ReduceLROnPlateau, TimeLimit, TensorBoard, the MLflow
logger and segkit's TrainingState behave as under fit; ``model.stop_training`` is agreed
across workers (a wall-clock TimeLimit could otherwise stop one worker and hang the other).
Batch-level callbacks get empty logs: reading the metrics every step would cost an
all-reduce per metric per step.

``trainer.batch_size`` is the global batch: each of R replicas gets batch_size / R images.
Datasets are sharded per worker with ``AutoShardPolicy.DATA`` (a tf.data pipeline over
in-memory arrays has no files to shard by).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import keras
import tensorflow as tf

from segkit import tags
from segkit.errors import ConfigError
from segkit.trainer import STRATEGIES

log = logging.getLogger(__name__)

def build_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for ``trainer.strategy``. Call it before any other
    TensorFlow work in the process: MultiWorkerMirroredStrategy configures collective ops,
    which TensorFlow allows only before its runtime starts."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":  # every local GPU; without GPUs, the CPU's logical devices
        devices = (tf.config.list_logical_devices("GPU")
                   or tf.config.list_logical_devices("CPU"))
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("trainer.strategy=multi_worker needs TF_CONFIG (cluster and task) "
                              "in the environment of every worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"trainer.strategy={name!r} is unknown: use one of "
                      f"{', '.join(STRATEGIES)}")


def task_of(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """(task type, task index) of this process in the cluster; (None, 0) outside one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that logs to MLflow and saves the model: the single process of a
    one-machine strategy, the ``chief`` task when the cluster names one, else worker 0."""
    task_type, task_id = task_of(strategy)
    if task_type is None or task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def check_global_batch(batch_size: int, replicas: int, sizes: dict[str, int] | None = None
                       ) -> None:
    """The global batch must split evenly over the replicas (each gets batch_size / R); with
    ``sizes`` (multi_worker, images per part), a last partial batch must still give every
    replica an image (an empty replica batch is untested ground for Keras' loss)."""
    if batch_size % replicas:
        raise ConfigError(f"trainer.batch_size={batch_size} is not divisible by the "
                          f"{replicas} replicas of the strategy: use a multiple of {replicas}")
    for part, n in (sizes or {}).items():
        if 0 < n % batch_size < replicas:
            raise ConfigError(f"trainer.batch_size={batch_size} leaves a last {part} batch of "
                              f"{n % batch_size} image(s) for {replicas} replicas: choose a "
                              f"batch size that divides {n} or leaves >= {replicas}")


@contextmanager
def worker_dir(chief: bool, run_dir) -> Iterator:
    """The run folder for the chief; a temporary folder, removed afterwards, for other
    workers (they save the same checkpoints, as collective reads need every worker, but
    nothing of theirs is kept)."""
    if chief:
        yield run_dir
        return
    tmp = tempfile.mkdtemp(prefix="segkit-worker-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def distribute_dataset(strategy: tf.distribute.Strategy, ds: tf.data.Dataset):
    """``ds`` (batched by the global batch) split over the replicas, sharded per worker by
    data (every worker reads the same pipeline and keeps its share of each batch)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(ds.with_options(options))


def _step(strategy: tf.distribute.Strategy, fn):
    @tf.function(reduce_retracing=True)
    def step(batch):
        strategy.run(fn, args=(batch,))  # the metrics live in the model's metric variables

    return step


def _results(model: keras.Model) -> dict[str, float]:
    """The model's metrics, read in the cross-replica context (summed over all replicas of
    all workers: a collective read under MultiWorkerMirroredStrategy)."""
    return {k: float(v) for k, v in model.get_metrics_result().items()}


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        task_of(strategy)[0] is not None


_SUMS: dict = {}  # id(strategy) -> tf.function summing a flag over all replicas


def _any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True when ``flag`` is true on any worker (an all-reduce: every worker must call it)."""
    if not _multi_worker(strategy):
        return bool(flag)
    if id(strategy) not in _SUMS:
        @tf.function
        def total(value):
            per_replica = strategy.run(tf.identity, args=(value,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        _SUMS[id(strategy)] = total
    return bool(_SUMS[id(strategy)](tf.constant(1.0 if flag else 0.0)) > 0)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Under multi_worker, wait until every worker gets here: other workers wait for the
    chief to finish logging and evaluating, rather than exiting while it still runs (the
    cluster's coordination service reports an exited worker as crashed)."""
    _any_worker(strategy, False)


def custom_fit(model: keras.Model, train_ds: tf.data.Dataset, *,
               validation_data: tf.data.Dataset | None = None, epochs: int = 1,
               initial_epoch: int = 0, callbacks: Sequence[keras.callbacks.Callback] = (),
               verbose: int = 0, strategy: tf.distribute.Strategy | None = None
               ) -> keras.callbacks.History:
    """``model.fit(train_ds, validation_data=..., epochs=..., initial_epoch=...,
    callbacks=..., shuffle=False)`` as a loop over ``strategy.run``; works under every
    strategy (``model`` must have been built and compiled in ``strategy.scope()``).

    Long because it mirrors Keras' fit epoch loop call for call (callbacks, steps, validation,
    the agreed stop), which is easiest to check against Keras read side by side."""
    strategy = strategy or model.distribute_strategy
    with strategy.scope():
        # What fit does first (Keras' own private hook): create the optimizer's and metrics'
        # variables from the batch shapes, in the strategy's scope, before any step is traced;
        # created lazily inside a replica step they break MirroredStrategy.
        model._symbolic_build(data_batch=train_ds.element_spec)  # noqa: SLF001
    train = distribute_dataset(strategy, train_ds)
    val = distribute_dataset(strategy, validation_data) if validation_data is not None else None
    train_step, test_step = _step(strategy, model.train_step), _step(strategy, model.test_step)
    cbs = keras.callbacks.CallbackList(list(callbacks), add_history=True,
                                       add_progbar=verbose != 0, verbose=verbose,
                                       epochs=epochs, steps=None, model=model)
    model.stop_training = False
    cbs.on_train_begin()
    training_logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        cbs.on_epoch_begin(epoch)
        for i, batch in enumerate(train):
            cbs.on_train_batch_begin(i)
            train_step(batch)
            cbs.on_train_batch_end(i, {})
        epoch_logs = _results(model)
        if val is not None:
            model.reset_metrics()
            cbs.on_test_begin()
            for i, batch in enumerate(val):
                cbs.on_test_batch_begin(i)
                test_step(batch)
                cbs.on_test_batch_end(i, {})
            val_logs = _results(model)
            cbs.on_test_end(val_logs)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        cbs.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if _any_worker(strategy, model.stop_training):
            model.stop_training = True
            break
    if isinstance(model.optimizer, keras.optimizers.Optimizer) and epochs > 0:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    cbs.on_train_end(logs=training_logs)
    return model.history


def weights_digest(model: keras.Model) -> str:
    """sha256 of the model's weights: every worker logs it after training, and they match."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()


def describe(strategy: tf.distribute.Strategy) -> dict[str, str]:
    """MLflow tags for the strategy: its class, replicas, workers and this task."""
    task_type, task_id = task_of(strategy)
    workers = 1
    if task_type is not None:
        cluster = strategy.cluster_resolver.cluster_spec().as_dict()
        workers = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
    # (tf.distribute.MultiWorkerMirroredStrategy's class is named CollectiveAllReduceStrategy)
    name = next((label for cls, label in (
        (tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
        (tf.distribute.MirroredStrategy, "MirroredStrategy")) if isinstance(strategy, cls)),
        type(strategy).__name__)
    return {tags.STRATEGY: name,
            tags.REPLICAS: str(strategy.num_replicas_in_sync),
            tags.WORKERS: str(workers),
            tags.TF_CONFIG_TASK: json.dumps([task_type, task_id])}
