"""One search: the study loaded or created, its orphaned trials failed, then batches of
trials asked, launched and told until ``n_trials`` trials count, and the results written."""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.segkit_optuna_sweeper import figures
from hydra_plugins.segkit_optuna_sweeper.space import grid, n_grid, parse_space
from segkit.errors import ConfigError
from segkit.fileio import write_text
from segkit.search import study as search

log = logging.getLogger(__name__)
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def build_sampler(sampler: Any, space: dict, resumed: int = 0) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for ``hydra.sweeper.sampler`` (``name`` and ``seed``). ``resumed``:
    the trials the study already holds; a resumed study's sampler is seeded ``seed +
    resumed``, so that it does not propose its first trials' parameters again (a fresh
    sampler restarts its random stream, and every sampler draws at random at first)."""
    name = str(sampler.name)
    seed = None if sampler.seed is None else int(sampler.seed) + resumed
    startup = int(sampler.n_startup_trials)
    makers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler(grid(space), seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
    }
    if name not in makers:
        raise ConfigError(f"hydra.sweeper.sampler.name={name!r} is not one of "
                          f"{', '.join(makers)}")
    return makers[name]()


def _alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's sweeper: cannot tell, leave its trials alone
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def fail_trials(study: optuna.Study, trials: list, why: str) -> None:
    """Mark ``trials`` FAIL as orphans (their budget is spent again: they do not count)."""
    for frozen in trials:
        trial = optuna.trial.Trial(study, frozen._trial_id)
        trial.set_user_attr(search.ORPHAN_ATTR, why)
        study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
        log.warning("search: trial %d marked FAIL: %s", frozen.number, why)


def counted(study: optuna.Study) -> list:
    """The trials that count toward ``n_trials``: every one asked for, but orphans."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state != TrialState.WAITING and search.ORPHAN_ATTR not in t.user_attrs]


def _value(ret: Any) -> float | str:
    """The job's objective, or why it is not one."""
    try:
        value = float(ret.return_value)
    except BaseException as exc:  # a FailedJob, or the job's own exception
        return f"{type(exc).__name__}: {exc}"
    return value if math.isfinite(value) else f"objective = {value}"


class Search:
    """The state of one sweeper invocation (see the module's docstring)."""

    def __init__(self, conf: DictConfig, config: DictConfig, launcher: Any,
                 arguments: list[str]) -> None:
        self.conf, self.config, self.launcher = conf, config, launcher
        lines = [f"{k}={v}" for k, v in dict(conf.params or {}).items()]
        self.space, self.fixed = parse_space([*lines, *arguments])
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.name, self.storage_url = search.study_identity(config)
        if str(conf.direction) not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={conf.direction} must be maximize or "
                              "minimize")
        if not 0.0 <= float(conf.max_failure_rate) <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={conf.max_failure_rate} "
                              "must be in [0, 1]")
        self.study = optuna.create_study(
            study_name=self.name, storage=search.open_storage(self.storage_url),
            sampler=build_sampler(conf.sampler, self.space),
            pruner=search.build_pruner(conf.pruner),
            direction="minimize" if str(conf.direction) == "minimize" else "maximize",
            load_if_exists=True)
        self.n_trials = int(conf.n_trials)
        if str(conf.sampler.name) == "grid":
            self.n_trials = min(self.n_trials, n_grid(self.space))
        self.job_idx = len(self.study.get_trials(deepcopy=False))
        if self.job_idx:  # a resumed study: a sampler that does not repeat its first draws
            self.study.sampler = build_sampler(conf.sampler, self.space, resumed=self.job_idx)
        self.links: dict[str, dict] = {}
        self.ran = self.failed = 0

    def run(self) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        orphans = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if not _alive(str(t.user_attrs.get(search.OWNER_ATTR, "")))]
        fail_trials(self.study, orphans, "its sweeper stopped while it ran (resumed search)")
        for frozen in orphans:  # a run left RUNNING by a killed process: KILLED, not FAILED
            figures.end_killed(self.config, frozen.user_attrs.get(search.RUN_ID_ATTR))
        done = len(counted(self.study))
        print(f"search: study {self.name} in {search.masked(self.storage_url)}: {done} "
              f"trial(s) already count, {max(self.n_trials - done, 0)} to go")
        self._write_file()
        figures.tag_parent(self.sweep_dir, self.config, self._describe())
        while self._batch():
            pass
        figures.finish(self.sweep_dir, self.config, self.study, self.conf)

    def _describe(self) -> dict[str, str]:
        pruner = dict(OmegaConf.to_container(self.conf.pruner, resolve=True))  # type: ignore[arg-type]
        return {search.STUDY_TAG: self.name, search.STORAGE_TAG: search.masked(self.storage_url),
                search.SAMPLER_TAG: f"{self.conf.sampler.name} seed={self.conf.sampler.seed}",
                search.PRUNER_TAG: ", ".join(f"{k}={v}" for k, v in pruner.items())}

    def _write_file(self) -> None:
        search.write_search_file(self.sweep_dir, {
            "study_name": self.name, "storage": self.storage_url,
            "direction": str(self.conf.direction), "monitor": str(self.conf.monitor),
            "pruner": OmegaConf.to_container(self.conf.pruner, resolve=True),
            "trials": self.links})

    def _batch(self) -> bool:
        """Ask for, launch and tell one batch of ``n_jobs`` trials; False when done."""
        to_go = self.n_trials - len(counted(self.study))
        if to_go <= 0:
            return False
        asked = [self._ask_one(i) for i in range(min(int(self.conf.n_jobs), to_go))]
        self._write_file()
        trials = [trial for trial, _ in asked]
        try:
            returns = self.launcher.launch([o for _, o in asked], initial_job_idx=self.job_idx)
        except BaseException:
            fail_trials(self.study, [self.study._storage.get_trial(t._trial_id) for t in trials],
                        "the sweep was interrupted while it ran")
            raise
        self.job_idx += len(asked)
        for trial, ret in zip(trials, returns, strict=True):
            self._tell(trial, ret)
        return not self._too_many_failures()

    def _ask_one(self, i: int) -> tuple[optuna.trial.Trial, list[str]]:
        trial = self.study.ask(self.space)
        trial.set_user_attr(search.OWNER_ATTR, OWNER)
        self.links[str(self.job_idx + i)] = {"number": trial.number,
                                             "trial_id": trial._trial_id}
        overrides = [f"{k}={v}" for k, v in self.fixed.items()]
        return trial, overrides + [f"{k}={v}" for k, v in trial.params.items()]

    def _tell(self, trial: optuna.trial.Trial, ret: Any) -> None:
        self.ran += 1
        value = _value(ret)
        frozen = self.study._storage.get_trial(trial._trial_id)
        run_id = frozen.user_attrs.get(search.RUN_ID_ATTR)
        if isinstance(value, str):
            self.failed += 1
            self.study.tell(trial, state=TrialState.FAIL)
            state = "fail"
            log.warning("search: trial %d FAIL: %s", trial.number, value)
        elif search.PRUNED_ATTR in frozen.user_attrs:
            self.study.tell(trial, state=TrialState.PRUNED)
            state = "pruned"
        else:
            self.study.tell(trial, value)
            state = "complete"
        print(f"search: trial {trial.number}: {state}"
              + (f" ({value:.4f})" if state == "complete" else ""), file=sys.stderr)
        figures.tag_child(self.config, run_id, state)

    def _too_many_failures(self) -> bool:
        rate = self.failed / self.ran if self.ran else 0.0
        if rate <= float(self.conf.max_failure_rate):
            return False
        why = (f"search stopped: {self.failed} of {self.ran} trials failed, over "
               f"hydra.sweeper.max_failure_rate={self.conf.max_failure_rate}")
        print(f"error: {why}", file=sys.stderr)
        write_text(self.sweep_dir / search.ABORTED, why + "\n")
        return True
