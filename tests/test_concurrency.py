"""Processes side by side: runs started in the same second each own their run folder and
share one tracking store that the first of them creates; `trainer.resume` never takes a run
that a live process is still training, and takes it once that process is gone."""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from segkit import rundir
from segkit.errors import ConfigError
from segkit.rundir import unique_dir
from tests.helpers import SMOKE_ARGS, Job, cli_env, fresh_store

QUICK = (*SMOKE_ARGS, "eval.plots=false", "callbacks.tensorboard.enabled=false")


def _env(tmp: Path, data: Path) -> dict[str, str]:
    """A fresh sqlite store in ``tmp``; output unbuffered, so lines arrive as they are logged."""
    return cli_env(uri=f"sqlite:///{tmp}/mlflow.db", data=data, PYTHONUNBUFFERED="1")


def _runs(uri: str, experiment: str = "segkit-smoke") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return client.search_runs([exp.experiment_id])


# ------------------------------------------------------------------- the pieces, fast
def test_unique_dir_never_reuses_a_name(tmp_path, monkeypatch):
    base = str(tmp_path / "outputs" / "2024-01-01" / "12-00-00")
    first = unique_dir(base)
    tokens = iter([first.rsplit("-", 1)[1], "abc123"])  # the first name drawn again: taken
    monkeypatch.setattr(rundir.secrets, "token_hex", lambda n: next(tokens))
    second = unique_dir(base)
    assert second == f"{base}-abc123" and Path(first).is_dir() and Path(second).is_dir()


HOLD = """
import sys, time
from segkit import rundir
assert rundir.claim(sys.argv[1]) is None
print("held", flush=True)
time.sleep(120)
"""


def test_a_run_folder_lock_is_held_while_its_process_lives(tmp_path):
    """Another live process holding the lock: claim names its pid and own() refuses the
    folder; killed with -9, the OS frees the lock and the folder can be taken."""
    holder = Job.python(HOLD, tmp_path)
    try:
        assert holder.proc.stdout is not None and holder.proc.stdout.readline() == "held\n"
        assert rundir.claim(tmp_path) == holder.proc.pid
        with pytest.raises(ConfigError, match=rf"in use by process {holder.proc.pid} "):
            rundir.own(tmp_path)
    finally:
        holder.proc.kill()
        holder.wait(30)
    try:
        assert rundir.claim(tmp_path) is None
        assert rundir.claim(tmp_path) is None  # held here already: taken again, no error
        assert (tmp_path / "run.lock").read_text() == f"{os.getpid()}\n"
    finally:
        rundir.release_all()


# ------------------------------------------------------------- runs started together
STORE_RACE = """
import sys, time
from pathlib import Path
from segkit.tracking import setup_experiment
barrier, n, uri = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
(barrier / sys.argv[4]).touch()
while len(list(barrier.iterdir())) < n:  # every process imported: go together
    time.sleep(0.01)
print("experiment", setup_experiment(uri, "race"))
"""


@pytest.mark.e2e
def test_a_fresh_store_is_created_once_by_processes_starting_together(tmp_path):
    """Three processes open one fresh sqlite store at the same instant: MLflow's schema
    creation runs once (under a lock), all get the same experiment."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    jobs = [Job.python(STORE_RACE, barrier, 3, uri, i, merge=True) for i in range(3)]
    results = [job.wait(180) for job in jobs]
    for res in results:
        assert res.returncode == 0, res.stdout[-3000:]
    ids = {line for res in results for line in res.stdout.splitlines()
           if line.startswith("experiment ")}
    assert len(ids) == 1, ids


@pytest.mark.e2e
def test_runs_started_in_the_same_second_own_their_folders(real_root, smoke_cache, tmp_path):
    """Three `run.py` started together, with the default folder naming (re-rooted under
    tmp_path) and different models, on one new store (its creation by processes racing is
    the test above): three folders, each with its own config, and three FINISHED runs."""
    fresh_store(tmp_path / "mlflow.db")  # _env points the processes at it
    env = _env(tmp_path, real_root)
    filters = (4, 6, 8)
    time.sleep(1 - time.time() % 1)  # start at a second's beginning: Hydra names folders
    jobs = [Job.run_py(*QUICK, "trainer.epochs=1", f"paths.root_dir={tmp_path}",  # ~1 s later
                       f"data.cache_dir={smoke_cache}", f"model.filters={f}", env=env,
                       merge=True) for f in filters]
    results = [job.wait(300) for job in jobs]
    for res in results:
        assert res.returncode == 0, res.stdout[-3000:]
    folders = sorted(p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir())
    assert len(folders) == 3, folders
    by_filters = {}
    for folder in folders:
        hydra_cfg = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
        saved = yaml.safe_load((folder / "checkpoints" / "config.yaml").read_text())
        assert saved["model"]["filters"] == hydra_cfg["model"]["filters"]
        by_filters[saved["model"]["filters"]] = folder
    assert sorted(by_filters) == list(filters)
    runs = _runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    for run in runs:
        folder = Path(run.data.tags["segkit.run_dir"])
        assert folder == by_filters[int(run.data.params["model.filters"])]
        log = (folder / "run.log").read_text()
        others = [r.info.run_id for r in runs if r is not run]
        assert run.info.run_id in log and not any(o in log for o in others)


# ------------------------------------------------------------ resume next to a live run
def _wait_for(path: Path, job: Job, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert job.proc.poll() is None, job.wait().stdout[-3000:]
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


def _pause(job: Job, db: Path) -> None:
    """SIGSTOP ``job`` (alive, its locks held, no CPU used) at a moment when it holds no
    sqlite lock, so that the other processes can write to the store meanwhile."""
    for _ in range(100):
        os.kill(job.proc.pid, signal.SIGSTOP)
        time.sleep(0.05)
        try:
            with sqlite3.connect(db, timeout=0.2) as con:
                con.execute("BEGIN EXCLUSIVE")
                con.rollback()
            return
        except sqlite3.OperationalError:  # stopped inside a transaction: let it finish
            os.kill(job.proc.pid, signal.SIGCONT)
            time.sleep(0.1)
    pytest.fail("the training process never left the store alone")


def _read_until(job: Job, text: str, timeout: float = 300) -> str:
    """``job``'s merged output, read as it comes, up to the first line holding ``text``."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert job.proc.stdout is not None
        for line in job.proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
        seen.append(line)
        if text in line:
            return "".join(seen)
    pytest.fail(f"no {text!r} in the output:\n" + "".join(seen)[-3000:])


@pytest.mark.e2e
def test_resume_never_takes_a_live_run(real_root, smoke_cache, tmp_path):
    """While run A is alive (stopped after its first epoch, its lock held),
    `trainer.resume=auto` leaves it alone and `trainer.resume=<A>` fails with one line; once
    A is killed with -9, `trainer.resume=auto` takes it and finishes it."""
    db = tmp_path / "mlflow.db"
    uri = fresh_store(db)  # _env points the processes at it
    env = _env(tmp_path, real_root)
    same = (*QUICK, "trainer.epochs=6", "callbacks.early_stopping.enabled=false",
            f"data.cache_dir={smoke_cache}")
    first = Job.run_py(*same, f"hydra.run.dir={tmp_path}/a", env=env, merge=True)
    try:
        _wait_for(tmp_path / "a" / "checkpoints" / "state.json", first)
        _pause(first, db)
        (live,) = _runs(uri)
        run_id = live.info.run_id
        auto = Job.run_py(*same, "trainer.resume=auto", f"hydra.run.dir={tmp_path}/b",
                          env=env, merge=True)
        named = Job.run_py(*same, f"trainer.resume={run_id}", f"hydra.run.dir={tmp_path}/c",
                           env=env)
        said = _read_until(auto, "starting anew")
        auto.proc.kill()  # it would train a new run of the same config: not needed here
        auto.proc.wait()
        res_named = named.wait(300)
        assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
        done = json.loads((tmp_path / "a" / "checkpoints" / "state.json").read_text())["epochs"]
    finally:
        os.kill(first.proc.pid, signal.SIGKILL)
        first.wait(60)
    assert f"not taking run {run_id}: still running in process {first.proc.pid}" in said
    assert "resuming run" not in said
    errors = [line for line in res_named.stderr.splitlines() if line.startswith("error:")]
    assert res_named.returncode == 2 and len(errors) == 1, res_named.stderr[-3000:]
    assert errors[0] == (f"error: trainer.resume={run_id}: run {run_id} is still running in "
                         f"process {first.proc.pid} (lock {tmp_path / 'a' / 'run.lock'}): "
                         "wait for it or stop it")
    for run in _runs(uri):  # a run the killed process may have started: not a candidate
        if run.info.run_id != run_id:
            MlflowClient(uri).delete_run(run.info.run_id)

    res = Job.run_py(*same, "trainer.resume=auto", f"hydra.run.dir={tmp_path}/d", env=env,
                     merge=True).wait(300)
    assert res.returncode == 0, res.stdout[-3000:]
    assert f"resuming run {run_id} after epoch {done} in {tmp_path / 'a'}: " in res.stdout
    assert "its process is gone" in res.stdout
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["segkit.resumed_after_epoch"] == str(done)
