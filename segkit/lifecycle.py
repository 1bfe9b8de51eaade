"""The one wrapper around an experiment's MLflow run: it opens (or reopens) the run, times
each phase, tags a failure with its error, and turns Ctrl-C / SIGTERM into a KILLED run with
a hint that resumes it. The experiment itself (segkit.experiment) then reads as a story.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from segkit import tracking
from segkit.fileio import write_text
from segkit.interrupts import sigterm_interrupts

log = logging.getLogger(__name__)

TIMINGS = "timings.json"  # in the run folder: wall seconds of each phase


@dataclass
class Phases:
    """Wall seconds of each phase of a run (data, build, fit, log_model, evaluate, ...),
    written to ``<run_dir>/timings.json`` after every phase, for users and benchmarks."""

    path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            if self.path is not None:
                write_text(self.path, json.dumps(self.seconds, indent=1))


@dataclass
class TrackedRun:
    """What the body of :func:`tracked_run` gets: the run's id and its phase timer."""

    run_id: str
    phase: Phases


def launch_command() -> tuple[list[str], bool] | None:
    """The overrides this Hydra job was started with, as typed (a sweep job's own values,
    no sweep syntax), and whether it runs in a sweep; None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    task = OmegaConf.to_container(hc.overrides.task, resolve=False)
    return [str(o) for o in task or []], hc.mode == RunMode.MULTIRUN


def interrupt_hint(run_id: str, run_dir: Path, command: tuple[list[str], bool] | None) -> str:
    """What to do after an interrupt: when the run finished an epoch, the command that
    continues it, ready to paste (the job's own overrides plus ``trainer.resume=<run_id>``);
    else that there is nothing to resume. ``command``: see :func:`launch_command`."""
    from segkit.checkpoints import missing_for_resume  # Keras: only once interrupted

    overrides, sweep = command if command is not None else (None, False)
    if missing_for_resume(run_dir):
        again = ("rerun the sweep with sweep.skip_completed=true" if sweep
                 else "rerun the same command")
        return (f"interrupted: run {run_id} is KILLED; nothing to resume (no epoch "
                f"finished): {again}")
    saved = (f"interrupted: run {run_id} is KILLED with its last finished epoch saved in "
             f"{Path(run_dir) / 'checkpoints'}")
    if overrides is None:
        return f"{saved}; continue it with trainer.resume={run_id} added to its command"
    kept = [o for o in overrides if o.lstrip("+~").partition("=")[0] != "trainer.resume"]
    return f"{saved}; continue it with: " + shlex.join(
        ["python", "run.py", *kept, f"trainer.resume={run_id}"])


@contextmanager
def tracked_run(cfg: Mapping, run_dir: Path, run_name: str | None,
                tags: Mapping[str, str] | None = None, resume_run_id: str | None = None,
                resume_hint: bool = False) -> Iterator[TrackedRun]:
    """An MLflow run (``resume_run_id`` reopens one) for the body: FINISHED when it returns,
    FAILED with ``segkit.error`` when it raises, KILLED on Ctrl-C or SIGTERM; with
    ``resume_hint``, an interrupted run logs the command that continues it."""
    tr = cfg["tracking"]
    phases = Phases(Path(run_dir) / TIMINGS)
    run_id = None
    try:
        with sigterm_interrupts(), tracking.start_run(
                tr["uri"], tr["experiment"], run_name or tr["run_name"], tags=tags,
                run_id=resume_run_id) as run:
            run_id = run.info.run_id
            yield TrackedRun(run_id, phases)
    except KeyboardInterrupt:
        if run_id and resume_hint:
            log.warning("%s", interrupt_hint(run_id, run_dir, launch_command()))
        raise
    finally:
        if phases.seconds:
            log.info("phases: %s", ", ".join(f"{k} {v:.1f} s" for k, v in phases.seconds.items()))
