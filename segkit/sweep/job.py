"""The job side of a sweep: validate, skip a completed config, run, and contain a failure
(a FAILED run and a :class:`FailedJob` result instead of an exception)."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from segkit import tags as tag
from segkit.config import validate
from segkit.errors import SegkitError
from segkit.fileio import write_text
from segkit.metric_names import internal
from segkit.registry import plain

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"  # in the sweep dir: the parent run id, for the jobs
INTERRUPTED = "interrupted"  # in the sweep dir: a job was interrupted


def config_hash(cfg: DictConfig) -> str:
    """The run identity ``segkit.tracking.config_hash`` gives the resolved ``cfg`` (the
    ``segkit.config_hash`` tag every run carries): one definition for tags and lookups."""
    from segkit import tracking  # imports MLflow (seconds): only once the config is valid

    return tracking.config_hash(plain(cfg))


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
    sweep_dir: Path | None = None

    @property
    def tags(self) -> dict[str, str]:
        """Tags given to the job's run when it is created."""
        tags = {tag.JOB_ID: self.job_id, tag.OVERRIDES: json.dumps(self.overrides)[:tag.MAX_TAG]}
        if self.config_hash:
            tags[tag.CONFIG_HASH] = self.config_hash
        if self.parent_run_id:
            tags[tag.PARENT] = self.parent_run_id
        if self.num is not None:
            tags[tag.JOB] = str(self.num)
        return tags


def mark_interrupted(sweep_dir: Path, num: int | None = None) -> None:
    """Tell the sweep's summary that job ``num`` was interrupted (Ctrl-C or SIGTERM): the
    parent ends KILLED, and the job is KILLED even when its run did not exist yet."""
    try:
        write_text(Path(sweep_dir) / INTERRUPTED, json.dumps({"job": num}) + "\n")
    except OSError as exc:
        log.warning("could not mark the sweep interrupted: %s", exc)


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
    # Unresolved: an override may hold a ${...} that only the config check should resolve.
    raw = OmegaConf.to_container(cast(DictConfig, hc), resolve=False)
    assert isinstance(raw, dict)
    overrides = [str(o) for o in raw["overrides"]["task"]]
    dirname = raw["job"]["override_dirname"]
    job = Job(multirun=hc.mode == RunMode.MULTIRUN, overrides=overrides,
              run_name=str(dirname) or None, job_id=uuid.uuid4().hex)
    if not job.multirun:
        return job
    job.num = int(hc.job.num)
    job.sweep_dir = Path(hc.sweep.dir)
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
        _bound_http(cfg)  # before the first request: skip_completed, failure records
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
        if job is not None and job.sweep_dir is not None:
            mark_interrupted(job.sweep_dir, job.num)  # the sweep stops: parent KILLED
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


def _bound_http(cfg: DictConfig) -> None:
    from segkit import tracking  # see config_hash

    tracking.bound_http(cfg.tracking.uri, cfg.tracking.http_timeout, cfg.tracking.http_retries)


def _client(uri: str):
    """A client of ``uri``, its store opened first (a fresh sqlite store: created once)."""
    from mlflow import MlflowClient

    from segkit import tracking

    tracking.open_store(uri)
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
        filter_string=f"tags.`{tag.CONFIG_HASH}` = '{digest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=100)
    for run in runs:
        value = internal(run.data.metrics).get(cfg.objective)
        if tag.SKIPPED_FROM not in run.data.tags and value is not None and math.isfinite(value):
            return run
    return None


def record_skip(cfg: DictConfig, job: Job, found) -> float:
    """Return the found run's objective; in a sweep, first add a FINISHED child run that
    stands for the job (tagged ``segkit.skipped_from``, with the found run's params, final
    metrics and model URI), so the summary lists it."""
    from mlflow.entities import Metric, Param

    objective = float(internal(found.data.metrics)[cfg.objective])
    log.info("sweep.skip_completed: this config already has FINISHED run %s (%s = %.4f); "
             "not training it again", found.info.run_id, cfg.objective, objective)
    print(f"skipped: same config as FINISHED run {found.info.run_id} "
          f"({cfg.objective} = {objective:.4f})")
    if not job.multirun:
        return objective
    client = _client(cfg.tracking.uri)
    copied = {k: v for k, v in found.data.tags.items()
              if k in (tag.MODEL_URI, tag.SPLIT, tag.TEST_SPLIT)}
    run = client.create_run(
        found.info.experiment_id, run_name=f"{job.run_name or found.info.run_name} (skipped)",
        tags={**copied, **job.tags, tag.SKIPPED_FROM: found.info.run_id})
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
    message = f"{type(exc).__name__}: {exc}"[:tag.MAX_TAG]
    try:
        from mlflow.entities import Param

        from segkit import tracking

        uri = cfg.tracking.uri
        experiment_id = tracking.setup_experiment(uri, cfg.tracking.experiment)
        client = _client(uri)
        existing = [] if job is None else client.search_runs(
            [experiment_id], filter_string=f"tags.`{tag.JOB_ID}` = '{job.job_id}'")
        if existing:
            run = existing[0]
            if tag.ERROR not in run.data.tags:
                client.set_tag(run.info.run_id, tag.ERROR, message)
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, "FAILED")
            return
        tags = {**(job.tags if job else {}), tag.ERROR: message, tag.FAILED_BEFORE_RUN: "true"}
        run = client.create_run(experiment_id, run_name=job.run_name if job else None,
                                tags=tags)
        try:
            params = tracking.flatten(plain(cfg))
            client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        except Exception:  # an unresolvable config: the error tag says why
            pass
        client.set_terminated(run.info.run_id, "FAILED")
    except Exception as record_exc:
        log.warning("could not record the failed job in MLflow: %s", record_exc)
