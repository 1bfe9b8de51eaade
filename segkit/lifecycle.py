"""The one wrapper around an experiment's MLflow run: it opens (or reopens) the run, times
each phase, tags a failure with its error, and turns Ctrl-C / SIGTERM into a KILLED run with
a hint that resumes it. The experiment itself (segkit.experiment) then reads as a story.
"""

from __future__ import annotations

import json
import logging
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
            log.warning("interrupted: run %s is KILLED with its last finished epoch saved in "
                        "%s; continue it with: python run.py trainer.resume=%s", run_id,
                        Path(run_dir) / "checkpoints", run_id)
        raise
    finally:
        if phases.seconds:
            log.info("phases: %s", ", ".join(f"{k} {v:.1f} s" for k, v in phases.seconds.items()))
