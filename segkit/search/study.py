"""What the sweeper and its jobs share about an Optuna study: its identity (name and storage,
the same for the same command, so a rerun continues it), the search file in the sweep folder
(the trial of each job), the storage, the pruner, and the MLflow tags of a search.

Imports no Optuna until a storage or pruner is built, and no TensorFlow."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segkit.errors import ConfigError
from segkit.fileio import write_text

SEARCH_FILE = "optuna_search.json"  # in the sweep dir: study, storage, pruner, job -> trial
ABORTED = "aborted"  # in the sweep dir: why the sweeper stopped early (max_failure_rate)
SWEEPER = "SegkitOptunaSweeper"  # the class name in hydra.sweeper._target_

# MLflow tags of a search: the parent run is the study, each child run one trial
STUDY_TAG = "segkit.search.study"
STORAGE_TAG = "segkit.search.storage"  # the password of an RDB URL masked
SAMPLER_TAG = "segkit.search.sampler"
PRUNER_TAG = "segkit.search.pruner"
TRIAL_TAG = "segkit.search.trial"  # the trial's number in the study
TRIAL_STATE_TAG = "segkit.trial_state"  # complete | pruned | fail
PRUNED_AT_TAG = "segkit.search.pruned_at_epoch"
BEST_TRIAL_TAG = "segkit.search.best_trial"
BEST_TRIAL_RUN_TAG = "segkit.search.best_trial_run_id"

# trial user attributes
RUN_ID_ATTR = "mlflow_run_id"
PRUNED_ATTR = "segkit_pruned_at_epoch"
OWNER_ATTR = "segkit_sweeper"  # host:pid of the sweeper that asked for the trial
ORPHAN_ATTR = "segkit_orphaned"  # failed because its sweeper died: not counted in n_trials

PRUNERS = ("median", "successive_halving", "hyperband", "none")


def is_search(config: DictConfig) -> bool:
    target = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    return target.rsplit(".", 1)[-1] == SWEEPER


def _search_key(config: DictConfig) -> dict:
    """Everything that makes two searches the same study: the space (sweeper params and the
    command's overrides), direction, sampler, seed, pruner and monitored metric. n_trials,
    n_jobs, storage and max_failure_rate are left out: changing them continues the study."""
    sweeper = config.hydra.sweeper
    params = dict(sweeper.params or {})
    task = list(config.hydra.overrides.task or [])
    return {"params": sorted(f"{k}={v}" for k, v in params.items()),
            "overrides": sorted(str(o) for o in task),
            "direction": str(sweeper.direction), "monitor": str(sweeper.monitor),
            "sampler": OmegaConf.to_container(sweeper.sampler, resolve=True),
            "pruner": OmegaConf.to_container(sweeper.pruner, resolve=True)}


def study_identity(config: DictConfig) -> tuple[str, str]:
    """(study name, storage) of the search ``config`` runs: ``study_name``, else ``segkit-``
    and a digest of :func:`_search_key` (the same command: the same study); ``storage``,
    else the journal file ``<study_dir>/<study name>.journal``."""
    sweeper = config.hydra.sweeper
    name = sweeper.study_name
    if not name:
        digest = hashlib.sha256(json.dumps(_search_key(config), sort_keys=True).encode())
        name = f"segkit-{digest.hexdigest()[:10]}"
    storage = sweeper.storage
    if not storage:
        folder = sweeper.study_dir or Path(str(config.hydra.sweep.dir)).parent
        storage = str(Path(str(folder)).expanduser().absolute() / f"{name}.journal")
    return str(name), str(storage)


def masked(storage: str) -> str:
    """``storage`` with the password of an RDB URL replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", storage)


def is_rdb(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str) -> Any:
    """An RDB URL (``sqlite:///``, ``postgresql://``...) as Optuna's RDBStorage, anything
    else as the path of a journal file (JournalFileStorage: no server, safe for several
    local processes through its file lock)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if is_rdb(storage):
        return optuna.storages.RDBStorage(storage)
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def check_pruner(pruner: Any) -> None:
    name = str(pruner.get("name", "none"))
    if name not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner.name={name!r} is not one of "
                          f"{', '.join(PRUNERS)}")


def build_pruner(pruner: Any) -> Any:
    """Optuna's pruner for ``hydra.sweeper.pruner`` (a mapping with ``name``)."""
    import optuna

    check_pruner(pruner)
    name = str(pruner.get("name", "none"))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(pruner["n_startup_trials"]),
                                           n_warmup_steps=int(pruner["n_warmup_steps"]))
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=int(pruner["min_resource"]),
            reduction_factor=int(pruner["reduction_factor"]))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(pruner["min_resource"]),
                                              reduction_factor=int(pruner["reduction_factor"]))
    return optuna.pruners.NopPruner()


def write_search_file(sweep_dir: Path, info: dict) -> None:
    write_text(Path(sweep_dir) / SEARCH_FILE, json.dumps(info, indent=2) + "\n")


def read_search_file(sweep_dir: Path | str) -> dict | None:
    try:
        return json.loads((Path(sweep_dir) / SEARCH_FILE).read_text())
    except (OSError, ValueError):
        return None
