"""The sweeper's config schema, registered as ``hydra/sweeper: segkit_optuna``. No
``from __future__ import annotations``: Hydra runs this module without registering it, and
dataclasses cannot resolve string annotations then. Every key is
documented in conf/hparams_search/optuna.yaml."""

from dataclasses import dataclass, field
from typing import Any  # noqa: UP035 (Hydra executes this module unregistered: no PEP 604/585 strings)

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random | grid | cmaes | gp | qmc
    seed: int | None = None
    n_startup_trials: int = 10  # tpe, gp: random trials before the model is used


@dataclass
class PrunerConf:
    name: str = "median"  # median | successive_halving | hyperband | none
    n_startup_trials: int = 4  # median: trials that finish before any pruning
    n_warmup_steps: int = 3  # median: the first epoch at which a trial can be pruned
    min_resource: int = 3  # successive_halving, hyperband: epochs before the first rung
    reduction_factor: int = 3  # successive_halving, hyperband


@dataclass
class SegkitOptunaSweeperConf:
    _target_: str = "hydra_plugins.segkit_optuna_sweeper.sweeper.SegkitOptunaSweeper"
    direction: str = "maximize"
    study_name: str | None = None
    storage: str | None = None
    study_dir: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 1.0
    monitor: str = "val_mean_image_dice"
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: dict[str, Any] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="segkit_optuna",
                             node=SegkitOptunaSweeperConf, provider="segkit")
