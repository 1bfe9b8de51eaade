"""The ``trainer`` config: its options, checked once before any work (no TensorFlow here),
and the arithmetic the fit needs from them (steps per epoch, the scaled learning rate)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from segkit.errors import ConfigError
from segkit.precision import check_precision
from segkit.registry import from_mapping, plain

STRATEGIES = ("default", "mirrored", "multi_worker")  # segkit.distribute builds them
LR_SCALING = ("none", "linear")
JIT_COMPILE = ("auto", True, False)


def tf_config_ok() -> bool:
    """TF_CONFIG parses and names this task within a cluster of workers."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "null")
        cluster, task = tf_config["cluster"], tf_config["task"]
        return task["type"] in cluster and 0 <= int(task["index"]) < len(cluster[task["type"]])
    except (ValueError, TypeError, KeyError):
        return False


@dataclass(frozen=True)
class TrainerOptions:
    """``conf/trainer/default.yaml``, one field per key (its comments say what each does)."""

    epochs: int
    max_minutes: float | None
    batch_size: int
    strategy: str
    lr_scaling: str
    precision: str
    jit_compile: Any
    deterministic: bool
    resume: str | None
    verbose: int

    def check(self, task: str = "train") -> None:
        """ConfigError naming the first impossible value."""
        _require(self.epochs >= 1, f"trainer.epochs={self.epochs} must be >= 1")
        _require(self.max_minutes is None or self.max_minutes > 0,
                 f"trainer.max_minutes={self.max_minutes} must be > 0 or null")
        _require(self.batch_size >= 1, f"trainer.batch_size={self.batch_size} must be >= 1")
        check_precision(self.precision)
        _require(self.jit_compile in JIT_COMPILE,
                 f"trainer.jit_compile={self.jit_compile!r} must be auto, true or false")
        _require(self.resume is None or bool(self.resume.strip()),
                 f"trainer.resume={self.resume!r} must be an MLflow run id, auto, or null")
        _require(task == "train" or self.resume is None,
                 "trainer.resume applies to task=train only: drop it")
        self._check_strategy(task)

    def _check_strategy(self, task: str) -> None:
        _require(self.strategy in STRATEGIES, f"trainer.strategy={self.strategy!r} is unknown: "
                 f"use one of {', '.join(STRATEGIES)}")
        _require(self.lr_scaling in LR_SCALING, f"trainer.lr_scaling={self.lr_scaling!r} is "
                 f"unknown: use one of {', '.join(LR_SCALING)}")
        if self.strategy == "multi_worker":
            _require(self.resume is None, "trainer.resume is not supported with "
                     "trainer.strategy=multi_worker yet: drop it")
            _require(task != "train" or tf_config_ok(), "trainer.strategy=multi_worker needs "
                     "TF_CONFIG in the environment: JSON with cluster.worker (host:port list) "
                     "and task.index")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def trainer_options(trainer_cfg: Any, task: str = "train") -> TrainerOptions:
    """The checked, typed ``trainer`` options of a config node."""
    return from_mapping(TrainerOptions, plain(trainer_cfg), "trainer", {"task": task})


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    return math.ceil(train_size / batch_size)


def scaled_lr(lr: float, scaling: str, replicas: int) -> float:
    """``optimizer.lr`` under ``trainer.lr_scaling``: unchanged (none) or times the number of
    replicas (linear, Goyal et al. 2017: keeps the per-image step size when the global batch
    grows with the replicas)."""
    if scaling not in LR_SCALING:
        raise ConfigError(f"trainer.lr_scaling={scaling!r} is unknown: use one of "
                          f"{', '.join(LR_SCALING)}")
    return lr * replicas if scaling == "linear" else lr


def check_batch_size(batch_size: int, train_size: int) -> None:
    """Once the split is known: a batch larger than the training set cannot fill one step."""
    _require(batch_size <= train_size,
             f"trainer.batch_size={batch_size} is larger than the training set ({train_size} "
             "images): lower trainer.batch_size or use more data")
