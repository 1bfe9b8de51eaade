"""segkit's Optuna sweeper (hparams_search=optuna, hydra_plugins/segkit_optuna_sweeper):
the search space syntax and the study identity (unit), then small searches on the smoke
config: a deliberately bad region pruned, a study in an RDB URL (sqlite) with Optuna's
figures on the parent run, resume after the sweeper was killed mid-trial, a failing trial
and max_failure_rate, two joblib workers on one journal file, and the slurm_gpu launcher
composed with an RDB storage.

The bad region: ``eval.threshold=0.999`` makes the per-epoch validation Dice exactly 0 (a
fresh model's sigmoid never exceeds it) while ``0.001`` gives the all-foreground Dice (> 0),
so the median pruner must stop every 0.999 trial that starts after a 0.001 trial finished."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.segkit_optuna_sweeper.space import grid, parse_space
from segkit.errors import ConfigError
from tests.helpers import ROOT, Job, cli_env, run_py, start_early

SMOKE = ("debug=smoke", "callbacks.tensorboard.enabled=false", "eval.plots=false",
         "data.limit=8", "split.val_fraction=0.34")
# the space: everything fixed but the threshold (random sampler seed 10 draws 0.001, 0.999)
SPACE = ("hparams_search=optuna", "optimizer.lr=1e-3", "model.filters=4", "model.depth=2",
         "loss=bce", "augment=none", "eval.threshold=choice(0.001,0.999)",
         "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=10",
         "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0")


# ------------------------------------------------------------------ unit: space and identity
def test_space_syntax_gives_optuna_distributions():
    space, fixed = parse_space([
        "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "model.filters=choice(8, 16, 32)",
        "model.depth=range(2, 6)", "x=int(interval(1, 4))", "z=interval(1, 4)",
        "y=range(0.5, 2.0, 0.5)",
        "loss=bce", "model.depth=choice(3,4)"])  # a later line replaces the key
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["model.filters"] == CategoricalDistribution([8, 16, 32])
    assert space["model.depth"] == CategoricalDistribution([3, 4])
    assert space["x"] == IntDistribution(1, 4)
    assert space["z"] == FloatDistribution(1.0, 4.0)  # Hydra's interval is float
    assert space["y"] == FloatDistribution(0.5, 1.5, step=0.5)
    assert fixed == {"loss": "bce"}
    ints, _ = parse_space(["d=range(2,6)"])
    assert ints["d"] == IntDistribution(2, 5)  # Hydra's range excludes stop, Optuna includes
    assert grid(ints) == {"d": [2, 3, 4, 5]}
    with pytest.raises(ConfigError, match="continuous"):
        grid(space)


@pytest.mark.parametrize("name", ["random", "tpe"])
def test_a_resumed_sampler_does_not_repeat_the_first_proposals(name):
    """Same seed, fresh study: the same proposals (reproducible). A resumed study's sampler
    (seed + trials held) proposes new parameters, not trial 0's again."""
    from omegaconf import OmegaConf

    from hydra_plugins.segkit_optuna_sweeper.search import build_sampler

    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    conf = OmegaConf.create({"name": name, "seed": 42, "n_startup_trials": 10})

    def first(sampler):
        study = optuna.create_study(sampler=sampler)
        return [study.ask(space).params["lr"] for _ in range(3)]

    fresh = first(build_sampler(conf, space))
    assert fresh == first(build_sampler(conf, space))
    assert not set(first(build_sampler(conf, space, resumed=3))) & set(fresh)


def _hydra_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir

    from segkit.config import register_resolvers

    register_resolvers(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_same_command_same_study_and_slurm_with_rdb_composes(tmp_path):
    """The study's name is the command's (n_trials may change: the study goes on); the
    slurm_gpu launcher composes with an RDB storage that its workers share."""
    from segkit.search.study import masked, study_identity

    base = ("hparams_search=optuna", f"hydra.sweeper.study_dir={tmp_path}", "model.filters=8")
    name, storage = study_identity(_hydra_cfg(*base))
    assert study_identity(_hydra_cfg(*base, "hydra.sweeper.n_trials=50")) == (name, storage)
    assert storage == str(tmp_path / f"{name}.journal")
    assert study_identity(_hydra_cfg(*base[:2], "model.filters=16"))[0] != name
    url = "postgresql://segkit:secret@db.example:5432/optuna"
    cfg = _hydra_cfg("hparams_search=optuna", "hydra/launcher=slurm_gpu",
                     f"hydra.sweeper.storage={url}", "hydra.sweeper.n_jobs=8")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.sweeper._target_.endswith("SegkitOptunaSweeper")
    assert study_identity(cfg)[1] == url
    assert masked(url) == "postgresql://segkit:***@db.example:5432/optuna"


# ------------------------------------------------------------------ the searches, started at once
def _search(real_root, cache, tmp: Path, *overrides: str, name: str = "sweep") -> Job:
    return Job.run_py("-m", *SMOKE, *SPACE, f"data.cache_dir={cache}",
                      f"hydra.sweep.dir={tmp / name}", f"hydra.sweeper.study_dir={tmp}",
                      f"tracking.uri=sqlite:///{tmp}/mlflow.db", *overrides,
                      env=cli_env(data=real_root), merge=True)


@pytest.fixture(scope="module", autouse=True)
def _start_searches_at_once(request):
    start_early(request, "rdb_search", "killed_search", "failing_search", "joblib_search")


@pytest.fixture(scope="module")
def rdb_search(real_root, smoke_cache, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rdb")
    job = _search(real_root, smoke_cache, tmp, "hydra.sweeper.n_trials=2", "trainer.epochs=2",
                  f"hydra.sweeper.storage=sqlite:///{tmp}/optuna.db")
    yield job, tmp
    job.kill()


def _kill_when_trial_1_starts(job: Job, sweep_dir: Path) -> None:
    deadline = time.monotonic() + 900
    while job.proc.poll() is None and time.monotonic() < deadline:
        if (sweep_dir / "1").is_dir():  # Hydra made job 1's folder: trial 1 is RUNNING
            job.proc.send_signal(signal.SIGKILL)
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def killed_search(real_root, smoke_cache, tmp_path_factory):
    """Killed (SIGKILL: no clean-up at all) as soon as trial 1 starts, by a watcher thread
    started with the search."""
    tmp = tmp_path_factory.mktemp("killed")
    job = _search(real_root, smoke_cache, tmp, "hydra.sweeper.n_trials=2", "trainer.epochs=1",
                  "hydra.sweeper.pruner.name=none")
    watcher = threading.Thread(target=_kill_when_trial_1_starts, args=(job, tmp / "sweep"),
                               daemon=True)
    watcher.start()
    yield job, tmp, watcher
    job.kill()


@pytest.fixture(scope="module")
def failing_search(real_root, smoke_cache, tmp_path_factory):
    """depth 9 fails validation (64 px / 2^9): every trial fails, fast."""
    tmp = tmp_path_factory.mktemp("failing")
    job = _search(real_root, smoke_cache, tmp, "hydra.sweeper.n_trials=3",
                  "model.depth=choice(9)", "hydra.sweeper.max_failure_rate=0.5")
    yield job, tmp
    job.kill()


@pytest.fixture(scope="module")
def joblib_search(real_root, smoke_cache, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("joblib")
    job = _search(real_root, smoke_cache, tmp, "hydra.sweeper.n_trials=2", "trainer.epochs=1",
                  "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    yield job, tmp
    job.kill()


def _runs(tmp: Path):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("segkit-smoke")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("segkit.sweep") == "parent"]
    return client, parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _study(tmp: Path, storage: str | None = None) -> optuna.Study:
    if storage is None:
        storage = str(next(tmp.glob("*.journal")))
    from segkit.search.study import open_storage

    names = optuna.get_all_study_names(open_storage(storage))
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=open_storage(storage))


# ------------------------------------------------------------------ the tests
@pytest.mark.e2e
def test_bad_region_is_pruned_rdb_storage_and_figures_on_parent(rdb_search):
    job, tmp = rdb_search
    res = job.wait()
    assert res.returncode == 0, res.stdout[-3000:]
    study = _study(tmp, f"sqlite:///{tmp}/optuna.db")
    states = {t.params["eval.threshold"]: t for t in study.trials}
    good, bad = states[0.001], states[0.999]
    assert (good.number, good.state, bad.number, bad.state) == (
        0, TrialState.COMPLETE, 1, TrialState.PRUNED)
    assert bad.intermediate_values == {1: 0.0}  # reported once, pruned after epoch 1 of 2
    assert good.intermediate_values[1] > 0 and sorted(good.intermediate_values) == [1, 2]
    client, parents, children = _runs(tmp)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    pruned = next(r for r in children if r.data.tags["segkit.search.trial"] == "1")
    assert pruned.info.status == "FINISHED"
    assert pruned.data.tags["segkit.trial_state"] == "pruned"
    assert pruned.data.tags["segkit.search.pruned_at_epoch"] == "1"
    run_dir = Path(pruned.data.tags["segkit.run_dir"])
    assert json.loads((run_dir / "checkpoints" / "state.json").read_text())["epochs"] == 1
    assert parent.data.tags["segkit.search.study"] == study.study_name
    assert parent.data.tags["segkit.search.best_trial_run_id"] == \
        good.user_attrs["mlflow_run_id"]
    assert parent.data.metrics["jobs_pruned"] == 1
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/optimization_history.png", "optuna/parallel_coordinate.png",
            "optuna/param_importances.png"} <= arts


@pytest.mark.e2e
def test_killed_search_resumes_its_study(killed_search, real_root, smoke_cache):
    """Trial 0 finished, trial 1 running when the sweeper is killed; the same command then
    keeps trial 0 (not retrained), fails trial 1 (orphaned: not counted) and runs one more."""
    job, tmp, watcher = killed_search
    watcher.join(900)
    assert job.wait().returncode == -signal.SIGKILL
    again = _search(real_root, smoke_cache, tmp, "hydra.sweeper.n_trials=2", "trainer.epochs=1",
                    "hydra.sweeper.pruner.name=none", name="sweep2").wait()
    assert again.returncode == 0, again.stdout[-3000:]
    assert "1 trial(s) already count, 1 to go" in again.stdout
    trials = _study(tmp).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.COMPLETE]
    assert "segkit_orphaned" in trials[1].user_attrs
    _, parents, children = _runs(tmp)
    assert len(parents) == 1  # the parent run is the study: reopened, not duplicated
    by_trial = [r.data.tags.get("segkit.search.trial") for r in children]
    assert by_trial.count("0") == 1 and by_trial.count("2") == 1  # trial 0 trained once
    for run in children:  # trial 1's run, if it started before the kill: KILLED, not FAILED
        if run.data.tags.get("segkit.search.trial") == "1":
            assert run.info.status == "KILLED"


@pytest.mark.e2e
def test_failing_trials_are_fail_and_max_failure_rate_stops(failing_search):
    job, tmp = failing_search
    res = job.wait()
    assert res.returncode == 1, res.stdout[-3000:]
    assert "max_failure_rate=0.5" in res.stdout
    assert [t.state for t in _study(tmp).trials] == [TrialState.FAIL]  # stopped after one
    _, parents, children = _runs(tmp)
    assert parents[0].info.status == "FAILED"
    assert "max_failure_rate" in parents[0].data.tags["segkit.error"]
    assert [r.info.status for r in children] == ["FAILED"]


@pytest.mark.e2e
def test_two_joblib_workers_share_one_journal(joblib_search):
    job, tmp = joblib_search
    res = job.wait()
    assert res.returncode == 0, res.stdout[-3000:]
    trials = _study(tmp).trials
    assert sorted(t.number for t in trials) == [0, 1]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert all(t.intermediate_values for t in trials)  # each worker reached its trial
    _, parents, children = _runs(tmp)
    assert len(parents) == 1
    runs = {r.data.tags["segkit.search.trial"]: r.info.run_id for r in children}
    assert runs == {str(t.number): t.user_attrs["mlflow_run_id"] for t in trials}


@pytest.mark.e2e
def test_unknown_pruner_is_one_line_exit_2(tmp_path):
    res = run_py("-m", "hparams_search=optuna", "hydra.sweeper.pruner.name=early",
                 f"hydra.sweep.dir={tmp_path / 's'}", f"hydra.sweeper.study_dir={tmp_path}",
                 f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", env=cli_env(), timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "hydra.sweeper.pruner.name='early'" in res.stderr.strip().splitlines()[-1]
