"""The config check that runs before any data is read or any MLflow run is created.

Hydra already refuses unknown keys (the composed config is in struct mode) and unknown group
options. :func:`validate` composes the checks each component keeps beside its builder (the
registries of models, losses, optimizers, schedules, splits and augmentations, and the
trainer's options), adds the few rules of the run as a whole, and raises the first
ConfigError, one line naming the key. It imports no TensorFlow, so a bad override fails in
about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from segkit.data.augmentations import check_augment
from segkit.data.external import external_sets
from segkit.data.splits import check_split
from segkit.errors import ConfigError
from segkit.export import export_options
from segkit.losses import check_loss
from segkit.metrics import SCORE_KEYS, SUMMARY_KEYS
from segkit.models import check_model
from segkit.optimizers import check_optimizer
from segkit.registry import from_mapping, plain
from segkit.rundir import unique_dir
from segkit.schedules import check_schedule
from segkit.targets import check_targets
from segkit.trainer import trainer_options

TASKS = ("train", "evaluate")
OBJECTIVES = tuple(f"val_{k}" for k in SUMMARY_KEYS + SCORE_KEYS)


def register_resolvers(root: Path) -> None:
    """``${project_root:}``: the folder holding run.py and conf/ (outputs, mlflow.db go
    there); ``${unique_dir:BASE}``: a new folder ``BASE-<random>`` that this process created
    (cached in the config, so every later resolution, a sweep's jobs too, gets the same)."""
    OmegaConf.register_new_resolver("project_root", lambda: str(root), replace=True)
    OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True, use_cache=True)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class EvalOptions:
    """``conf/eval/default.yaml`` (segkit.report reads it)."""

    threshold: float
    select_threshold: bool
    original_resolution: bool
    bins: int
    batch_size: int
    tta: bool
    boundary: bool
    nsd_tolerance: float
    bootstrap_draws: int
    plots: bool
    external: list  # segkit.data.external checks its entries (with the dataset group's)

    def check(self) -> None:
        _require(0 < self.threshold < 1, f"eval.threshold={self.threshold} must be in (0, 1)")
        _require(self.bins >= 10, f"eval.bins={self.bins} must be >= 10")
        _require(self.batch_size >= 1, f"eval.batch_size={self.batch_size} must be >= 1")
        _require(self.nsd_tolerance >= 0,
                 f"eval.nsd_tolerance={self.nsd_tolerance} must be >= 0 (pixels)")
        _require(self.bootstrap_draws == 0 or self.bootstrap_draws >= 100,
                 f"eval.bootstrap_draws={self.bootstrap_draws} must be 0 (off) or >= 100")


def _check_model_uri(uri: object) -> None:
    """``model_uri``: null, one URI, or a list of URIs (an ensemble: mean of probabilities)."""
    if uri is None or isinstance(uri, str):
        return
    uris = list(uri) if isinstance(uri, (list, ListConfig)) else None
    _require(bool(uris) and all(isinstance(u, str) and u for u in uris or ()),
             f"model_uri={uri} must be one model URI or a list of them ([uri1,uri2]: an "
             "ensemble)")


def _check_run(cfg: DictConfig) -> None:
    """The keys of the run as a whole: task, model_uri, objective, data size and limit."""
    _require(cfg.task in TASKS, f"task={cfg.task!r} is unknown: use train or evaluate")
    _require(isinstance(cfg.verbose, bool), f"verbose={cfg.verbose!r} must be true or false")
    _require(cfg.task != "evaluate" or bool(cfg.model_uri),
             "task=evaluate needs model_uri=<runs:/RUN_ID/model | models:/NAME/VERSION | path>")
    _check_model_uri(cfg.model_uri)
    _require(cfg.objective in OBJECTIVES,
             f"objective={cfg.objective!r} must be a validation metric (the held-out split "
             f"never selects models): use one of {', '.join(OBJECTIVES)}")
    tr = cfg.tracking
    _require(isinstance(tr.http_timeout, int) and tr.http_timeout >= 1,
             f"tracking.http_timeout={tr.http_timeout!r} must be an integer >= 1 (seconds)")
    _require(isinstance(tr.http_retries, int) and 0 <= tr.http_retries <= 10,
             f"tracking.http_retries={tr.http_retries!r} must be an integer in 0..10")
    _require(isinstance(tr.serving_model, bool),
             f"tracking.serving_model={tr.serving_model!r} must be true or false")
    d = cfg.data
    _require(isinstance(d.image_size, int) and not isinstance(d.image_size, bool)
             and d.image_size >= 8, f"data.image_size={d.image_size} must be an integer >= 8")
    _require(d.limit is None or (isinstance(d.limit, int) and d.limit >= 1),
             f"data.limit={d.limit} must be >= 1 or null")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key and the fix for the first impossible value."""
    _check_run(cfg)
    check_model(cfg.model, cfg.data.image_size)
    trainer = trainer_options(cfg.trainer, cfg.task)
    check_loss(cfg.loss)
    check_optimizer(cfg.optimizer)
    check_schedule(cfg.schedule, trainer.max_minutes)
    check_split(cfg.split)
    from_mapping(EvalOptions, plain(cfg.eval), "eval")
    external_sets(cfg.eval.external, cfg.get("dataset"))  # other centres' test sets
    check_targets(cfg)  # a _target_ outside segkit's allowlist never gets imported
    check_augment(cfg.augment)
    export_options(cfg.get("export"))  # export.formats: known, and their packages installed
