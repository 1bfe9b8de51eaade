"""Sweeps (Hydra multirun, Optuna search): one MLflow parent run per sweep, one child run per
job, failures contained, completed configs skipped, and a summary logged when the sweep ends.

How the pieces meet:

- :class:`MLflowSweepCallback` (``hydra.callbacks`` in ``conf/config.yaml``) runs in the process
  that launches the jobs. ``on_multirun_start`` creates the tracking store, the experiment and
  the parent run (left RUNNING) before any job starts, and writes ``<sweep dir>/mlflow_sweep.json``
  atomically. ``on_multirun_end`` writes the summary to the parent and ends it. Hydra skips
  ``on_multirun_end`` when the sweeper raises (e.g. Optuna with every trial failed, Ctrl-C), so
  an ``atexit`` hook then writes the summary and ends the parent FAILED (KILLED on Ctrl-C).
- Each job (``run.py`` calls :func:`run_job`) reads that file, so its run is created with the
  ``mlflow.parentRunId`` tag (the UI nests by it) and named by the job's swept overrides. The file
  works in-process (basic launcher) and in joblib worker processes alike.
- A job that raises inside a sweep is recorded (its run ends FAILED with ``segkit.error``; a job
  that failed before its run existed, e.g. in config validation, gets a FAILED run made for it)
  and returns a :class:`FailedJob`, which is not a number. So every sweeper goes on to the next
  job (re-raising would make Hydra's basic sweeper stop after the batch and skip
  ``on_multirun_end``), and Optuna marks the trial FAIL, never a score (a NaN would crash
  hydra-optuna-sweeper 1.3.0: it tells Optuna FAIL together with the value).
  ``run.py`` then exits 1 when any job failed. Single runs raise as before.
- ``sweep.skip_completed=true``: a job whose :func:`config_hash` already has a FINISHED run in the
  experiment is not trained; in a sweep a small FINISHED child run tagged ``segkit.skipped_from``
  (with the found run's params, metrics and model URI) stands for it, so the summary stays whole.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import math
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from segkit.config import validate
from segkit.errors import SegkitError
from segkit.fileio import atomic_path, write_text

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"  # in the sweep dir: the parent run id, for the jobs
SUMMARY_CSV = "summary.csv"
SUMMARY_PNG = "summary.png"
TAG_PARENT = "mlflow.parentRunId"  # the tag the MLflow UI nests child runs by
TAG_HASH = "segkit.config_hash"
TAG_JOB = "segkit.sweep.job"  # Hydra's job number within the sweep
TAG_JOB_ID = "segkit.job_id"  # unique per job: finds the job's run after a failure
TAG_OVERRIDES = "segkit.overrides"  # the job's command-line overrides, a JSON list
TAG_SKIPPED_FROM = "segkit.skipped_from"
TAG_ERROR = "segkit.error"
TAG_BEFORE_RUN = "segkit.failed_before_run"
_MAX_TAG = 5000
_STATE = {"failed_jobs": 0, "sweep_error": False, "interrupted": False}  # exit_status()


# --------------------------------------------------------------------------- the job side
def config_hash(cfg: DictConfig) -> str:
    """The run identity ``segkit.tracking.config_hash`` gives the resolved ``cfg`` (the
    ``segkit.config_hash`` tag every run carries): one definition for tags and lookups."""
    from segkit import tracking  # imports Keras: only after validation

    return tracking.config_hash(OmegaConf.to_container(cfg, resolve=True))


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


@dataclass
class Job:
    """What a job needs to know about its sweep (nothing, for a single run)."""

    multirun: bool
    overrides: list[str]
    run_name: str | None
    job_id: str
    config_hash: str | None = None  # set once the config has been validated
    parent_run_id: str | None = None
    num: int | None = None

    @property
    def tags(self) -> dict[str, str]:
        """Tags given to the job's run when it is created."""
        tags = {TAG_JOB_ID: self.job_id, TAG_OVERRIDES: json.dumps(self.overrides)[:_MAX_TAG]}
        if self.config_hash:
            tags[TAG_HASH] = self.config_hash
        if self.parent_run_id:
            tags[TAG_PARENT] = self.parent_run_id
        if self.num is not None:
            tags[TAG_JOB] = str(self.num)
        return tags


def read_sweep_file(sweep_dir: Path | str) -> dict | None:
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def job_context() -> Job:
    """The current Hydra job: a single run, or a sweep job with its parent run (a missing
    sweep file only costs the nesting)."""
    hc = HydraConfig.get()
    overrides = [str(o) for o in hc.overrides.task]
    job = Job(multirun=hc.mode == RunMode.MULTIRUN, overrides=overrides,
              run_name=hc.job.override_dirname or None, job_id=uuid.uuid4().hex)
    if not job.multirun:
        return job
    job.num = int(hc.job.num)
    info = read_sweep_file(hc.sweep.dir)
    if info is None:
        log.warning("no %s in %s: this job's run is not nested under a sweep run",
                    SWEEP_FILE, hc.sweep.dir)
        return job
    job.parent_run_id = info["parent_run_id"]
    swept = set(info.get("swept", []))
    name = ",".join(o for o in overrides if _split(o)[0] in swept)
    job.run_name = name or job.run_name
    return job


@dataclass(frozen=True)
class FailedJob:
    """What a failed sweep job returns instead of its objective. ``float()`` of it raises, so
    Optuna's sweeper marks the trial FAIL; Hydra's basic sweeper just keeps it."""

    error: str

    def __float__(self) -> float:
        raise ValueError(f"the job failed: {self.error}")

    def __repr__(self) -> str:
        return f"FailedJob({self.error})"


def run_job(cfg: DictConfig,
            train: Callable[[str | None, dict[str, str]], float]) -> float | FailedJob:
    """Validate ``cfg``, skip it when ``sweep.skip_completed`` finds it done, else call
    ``train(run_name, tags)`` and return the objective.

    Single run: errors propagate. Sweep job: an error is recorded in MLflow and a
    :class:`FailedJob` returned, so the sweep goes on (and Optuna marks the trial FAIL)."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    job = None
    try:
        job = job_context()
        validate(cfg)
        job.config_hash = config_hash(cfg)
        if OmegaConf.select(cfg, "sweep.skip_completed", default=False):
            found = find_completed(cfg, job.config_hash)
            if found is not None:
                return record_skip(cfg, job, found)
        value = train(job.run_name, job.tags)
        if multirun and not math.isfinite(value):  # not a score: fail the trial, not Optuna
            return FailedJob(f"{cfg.objective} = {value}")
        return value
    except KeyboardInterrupt:
        _STATE["interrupted"] = True  # the sweep stops: its parent run ends KILLED
        raise
    except Exception as exc:
        if not multirun:
            raise
        if isinstance(exc, SegkitError):
            log.error("job failed: %s", exc)
        else:
            log.exception("job failed")
        print(f"error: {exc}", file=sys.stderr)
        record_failure(cfg, job, exc)
        return FailedJob(f"{type(exc).__name__}: {exc}")


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def find_completed(cfg: DictConfig, digest: str):
    """The newest FINISHED run (not itself a skip) of config hash ``digest`` that has the
    objective, in the configured experiment; None when there is none."""
    client = _client(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_HASH}` = '{digest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=100)
    for run in runs:
        value = run.data.metrics.get(cfg.objective)
        if TAG_SKIPPED_FROM not in run.data.tags and value is not None and math.isfinite(value):
            return run
    return None


def record_skip(cfg: DictConfig, job: Job, found) -> float:
    """Return the found run's objective; in a sweep, first add a FINISHED child run that
    stands for the job (tagged ``segkit.skipped_from``, with the found run's params, final
    metrics and model URI), so the summary lists it."""
    from mlflow.entities import Metric, Param

    objective = float(found.data.metrics[cfg.objective])
    log.info("sweep.skip_completed: this config already has FINISHED run %s (%s = %.4f); "
             "not training it again", found.info.run_id, cfg.objective, objective)
    print(f"skipped: same config as FINISHED run {found.info.run_id} "
          f"({cfg.objective} = {objective:.4f})")
    if not job.multirun:
        return objective
    client = _client(cfg.tracking.uri)
    copied = {k: v for k, v in found.data.tags.items()
              if k in ("segkit.model_uri", "segkit.split", "segkit.test_split")}
    run = client.create_run(
        found.info.experiment_id, run_name=f"{job.run_name or found.info.run_name} (skipped)",
        tags={**copied, **job.tags, TAG_SKIPPED_FROM: found.info.run_id})
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, now, 0) for k, v in found.data.metrics.items()],
        params=[Param(k, v) for k, v in found.data.params.items()])
    client.set_terminated(run.info.run_id, "FINISHED")
    return objective


def record_failure(cfg: DictConfig, job: Job | None, exc: BaseException) -> None:
    """Make sure the failed job has a FAILED run with ``segkit.error``: the run it opened
    (``tracking.start_run`` already marked it), else one made now. Never raises."""
    message = f"{type(exc).__name__}: {exc}"[:_MAX_TAG]
    try:
        from mlflow.entities import Param

        from segkit import tracking

        uri = cfg.tracking.uri
        experiment_id = tracking.setup_experiment(uri, cfg.tracking.experiment)
        client = _client(uri)
        existing = [] if job is None else client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_JOB_ID}` = '{job.job_id}'")
        if existing:
            run = existing[0]
            if TAG_ERROR not in run.data.tags:
                client.set_tag(run.info.run_id, TAG_ERROR, message)
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, "FAILED")
            return
        tags = {**(job.tags if job else {}), TAG_ERROR: message, TAG_BEFORE_RUN: "true"}
        run = client.create_run(experiment_id, run_name=job.run_name if job else None,
                                tags=tags)
        try:
            params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
            client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        except Exception:  # an unresolvable config: the error tag says why
            pass
        client.set_terminated(run.info.run_id, "FAILED")
    except Exception as record_exc:
        log.warning("could not record the failed job in MLflow: %s", record_exc)


def exit_status() -> int:
    """1 when the last sweep of this process had a failed job or could not be tracked."""
    return int(bool(_STATE["failed_jobs"] or _STATE["sweep_error"]))


# --------------------------------------------------------------------------- the sweep side
def sweep_overrides(config: DictConfig) -> tuple[dict[str, str], list[str]]:
    """The sweep's overrides (``hydra.sweeper.params``, then the command line, which wins,
    as both sweepers merge them) as key -> value text, and the keys that are swept."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    lines += [str(o) for o in config.hydra.overrides.task]
    values: dict[str, str] = {}
    swept: dict[str, bool] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        values[key] = _split(override.input_line or "")[1]
        swept[key] = override.is_sweep_override()
    return values, [k for k, is_swept in swept.items() if is_swept]


def _short(target: Any) -> str:
    return str(target or "").rsplit(".", 1)[-1]


def _direction(config: DictConfig) -> str:
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default="maximize")
    if isinstance(direction, Sequence) and not isinstance(direction, str):
        direction = direction[0] if direction else "maximize"
    text = str(getattr(direction, "name", direction))
    return "minimize" if "minimize" in text else "maximize"


def _param_key(key: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", key)


def start_sweep(config: DictConfig) -> dict:
    """Create the experiment and the parent run (RUNNING); write the sweep file; return it."""
    from mlflow.entities import Param

    from segkit import tracking

    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SWEEP_FILE).unlink(missing_ok=True)  # never a stale parent from an old sweep
    uri, experiment = str(config.tracking.uri), str(config.tracking.experiment)
    experiment_id = tracking.setup_experiment(uri, experiment)  # store + experiment, once
    values, swept = sweep_overrides(config)
    sweeper = _short(OmegaConf.select(config, "hydra.sweeper._target_"))
    launcher = _short(OmegaConf.select(config, "hydra.launcher._target_"))
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
    name = OmegaConf.select(config, "sweep.name")
    if not name:
        shown = " ".join(f"{k}={values[k]}" for k in swept) or "(no swept keys)"
        name = (f"optuna {n_trials} trials: {', '.join(swept)}" if n_trials is not None
                else f"sweep {shown}")
    info = {
        "parent_run_id": None, "experiment_id": experiment_id, "tracking_uri": uri,
        "sweep_dir": str(sweep_dir), "swept": swept, "objective": str(config.objective),
        "direction": _direction(config), "sweeper": sweeper, "launcher": launcher,
    }
    tags = {"segkit.sweep": "parent", "segkit.sweep.dir": str(sweep_dir),
            "segkit.sweep.overrides": " ".join(str(o) for o in config.hydra.overrides.task),
            "segkit.sweep.swept": ",".join(swept), "segkit.sweep.sweeper": sweeper,
            "segkit.sweep.launcher": launcher, "segkit.sweep.objective": info["objective"],
            "segkit.sweep.direction": info["direction"],
            **tracking.git_state(Path(str(config.paths.root_dir)))}
    client = _client(uri)
    run = client.create_run(experiment_id, run_name=str(name)[:250],
                            tags={k: str(v)[:_MAX_TAG] for k, v in tags.items()})
    params = {f"sweep.{_param_key(k)}": v for k, v in values.items()}
    if n_trials is not None:
        params["sweep.n_trials"] = n_trials
        params["sweep.sampler_seed"] = OmegaConf.select(config, "hydra.sweeper.sampler.seed")
    client.log_batch(run.info.run_id,
                     params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    info["parent_run_id"] = run.info.run_id
    write_text(sweep_dir / SWEEP_FILE, json.dumps(info, indent=2) + "\n")
    log.info("sweep parent run %s in experiment %r (%s)", run.info.run_id, experiment, uri)
    return info


def _children(client, parent_run_id: str) -> list:
    """Every run whose parent is ``parent_run_id``, in any experiment (a sweep over presets
    may move jobs to another experiment)."""
    experiments, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        experiments += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    runs, token = [], None
    while True:
        page = client.search_runs(experiments, f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _job_number(run) -> tuple[int, int]:
    try:
        return int(run.data.tags.get(TAG_JOB, "")), run.info.start_time or 0
    except ValueError:
        return sys.maxsize, run.info.start_time or 0


def summary_rows(runs: Sequence, swept: Sequence[str], objective: str) -> list[dict]:
    """One row per job: its number, run, status (SKIPPED for a skip), overrides, the
    objective, the error, then every final metric."""
    rows = []
    for run in sorted(runs, key=_job_number):
        tags, metrics = run.data.tags, run.data.metrics
        try:
            overrides = [str(o) for o in json.loads(tags.get(TAG_OVERRIDES, "[]"))]
        except ValueError:
            overrides = []
        values = dict(_split(o) for o in overrides)
        status = "SKIPPED" if TAG_SKIPPED_FROM in tags else run.info.status
        end = run.info.end_time
        row = {"job": tags.get(TAG_JOB, ""), "run_id": run.info.run_id,
               "run_name": run.info.run_name, "status": status,
               "skipped_from": tags.get(TAG_SKIPPED_FROM, ""),
               "overrides": " ".join(overrides),
               **{f"param:{k}": values.get(k, "") for k in swept},
               objective: metrics.get(objective, math.nan),
               "seconds": (end - run.info.start_time) / 1000 if end else math.nan,
               "error": tags.get(TAG_ERROR, "")}
        row.update({k: v for k, v in sorted(metrics.items()) if k != objective})
        rows.append(row)
    return rows


def _ok(row: dict, objective: str) -> bool:
    value = row.get(objective, math.nan)
    return row["status"] in ("FINISHED", "SKIPPED") and isinstance(value, float) and \
        math.isfinite(value)


def best_row(rows: Sequence[dict], objective: str, direction: str) -> dict | None:
    done = [r for r in rows if _ok(r, objective)]
    if not done:
        return None
    pick = min if direction == "minimize" else max
    return pick(done, key=lambda r: r[objective])


def write_summary_csv(rows: Sequence[dict], path: Path) -> Path:
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["job", "status"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def finish_sweep(info: dict, aborted: str | None = None) -> dict:
    """Summarise the sweep into its parent run and end it: FINISHED; FAILED when every job
    failed or the sweep was ``aborted`` (the reason); KILLED after Ctrl-C. Returns the counts
    and the best row."""
    client = _client(info["tracking_uri"])
    parent, objective = info["parent_run_id"], info["objective"]
    runs = _children(client, parent)
    for run in runs:  # the sweep is over: a run still open belongs to a job that died
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, TAG_ERROR,
                           "the job ended without closing its run (process killed?)")
            client.set_terminated(run.info.run_id, "FAILED")
    if any(run.info.status == "RUNNING" for run in runs):
        runs = _children(client, parent)
    rows = summary_rows(runs, info["swept"], objective)
    best = best_row(rows, objective, info["direction"])
    counts = {"jobs_total": len(rows),
              "jobs_finished": sum(r["status"] == "FINISHED" for r in rows),
              "jobs_skipped": sum(r["status"] == "SKIPPED" for r in rows),
              "jobs_failed": sum(r["status"] in ("FAILED", "KILLED") for r in rows)}
    sweep_dir = Path(info["sweep_dir"])
    csv_path = write_summary_csv(rows, sweep_dir / SUMMARY_CSV)
    png_path = plot_summary(rows, info["swept"], objective, sweep_dir / SUMMARY_PNG,
                            info["direction"])
    for path in (csv_path, png_path, sweep_dir / "optimization_results.yaml"):
        if path.is_file():
            client.log_artifact(parent, str(path), "summary")
    client.log_batch(parent, metrics=_metrics(counts, best, objective))
    if best is not None:
        client.set_tag(parent, "segkit.best_run_id", best["skipped_from"] or best["run_id"])
        client.set_tag(parent, "segkit.best_child_run_id", best["run_id"])
        client.set_tag(parent, "segkit.best_overrides", best["overrides"][:_MAX_TAG])
    all_failed = counts["jobs_total"] > 0 and counts["jobs_failed"] == counts["jobs_total"]
    if aborted:
        client.set_tag(parent, TAG_ERROR, aborted[:_MAX_TAG])
    status = "FAILED" if aborted or all_failed else "FINISHED"
    client.set_terminated(parent, "KILLED" if _STATE["interrupted"] else status)
    _STATE["failed_jobs"] = counts["jobs_failed"]
    shown = (f"best {objective} = {best[objective]:.4f} ({best['run_name']}, run "
             f"{best['skipped_from'] or best['run_id']})" if best else "no job finished")
    print(f"sweep: {counts['jobs_total']} jobs, {counts['jobs_finished']} finished, "
          f"{counts['jobs_skipped']} skipped, {counts['jobs_failed']} failed; {shown}; "
          f"summary {csv_path}, parent run {parent}")
    return {**counts, "best": best}


def _metrics(counts: dict, best: dict | None, objective: str) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = dict(counts)
    if best is not None:
        values[f"best_{objective}"] = best[objective]
    return [Metric(k, float(v), now, 0) for k, v in values.items()]


class MLflowSweepCallback(Callback):
    """Hydra callback: one MLflow parent run per multirun (basic sweeper, Optuna, any launcher)
    with a summary when it ends. Single runs are untouched."""

    def __init__(self) -> None:
        self.info: dict | None = None
        self._open = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _STATE.update(failed_jobs=0, sweep_error=False, interrupted=False)
        try:
            self.info = start_sweep(config)
        except Exception:
            _STATE["sweep_error"] = True
            raise  # Hydra turns it into a warning; the jobs then run as top-level runs
        self._open = True
        atexit.register(self._finish_aborted)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(None)

    def _finish_aborted(self) -> None:
        self._finish("the sweep stopped before its end (a job or the sweeper raised, or it "
                     "was interrupted); the summary lists the jobs that ran")

    def _finish(self, aborted: str | None) -> None:
        if not self._open or self.info is None:
            return
        self._open = False
        atexit.unregister(self._finish_aborted)
        try:
            finish_sweep(self.info, aborted)
        except Exception as exc:
            _STATE["sweep_error"] = True
            print(f"error: the sweep summary could not be written: {exc}", file=sys.stderr)
            raise


def plot_summary(rows: Sequence[dict], swept: Sequence[str], objective: str, path: Path,
                 direction: str = "maximize") -> Path:
    """The objective over the swept parameters (see ``segkit.plots.plot_sweep``); failed
    jobs count as missing values."""
    from segkit import plots

    values = {k: [r.get(f"param:{k}", "") for r in rows] for k in swept}
    obj = np.array([r[objective] if _ok(r, objective) else np.nan for r in rows], float)
    labels = [r["run_name"] or r["job"] for r in rows]
    return plots.plot_sweep(values, obj, labels, objective, path, direction)
