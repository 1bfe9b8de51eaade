"""The Hydra sweeper: asks Optuna for trials, launches them through the configured launcher
(in-process, joblib, SLURM...), tells Optuna each result (COMPLETE, PRUNED when the job's
pruning callback stopped it, FAIL when the job failed), and stops early past
``max_failure_rate``. The study lives in its storage, so rerunning the same command
continues it (:func:`segkit.search.study.study_identity`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from segkit.errors import SegkitError

log = logging.getLogger(__name__)


class SegkitOptunaSweeper(Sweeper):
    """``hydra/sweeper=segkit_optuna``; the keys of its config are its arguments."""

    def __init__(self, **conf: Any) -> None:
        self.conf = OmegaConf.create(conf)
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        from hydra_plugins.segkit_optuna_sweeper.search import Search

        assert self.config is not None
        try:
            search = Search(self.conf, self.config, self.launcher, arguments)
        except SegkitError as exc:  # a bad sweeper setting: one line, exit 2
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_status) from None
        search.run()
        return None

    @property
    def sweep_dir(self) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir))
