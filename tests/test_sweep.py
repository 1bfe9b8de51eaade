"""Sweeps end to end: `run.py -m` (grid, Optuna, joblib against an MLflow server) gives one
parent run per sweep with its jobs nested under it, contains failing jobs, skips completed
configs, and logs a summary to the parent."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from segkit.metric_names import internal, to_mlflow
from tests.helpers import ROOT, Job, cli_env, fresh_store, start_early

SMOKE = ("debug=smoke", "trainer.epochs=1", "split.val_fraction=0.34",
         "callbacks.tensorboard.enabled=false", "eval.plots=false")


@dataclass
class Sweep:
    """A started `run.py -m`: its process, tracking store and sweep folder."""

    job: Job
    uri: str
    sweep_dir: Path
    experiment: str = "segkit-smoke"

    def wait(self, timeout: float = 900):
        return self.job.wait(timeout)


def start_sweep(real_root: Path, cache: Path, uri: str, sweep_dir: Path, *overrides: str,
                experiment: str = "segkit-smoke") -> Sweep:
    """`run.py -m` with the smoke settings, started."""
    if experiment != "segkit-smoke":
        overrides = (*overrides, f"tracking.experiment={experiment}")
    job = Job.run_py("-m", *SMOKE, f"data.cache_dir={cache}", f"hydra.sweep.dir={sweep_dir}",
                     *overrides, env=cli_env(uri=uri, data=real_root))
    return Sweep(job, uri, sweep_dir, experiment)


def runs_of(uri: str, experiment: str = "segkit-smoke") -> tuple[list, list]:
    """(parent runs, child runs) of the sweep's experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("segkit.sweep") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def read_summary(uri: str, parent_id: str) -> list[dict]:
    client = MlflowClient(uri)
    arts = {a.path for a in client.list_artifacts(parent_id, "summary")}
    assert {"summary/summary.csv", "summary/summary.png"} <= arts
    local = client.download_artifacts(parent_id, "summary/summary.csv")
    with open(local, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ the sweeps, started at once
# Each sweep is its own process with its own store, independent of the others: all those the
# selected tests need start together when the module begins, and each test waits for its own.
@pytest.fixture(scope="module", autouse=True)
def _start_sweeps_at_once(request):
    start_early(request, "grid_sweep", "failing_sweep", "optuna_sweep", "joblib_sweep",
                "presets_sweep")


@pytest.fixture(scope="module")
def grid_sweep(real_root, smoke_cache, tmp_path_factory):
    """A 2x2 grid over optimizer.lr and model.filters."""
    tmp = tmp_path_factory.mktemp("grid")
    sweep = start_sweep(real_root, smoke_cache, fresh_store(tmp / "mlflow.db"),
                        tmp / "sweep1",
                        "optimizer.lr=1e-3,1e-4", "model.filters=4,8")
    yield sweep
    sweep.job.kill()


@pytest.fixture(scope="module")
def failing_sweep(real_root, smoke_cache, tmp_path_factory):
    """depth 9 fails validation (64 px is not divisible by 2^9: no run exists yet); a CSV
    log in a folder that does not exist fails inside the run, once training starts (every
    config check passes: only running it can tell)."""
    tmp = tmp_path_factory.mktemp("failing")
    good_log, bad_log = tmp / "log.csv", tmp / "missing" / "log.csv"
    sweep = start_sweep(real_root, smoke_cache, fresh_store(tmp / "mlflow.db"),
                        tmp / "sweep",
                        "callbacks.extra=[{_target_:keras.callbacks.CSVLogger,filename:x.csv}]",
                        "model.depth=2,9", f"callbacks.extra.0.filename={good_log},{bad_log}")
    yield sweep, good_log, bad_log
    sweep.job.kill()


@pytest.fixture(scope="module")
def optuna_sweep(real_root, smoke_cache, tmp_path_factory):
    """Two TPE trials over lr, loss, augment and a broken upsampling choice."""
    tmp = tmp_path_factory.mktemp("optuna")
    sweep = start_sweep(
        real_root, smoke_cache, fresh_store(tmp / "mlflow.db"), tmp / "sweep",
        "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=41",
        f"hydra.sweeper.study_dir={tmp}",
        "model.filters=4", "model.depth=2", "model.upsampling=choice(transpose,bogus)")
    yield sweep
    sweep.job.kill()


@pytest.fixture(scope="module")
def joblib_sweep(mlflow_server, real_root, smoke_cache, tmp_path_factory):
    """Two jobs in parallel (joblib launcher) logging to the session's tracking server, in
    an experiment of their own."""
    tmp = tmp_path_factory.mktemp("joblib")
    sweep = start_sweep(real_root, smoke_cache, mlflow_server, tmp / "sweep",
                        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                        "optimizer.lr=1e-3,1e-4", experiment="sweep-joblib")
    yield sweep
    sweep.job.kill()


@pytest.fixture(scope="module")
def presets_sweep(real_root, smoke_cache, tmp_path_factory):
    """`experiment=glob(*)`: one job per preset, forced to fail validation with model.depth=9
    so no training runs."""
    tmp = tmp_path_factory.mktemp("presets")
    sweep = start_sweep(real_root, smoke_cache, fresh_store(tmp / "mlflow.db"),
                        tmp / "sweep",
                        "experiment=glob(*)", "model.depth=9")
    yield sweep
    sweep.job.kill()


# ------------------------------------------------------------------ grid sweep and resume
@pytest.fixture(scope="module")
def grid(grid_sweep):
    res = grid_sweep.wait()
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"2x2 sweep: {grid_sweep.job.seconds:.0f} s")
    return grid_sweep.uri, grid_sweep.sweep_dir.parent


@pytest.mark.e2e
def test_grid_sweep_nests_four_children_under_one_parent(grid):
    uri, tmp = grid
    parents, children = runs_of(uri)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    tags = parent.data.tags
    assert tags["segkit.sweep.dir"] == str(tmp / "sweep1")
    assert tags["segkit.sweep.swept"] == "optimizer.lr,model.filters"
    assert "optimizer.lr=1e-3,1e-4" in tags["segkit.sweep.overrides"]
    assert parent.data.params["sweep.model.filters"] == "4,8"
    assert "optimizer.lr=1e-3,1e-4" in parent.info.run_name
    # each child is named by its swept overrides and carries its config hash
    names = {c.info.run_name for c in children}
    assert names == {f"optimizer.lr={lr},model.filters={f}"
                     for lr in ("0.001", "0.0001") for f in ("4", "8")}
    assert len({c.data.tags["segkit.config_hash"] for c in children}) == 4
    # eval.plots=false: metrics, CSVs and the report are logged, no figures
    arts = {a.path for a in MlflowClient(uri).list_artifacts(children[0].info.run_id,
                                                             "evaluation")}
    assert {"evaluation/report.md", "evaluation/metrics.json",
            "evaluation/test_per_image.csv"} <= arts
    assert not [a for a in arts if a.endswith(".png")]

    rows = read_summary(uri, parent.info.run_id)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"FINISHED"}
    assert {(r["param:optimizer.lr"], r["param:model.filters"]) for r in rows} == {
        (lr, f) for lr in ("0.001", "0.0001") for f in ("4", "8")}
    by_run = {c.info.run_id: c for c in children}
    for row in rows:
        assert float(row["val_mdice"]) == pytest.approx(
            internal(by_run[row["run_id"]].data.metrics)["val_mdice"])
    best = max(children, key=lambda c: internal(c.data.metrics)["val_mdice"])
    assert tags["segkit.best_run_id"] == best.info.run_id
    assert internal(parent.data.metrics)["best_val_mdice"] == pytest.approx(
        internal(best.data.metrics)["val_mdice"])
    counts = internal(parent.data.metrics)
    assert counts["jobs_total"] == 4 and counts["jobs_failed"] == 0
    assert (tmp / "sweep1" / "summary.csv").is_file()
    assert (tmp / "sweep1" / "summary.png").stat().st_size > 1000


@pytest.mark.e2e
def test_skip_completed_reuses_finished_runs_and_still_summarises(grid, real_root,
                                                                  smoke_cache):
    uri, tmp = grid
    _, first = runs_of(uri)
    sweep = start_sweep(real_root, smoke_cache, uri, tmp / "sweep2", "optimizer.lr=1e-3,1e-4",
                        "model.filters=4,8", "sweep.skip_completed=true")
    res = sweep.wait()
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"2x2 sweep, all skipped: {sweep.job.seconds:.0f} s")
    assert res.stdout.count("skipped: same config as FINISHED run") == 4
    parents, children = runs_of(uri)
    assert len(parents) == 2
    new_parent = next(p for p in parents if p.data.tags["segkit.sweep.dir"].endswith("sweep2"))
    new = [c for c in children
           if c.data.tags["mlflow.parentRunId"] == new_parent.info.run_id]
    assert len(new) == 4
    first_ids = {c.info.run_id for c in first}
    for child in new:  # nothing trained: each stands for a run of the first sweep
        assert child.data.tags["segkit.skipped_from"] in first_ids
        assert child.info.status == "FINISHED"
        assert "segkit.run_dir" not in child.data.tags
        source = next(c for c in first if c.info.run_id == child.data.tags["segkit.skipped_from"])
        assert child.data.tags["segkit.config_hash"] == source.data.tags["segkit.config_hash"]
        assert (internal(child.data.metrics)["val_mdice"]
                == internal(source.data.metrics)["val_mdice"])
    rows = read_summary(uri, new_parent.info.run_id)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"SKIPPED"}
    assert {r["skipped_from"] for r in rows} == first_ids
    assert internal(new_parent.data.metrics)["jobs_skipped"] == 4
    best = max(first, key=lambda c: internal(c.data.metrics)["val_mdice"])
    assert new_parent.data.tags["segkit.best_run_id"] == best.info.run_id


# ------------------------------------------------------------------ failures are contained
@pytest.mark.e2e
def test_failing_jobs_are_recorded_and_the_others_finish(failing_sweep):
    """The sweep of failing_sweep: one good job, one failing inside its run, two failing
    validation."""
    sweep, good_log, bad_log = failing_sweep
    uri = sweep.uri
    res = sweep.wait()
    assert res.returncode == 1, res.stderr[-3000:]  # documented: 1 when any job failed
    assert "3 failed" in res.stdout
    parents, children = runs_of(uri)
    assert len(parents) == 1 and len(children) == 4
    assert parents[0].info.status == "FINISHED"  # FAILED only when every job failed
    by_name = {c.info.run_name: c for c in children}
    ok = by_name[f"model.depth=2,callbacks.extra.0.filename={good_log}"]
    assert ok.info.status == "FINISHED" and "val_mdice" in internal(ok.data.metrics)
    in_run = by_name[f"model.depth=2,callbacks.extra.0.filename={bad_log}"]
    assert in_run.info.status == "FAILED"
    assert "missing" in in_run.data.tags["segkit.error"]
    assert "split.train_size" in in_run.data.params  # it failed inside its own run
    for log_file in (good_log, bad_log):
        run = by_name[f"model.depth=9,callbacks.extra.0.filename={log_file}"]
        assert run.info.status == "FAILED"
        assert run.data.tags["segkit.failed_before_run"] == "true"
        assert "model.depth" in run.data.tags["segkit.error"]
        assert run.data.params["model.depth"] == "9"
    rows = read_summary(uri, parents[0].info.run_id)
    status = {r["run_name"]: r["status"] for r in rows}
    assert sorted(status.values()) == ["FAILED", "FAILED", "FAILED", "FINISHED"]
    assert all(r["error"] for r in rows if r["status"] == "FAILED")
    assert parents[0].data.tags["segkit.best_run_id"] == ok.info.run_id


# ------------------------------------------------------------------ Optuna
@pytest.mark.e2e
def test_optuna_search_fails_bad_trials_and_keeps_going(optuna_sweep):
    """Two TPE trials over lr, loss, augment and a broken upsampling choice. With sampler
    seed 41 the assertions hold for any draw; the trials' fate is read from the study's
    journal file and optimization_results.yaml."""
    import optuna
    from omegaconf import OmegaConf

    from segkit.search.study import open_storage

    uri = optuna_sweep.uri
    res = optuna_sweep.wait()
    print(f"optuna, 2 trials: {optuna_sweep.job.seconds:.0f} s")
    out = res.stdout + res.stderr
    parents, children = runs_of(uri)
    assert len(parents) == 1 and len(children) == 2
    rows = read_summary(uri, parents[0].info.run_id)  # written even if every trial failed
    assert len(rows) == 2
    good = []
    for run in children:
        swept = {o.split("=")[0] for o in run.info.run_name.split(",")}
        assert swept == {"optimizer.lr", "loss", "augment", "model.upsampling"}
        if run.data.params.get("model.upsampling") == "bogus":
            assert run.info.status == "FAILED" and "segkit.error" in run.data.tags
        else:
            assert run.info.status == "FINISHED"
            good.append(run)
    # the sweeper told Optuna FAIL (not a score) for each failed job, and went on
    storage = open_storage(str(next(optuna_sweep.sweep_dir.parent.glob("*.journal"))))
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0],
                              storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 2 - len(good) and states.count("COMPLETE") == len(good)
    assert out.count(": fail") == 2 - len(good)
    assert res.returncode == (0 if len(good) == 2 else 1), res.stderr[-3000:]
    if not good:
        assert parents[0].info.status == "FAILED"
        return
    best = max(good, key=lambda r: internal(r.data.metrics)["val_mdice"])
    # Hydra handed the job's returned objective to Optuna
    results = OmegaConf.load(optuna_sweep.sweep_dir / "optimization_results.yaml")
    assert results.best_value == pytest.approx(internal(best.data.metrics)["val_mdice"])
    assert results.best_params["model.upsampling"] == "transpose"
    assert str(results.best_params["optimizer.lr"]) == best.data.params["optimizer.lr"]
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["segkit.best_run_id"] == best.info.run_id
    assert internal(parents[0].data.metrics)["best_val_mdice"] == pytest.approx(results.best_value)
    arts = {a.path for a in MlflowClient(uri).list_artifacts(parents[0].info.run_id, "summary")}
    assert "summary/optimization_results.yaml" in arts


# ------------------------------------------------------------------ parallel jobs, server
@pytest.mark.e2e
def test_parallel_joblib_jobs_log_to_a_tracking_server(mlflow_server, joblib_sweep):
    res = joblib_sweep.wait()
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"2 joblib jobs against an MLflow server: {joblib_sweep.job.seconds:.0f} s")
    parents, children = runs_of(mlflow_server, joblib_sweep.experiment)
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].data.tags["segkit.sweep.launcher"] == "JoblibLauncher"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    # no run lost or mixed: each job's run has its own lr, job number and metrics
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.0001", "0.001"]
    assert sorted(c.data.tags["segkit.sweep.job"] for c in children) == ["0", "1"]
    for child in children:
        assert child.info.run_name == f"optimizer.lr={child.data.params['optimizer.lr']}"
        assert "val_mdice" in internal(child.data.metrics)
        history = MlflowClient(mlflow_server).get_metric_history(child.info.run_id,
                                                                 to_mlflow("loss"))
        assert [h.step for h in history] == [1]  # epochs count from 1, as on the console
    rows = read_summary(mlflow_server, parents[0].info.run_id)
    assert {r["run_id"] for r in rows} == {c.info.run_id for c in children}


# ------------------------------------------------------------------ experiment presets
@pytest.mark.e2e
def test_every_experiment_preset_composes_and_sweeps_together(compose_cfg, presets_sweep):
    """Every conf/experiment preset composes with debug=smoke and passes validation; then
    `experiment=glob(*)` launches one job per preset (forced to fail validation with
    model.depth=9 so no training runs: the check is the composition and the bookkeeping)."""
    from segkit.config import validate

    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert presets
    for name in presets:
        validate(compose_cfg(f"experiment={name}", "debug=smoke"))
    uri = presets_sweep.uri
    res = presets_sweep.wait()
    assert res.returncode == 1, res.stderr[-3000:]
    parents, children = runs_of(uri)
    assert len(parents) == 1 and len(children) == len(presets)
    assert sorted(c.info.run_name for c in children) == [f"experiment={p}" for p in presets]
    assert parents[0].info.status == "FAILED"  # every job failed
    assert len(read_summary(uri, parents[0].info.run_id)) == len(presets)


# ------------------------------------------------------------------ pieces, no training
def test_sweep_overrides_merge_search_space_and_command_line():
    from omegaconf import OmegaConf

    from segkit.sweep.parent import sweep_overrides

    cfg = OmegaConf.create({"hydra": {
        "sweeper": {"params": {"optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
                               "model.filters": "choice(8, 16)"}},
        "overrides": {"task": ["debug=smoke", "model.filters=4", "loss=bce,dice",
                               "experiment=glob(*)"]}}})
    values, swept = sweep_overrides(cfg)
    assert swept == ["optimizer.lr", "loss", "experiment"]  # model.filters fixed by the CLI
    assert values["model.filters"] == "4" and values["loss"] == "bce,dice"


def _rows(params: dict[str, list], objective: list[float]) -> list[dict]:
    rows = []
    for i, value in enumerate(objective):
        rows.append({"job": str(i), "run_name": f"job {i}", "status":
                     "FINISHED" if math.isfinite(value) else "FAILED",
                     **{f"param:{k}": str(v[i]) for k, v in params.items()},
                     "val_mdice": value})
    return rows


@pytest.mark.parametrize("params", [
    {},
    {"optimizer.lr": [1e-3, 1e-4, 1e-2]},
    {"optimizer.lr": [1e-3, 1e-4, 1e-3], "model.filters": [8, 8, 16]},
    {"optimizer.lr": [1e-3, 2e-4, 5e-3], "loss": ["bce", "dice", "bce"],
     "model.depth": [3, 4, 5]},
])
def test_summary_plot_covers_every_layout(params, tmp_path):
    from segkit.sweep.parent import best_row, plot_summary, write_summary_csv

    rows = _rows(params, [0.5, math.nan, 0.7])
    path = plot_summary(rows, list(params), "val_mdice", tmp_path / "summary.png")
    assert path.stat().st_size > 1000
    assert best_row(rows, "val_mdice", "maximize")["job"] == "2"
    assert best_row(rows, "val_mdice", "minimize")["job"] == "0"
    with open(write_summary_csv(rows, tmp_path / "summary.csv"), newline="") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["FINISHED", "FAILED", "FINISHED"]
