"""The sweep side: the parent MLflow run (created before any job starts) and, when the sweep
ends, its summary (CSV, figure, counts, the best job) written into the parent."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from segkit import tags as tag
from segkit.fileio import atomic_path, write_text
from segkit.metric_names import internal, to_mlflow
from segkit.search import study as search
from segkit.sweep.groups import format_groups, group_metrics, group_rows
from segkit.sweep.job import INTERRUPTED, SWEEP_FILE, _client, _split

log = logging.getLogger(__name__)

SUMMARY_CSV = "summary.csv"
GROUPS_CSV = "groups.csv"  # repeats of a configuration: mean, std and interval per metric
SUMMARY_PNG = "summary.png"
NOT_STARTED = "NOT_STARTED"  # summary status of a planned job that never ran


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


def _raw_task_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides as typed (a ``${...}`` in one stays unresolved)."""
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    return [str(o) for o in task] if isinstance(task, list) else []


def planned_jobs(config: DictConfig) -> list[dict] | None:
    """Every job the sweep will launch, numbered as Hydra numbers them: the basic sweeper's
    cartesian product of the swept values in Hydra's own order (its ``split_arguments``), or
    Optuna's ``n_trials`` trials, whose values are not known yet (``overrides`` None). None
    for another sweeper, or when the plan cannot be worked out (the summary then lists the
    jobs that ran)."""
    if search.is_search(config):  # a resumable study: its trials are not known in advance
        return None
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
    if n_trials is not None:
        return [{"job": i, "overrides": None} for i in range(int(n_trials))]
    if _short(OmegaConf.select(config, "hydra.sweeper._target_")) != "BasicSweeper":
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra = GlobalHydra.instance()  # its config loader expands glob(*) as the sweeper does
        loader = hydra.config_loader() if hydra.is_initialized() else None
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        lines = [f"{k}={v}" for k, v in params.items()] + _raw_task_overrides(config)
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(lines)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as exc:  # Hydra internals: never let the plan stop the sweep
        log.warning("the sweep's job list could not be worked out (%s): the summary lists "
                    "the jobs that ran", exc)
        return None
    return [{"job": i, "overrides": list(job)} for i, job in enumerate(jobs)]


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


def _sweep_name(config: DictConfig, values: dict[str, str], swept: list[str]) -> str:
    """``sweep.name``, else the swept overrides (or the Optuna trial count)."""
    name = OmegaConf.select(config, "sweep.name")
    if name:
        return str(name)
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
    if n_trials is not None:
        return f"optuna {n_trials} trials: {', '.join(swept)}"
    return "sweep " + (" ".join(f"{k}={values[k]}" for k in swept) or "(no swept keys)")


def _parent_tags(config: DictConfig, info: dict) -> dict[str, str]:
    # mlflow-importing module: imported once the sweep starts, not when run.py starts
    from segkit import tracking

    tags = {tag.SWEEP: "parent", tag.SWEEP_DIR: info["sweep_dir"],
            tag.SWEEP_OVERRIDES: " ".join(str(o) for o in config.hydra.overrides.task),
            tag.SWEEP_SWEPT: ",".join(info["swept"]), tag.SWEEP_SWEEPER: info["sweeper"],
            tag.SWEEP_LAUNCHER: info["launcher"], tag.SWEEP_OBJECTIVE: info["objective"],
            tag.SWEEP_DIRECTION: info["direction"],
            **tracking.git_state(Path(str(config.paths.root_dir)))}
    return {k: str(v)[:tag.MAX_TAG] for k, v in tags.items()}


def _parent_params(config: DictConfig, values: dict[str, str]) -> list:
    from mlflow.entities import Param  # see _parent_tags

    params: dict[str, Any] = {f"sweep.{_param_key(k)}": v for k, v in values.items()}
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
    if n_trials is not None:
        params["sweep.n_trials"] = n_trials
        params["sweep.sampler_seed"] = OmegaConf.select(config, "hydra.sweeper.sampler.seed")
    return [Param(k, str(v)[:tag.MAX_PARAM]) for k, v in params.items()]


def start_sweep(config: DictConfig) -> dict:
    """Create the experiment and the parent run (RUNNING); write the sweep file; return it."""
    from segkit import tracking  # see _parent_tags

    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SWEEP_FILE).unlink(missing_ok=True)  # never a stale parent from an old sweep
    (sweep_dir / INTERRUPTED).unlink(missing_ok=True)
    uri, experiment = str(config.tracking.uri), str(config.tracking.experiment)
    experiment_id = tracking.setup_experiment(uri, experiment)  # store + experiment, once
    values, swept = sweep_overrides(config)
    info = {
        "parent_run_id": None, "experiment_id": experiment_id, "tracking_uri": uri,
        "sweep_dir": str(sweep_dir), "swept": swept, "objective": str(config.objective),
        "direction": _direction(config),
        "sweeper": _short(OmegaConf.select(config, "hydra.sweeper._target_")),
        "launcher": _short(OmegaConf.select(config, "hydra.launcher._target_")),
        "planned": planned_jobs(config),
    }
    client = _client(uri)
    info["parent_run_id"] = _study_parent(client, config, experiment_id)
    if info["parent_run_id"] is None:
        run = client.create_run(experiment_id, run_name=_sweep_name(config, values, swept)[:250],
                                tags=_parent_tags(config, info))
        client.log_batch(run.info.run_id, params=_parent_params(config, values))
        info["parent_run_id"] = run.info.run_id
    write_text(sweep_dir / SWEEP_FILE, json.dumps(info, indent=2) + "\n")
    log.info("sweep parent run %s in experiment %r (%s)", info["parent_run_id"], experiment,
             uri)
    return info


def _study_parent(client: Any, config: DictConfig, experiment_id: str) -> str | None:
    """An Optuna search whose study already has a parent run (a resumed search): that run,
    reopened (RUNNING), so the parent stays the study; else None."""
    if not search.is_search(config):
        return None
    name, storage = search.study_identity(config)
    runs = client.search_runs(
        [experiment_id], f"tags.`{search.STUDY_TAG}` = '{name}' and "
        f"tags.`{search.STORAGE_TAG}` = '{search.masked(storage)}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run_id = runs[0].info.run_id
    client.update_run(run_id, status="RUNNING")
    log.info("search: study %s continues in its parent run %s", name, run_id)
    return run_id


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
        page = client.search_runs(experiments, f"tags.`{tag.PARENT}` = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _job_number(run) -> tuple[int, int]:
    try:
        return int(run.data.tags.get(tag.JOB, "")), run.info.start_time or 0
    except ValueError:
        return sys.maxsize, run.info.start_time or 0


def _run_row(run, swept: Sequence[str], objective: str) -> dict:
    """A job that ran: its number, run, status (SKIPPED for a skip), overrides, the
    objective, the error, then every final metric."""
    tags, metrics = run.data.tags, internal(run.data.metrics)
    try:
        overrides = [str(o) for o in json.loads(tags.get(tag.OVERRIDES, "[]"))]
    except ValueError:
        overrides = []
    values = dict(_split(o) for o in overrides)
    status = "SKIPPED" if tag.SKIPPED_FROM in tags else run.info.status
    if tags.get(search.TRIAL_STATE_TAG) == "pruned":  # an Optuna trial its pruner stopped
        status = "PRUNED"
    end = run.info.end_time
    row = {"job": tags.get(tag.JOB, ""), "run_id": run.info.run_id,
           "run_name": run.info.run_name, "status": status,
           "skipped_from": tags.get(tag.SKIPPED_FROM, ""),
           "overrides": " ".join(overrides),
           **{f"param:{k}": values.get(k, "") for k in swept},
           objective: metrics.get(objective, math.nan),
           "seconds": (end - run.info.start_time) / 1000 if end else math.nan,
           "error": tags.get(tag.ERROR, "")}
    row.update({k: v for k, v in sorted(metrics.items()) if k != objective})
    return row


def _plan_row(job: dict, swept: Sequence[str], objective: str, killed: bool) -> dict:
    """A planned job without a run: NOT_STARTED, or KILLED when the interrupt came before
    its run existed. Optuna's trials have no values before they start."""
    overrides = [str(o) for o in job.get("overrides") or []]
    values = dict(_split(o) for o in overrides)
    return {"job": str(job["job"]), "run_id": "",
            "run_name": ",".join(o for o in overrides if _split(o)[0] in swept),
            "status": "KILLED" if killed else NOT_STARTED, "skipped_from": "",
            "overrides": " ".join(overrides),
            **{f"param:{k}": values.get(k, "") for k in swept},
            objective: math.nan, "seconds": math.nan,
            "error": "interrupted before its run started" if killed else ""}


def _row_number(row: dict) -> int:
    try:
        return int(row["job"])
    except ValueError:
        return sys.maxsize


def summary_rows(runs: Sequence, swept: Sequence[str], objective: str,
                 planned: Sequence[dict] | None = None,
                 interrupted_job: int | None = None) -> list[dict]:
    """One row per job, by job number: every run of the sweep, and every ``planned`` job
    that has none (NOT_STARTED, or KILLED for ``interrupted_job``)."""
    rows = [_run_row(run, swept, objective) for run in sorted(runs, key=_job_number)]
    ran = {row["job"] for row in rows}
    rows += [_plan_row(job, swept, objective, job["job"] == interrupted_job)
             for job in planned or [] if str(job["job"]) not in ran]
    return sorted(rows, key=_row_number)  # stable: a job's runs keep their order


def count_jobs(rows: Sequence[dict], planned: Sequence[dict] | None) -> dict[str, int]:
    """``jobs_total`` (rows), ``jobs_planned`` and the jobs in each state; a killed job is
    not a failed one."""
    status = [row["status"] for row in rows]
    return {"jobs_total": len(rows),
            "jobs_planned": len(planned) if planned is not None else len(rows),
            "jobs_finished": status.count("FINISHED"), "jobs_skipped": status.count("SKIPPED"),
            "jobs_failed": status.count("FAILED"), "jobs_killed": status.count("KILLED"),
            "jobs_pruned": status.count("PRUNED"),
            "jobs_not_started": status.count(NOT_STARTED)}


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


def _close_dead_jobs(client: Any, parent: str) -> list:
    """The children of ``parent``; a run still open belongs to a job that died: FAILED."""
    runs = _children(client, parent)
    dead = [run for run in runs if run.info.status == "RUNNING"]
    for run in dead:
        client.set_tag(run.info.run_id, tag.ERROR,
                       "the job ended without closing its run (process killed?)")
        client.set_terminated(run.info.run_id, "FAILED")
    return _children(client, parent) if dead else runs


def _log_summary(client: Any, info: dict, rows: list[dict], counts: dict,
                 best: dict | None) -> Path:
    """The summary CSV and figure (and Optuna's results) as artifacts, the counts and the
    best objective as metrics, the best job as tags; returns the CSV's path."""
    parent, objective, sweep_dir = info["parent_run_id"], info["objective"], Path(
        info["sweep_dir"])
    csv_path = write_summary_csv(rows, sweep_dir / SUMMARY_CSV)
    png_path = plot_summary(rows, info["swept"], objective, sweep_dir / SUMMARY_PNG,
                            info["direction"])
    for path in (csv_path, png_path, sweep_dir / "optimization_results.yaml"):
        if path.is_file():
            client.log_artifact(parent, str(path), "summary")
    client.log_batch(parent, metrics=_metrics(counts, best, objective))
    if best is not None:
        client.set_tag(parent, tag.BEST_RUN_ID, best["skipped_from"] or best["run_id"])
        client.set_tag(parent, tag.BEST_CHILD_RUN_ID, best["run_id"])
        client.set_tag(parent, tag.BEST_OVERRIDES, best["overrides"][:tag.MAX_TAG])
    return csv_path


def _log_groups(client: Any, info: dict, rows: list[dict]) -> list[dict]:
    """Repeats (seeds, folds) summarised per configuration: ``groups.csv`` on the parent,
    and, when the whole sweep is one configuration, each metric's mean, std, min, max and t
    interval as the parent's own metrics."""
    from mlflow.entities import Metric  # see _parent_tags

    groups = group_rows(rows, info["swept"])
    if not groups:
        return []
    path = write_summary_csv(groups, Path(info["sweep_dir"]) / GROUPS_CSV)
    client.log_artifact(info["parent_run_id"], str(path), "summary")
    if len(groups) == 1:
        now = int(time.time() * 1000)
        values = group_metrics(groups[0])
        metrics = [Metric(to_mlflow(k), v, now, 0) for k, v in values.items()]
        for start in range(0, len(metrics), 900):  # MLflow takes 1000 metrics per batch
            client.log_batch(info["parent_run_id"], metrics=metrics[start:start + 900])
    return groups


def interrupted_job(sweep_dir: Path | str) -> int | None:
    """The job that :func:`segkit.sweep.job.mark_interrupted` named, if any."""
    try:
        return int(json.loads((Path(sweep_dir) / INTERRUPTED).read_text())["job"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _report(counts: dict, best: dict | None, objective: str, csv_path: Path,
            parent: str) -> None:
    shown = (f"best {objective} = {best[objective]:.4f} ({best['run_name']}, run "
             f"{best['skipped_from'] or best['run_id']})" if best else "no job finished")
    print(f"sweep: {counts['jobs_total']} jobs, {counts['jobs_finished']} finished, "
          f"{counts['jobs_skipped']} skipped, {counts['jobs_failed']} failed, "
          f"{counts['jobs_killed']} killed, {counts.get('jobs_pruned', 0)} pruned, "
          f"{counts['jobs_not_started']} not started; "
          f"{shown}; summary {csv_path}, parent run {parent}")
    if counts["jobs_killed"] or counts["jobs_not_started"]:
        print("sweep: to run the jobs that did not finish, rerun the same command with "
              "sweep.skip_completed=true (finished jobs are not trained again)")


def finish_sweep(info: dict, aborted: str | None = None) -> dict:
    """Summarise the sweep into its parent run and end it: FINISHED; FAILED when every job
    that ran failed or the sweep was ``aborted`` (the reason); KILLED after Ctrl-C. The
    summary lists every planned job (``info["planned"]``). Returns the counts and the best
    row."""
    client = _client(info["tracking_uri"])
    parent, objective, sweep_dir = info["parent_run_id"], info["objective"], Path(
        info["sweep_dir"])
    interrupted = (sweep_dir / INTERRUPTED).is_file()
    if aborted is None and (sweep_dir / search.ABORTED).is_file():  # max_failure_rate
        aborted = (sweep_dir / search.ABORTED).read_text().strip()
    rows = summary_rows(_close_dead_jobs(client, parent), info["swept"], objective,
                        info.get("planned"), interrupted_job(sweep_dir) if interrupted else None)
    best = best_row(rows, objective, info["direction"])
    counts = count_jobs(rows, info.get("planned"))
    csv_path = _log_summary(client, info, rows, counts, best)
    groups = _log_groups(client, info, rows)
    ran = counts["jobs_total"] - counts["jobs_not_started"]
    all_failed = ran > 0 and counts["jobs_failed"] == ran
    if aborted:
        client.set_tag(parent, tag.ERROR, aborted[:tag.MAX_TAG])
    status = "FAILED" if aborted or all_failed else "FINISHED"
    client.set_terminated(parent, "KILLED" if interrupted else status)
    _report(counts, best, objective, csv_path, parent)
    if groups:
        print(f"sweep: {len(groups)} configuration(s) over repeated seeds/folds "
              f"(mean ± std, 95% Student-t interval; groups in {sweep_dir / GROUPS_CSV}):")
        print("\n".join(format_groups(groups, "test_mdice")))
    return {**counts, "best": best, "groups": groups}


def _metrics(counts: dict, best: dict | None, objective: str) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = dict(counts)
    if best is not None:
        values[f"best_{objective}"] = best[objective]
    return [Metric(to_mlflow(k), float(v), now, 0) for k, v in values.items()]


def plot_summary(rows: Sequence[dict], swept: Sequence[str], objective: str, path: Path,
                 direction: str = "maximize") -> Path:
    """The objective over the swept parameters (see ``segkit.plots.plot_sweep``) of the jobs
    that ran; failed ones count as missing values."""
    from segkit import plots

    rows = [r for r in rows if r["status"] != NOT_STARTED]

    values = {k: [r.get(f"param:{k}", "") for r in rows] for k in swept}
    obj = np.array([r[objective] if _ok(r, objective) else np.nan for r in rows], float)
    labels = [r["run_name"] or r["job"] for r in rows]
    return plots.plot_sweep(values, obj, labels, objective, path, direction)
