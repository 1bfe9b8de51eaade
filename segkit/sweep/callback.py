"""The Hydra callback that gives every multirun an MLflow parent run and a summary."""

from __future__ import annotations

import atexit
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from segkit.sweep.parent import finish_sweep, start_sweep


class MLflowSweepCallback(Callback):
    """Hydra callback: one MLflow parent run per multirun (basic sweeper, Optuna, any launcher)
    with a summary when it ends. Single runs are untouched."""

    def __init__(self) -> None:
        self.info: dict | None = None
        self._open = False
        self.failed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.failed = False
        try:
            self.info = start_sweep(config)
        except Exception:
            self.failed = True  # the sweep cannot be tracked: exit 1 at its end
            raise  # Hydra turns it into a warning; the jobs then run as top-level runs
        self._open = True
        atexit.register(self._finish_aborted)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise; then exit 1 (after Hydra's own end of the sweep) when any job failed or
        the sweep could not be tracked: a shell or scheduler sees the failure."""
        try:
            counts = self._finish(None)
        except Exception:  # said in one line by _finish; Hydra would make it a mere warning
            raise SystemExit(1) from None
        if self.failed or (counts is not None and counts["jobs_failed"]):
            raise SystemExit(1)

    def _finish_aborted(self) -> None:
        self._finish("the sweep stopped before its end (a job or the sweeper raised, or it "
                     "was interrupted); the summary lists every planned job, NOT_STARTED "
                     "for those that did not run")

    def _finish(self, aborted: str | None) -> dict | None:
        if not self._open or self.info is None:
            return None
        self._open = False
        atexit.unregister(self._finish_aborted)
        try:
            return finish_sweep(self.info, aborted)
        except Exception as exc:
            self.failed = True
            print(f"error: the sweep summary could not be written: {exc}", file=sys.stderr)
            raise


