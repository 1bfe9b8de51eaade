"""Sweeps (Hydra multirun, Optuna search): one MLflow parent run per sweep, one child run per
job, failures contained, completed configs skipped, and a summary logged when the sweep ends.

Three modules: ``job.py`` (what runs inside each job), ``parent.py`` (the sweep's parent run
and its summary) and ``callback.py`` (the Hydra callback that drives ``parent.py``). They share
nothing in memory: the sweep folder holds what they tell each other.

How the pieces meet:

- :class:`MLflowSweepCallback` (``hydra.callbacks`` in ``conf/config.yaml``) runs in the process
  that launches the jobs. ``on_multirun_start`` creates the tracking store, the experiment and
  the parent run (left RUNNING) before any job starts, and writes ``<sweep dir>/mlflow_sweep.json``
  atomically, with the sweep's plan (``planned``: every job by number, the basic sweeper's
  override combinations in Hydra's order, Optuna's ``n_trials`` trials), so the summary lists
  the jobs that never ran too (NOT_STARTED). ``on_multirun_end`` writes the summary to the
  parent and ends it. Hydra skips ``on_multirun_end`` when the sweeper raises (e.g. Optuna
  with every trial failed, Ctrl-C), so an ``atexit`` hook then writes the summary and ends
  the parent FAILED (KILLED on Ctrl-C).
- Each job (``run.py`` calls :func:`run_job`) reads that file, so its run is created with the
  ``mlflow.parentRunId`` tag (the UI nests by it) and named by the job's swept overrides. The file
  works in-process (basic launcher) and in joblib worker processes alike.
- A job that raises inside a sweep is recorded (its run ends FAILED with ``segkit.error``; a job
  that failed before its run existed, e.g. in config validation, gets a FAILED run made for it)
  and returns a :class:`FailedJob`, which is not a number. So every sweeper goes on to the next
  job (re-raising would make Hydra's basic sweeper stop after the batch and skip
  ``on_multirun_end``), and segkit's Optuna sweeper (``hydra_plugins/segkit_optuna_sweeper``)
  tells the trial FAIL, never a score.
  The callback then exits 1 when any job failed. Single runs raise as before.
- Ctrl-C in a job writes ``<sweep dir>/interrupted`` (with the job's number); the summary then
  ends the parent KILLED and counts the job as killed, not failed. The job's log names the
  command that resumes its run (``segkit.lifecycle.interrupt_hint``).
- ``sweep.skip_completed=true``: a job whose :func:`config_hash` already has a FINISHED run in the
  experiment is not trained; in a sweep a small FINISHED child run tagged ``segkit.skipped_from``
  (with the found run's params, metrics and model URI) stands for it, so the summary stays whole.
"""

from __future__ import annotations

# Only the job side: run.py imports it on every start. The sweep side (parent.py, its
# statistics and SciPy) is imported by Hydra through segkit.sweep.callback when a multirun
# starts, so a single run does not pay for it.
from segkit.sweep.job import FailedJob, run_job

__all__ = ["FailedJob", "run_job"]
