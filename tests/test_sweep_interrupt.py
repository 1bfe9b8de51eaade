"""Ctrl-C in the middle of a sweep: the summary lists every planned job with its state, the
killed job is not a failed one, and the resume hint is a command that works as printed."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from segkit.metric_names import internal
from tests.helpers import ROOT, RUN_PY, cli_env, fresh_store

SMOKE = ("debug=smoke", "split.val_fraction=0.34", "callbacks.tensorboard.enabled=false",
         "callbacks.early_stopping.enabled=false", "eval.plots=false")
LONG = 5  # job 1's epochs: it is frozen (SIGSTOP) as soon as its first epoch ends
HINT = re.compile(r"continue it with: (python run\.py .*)$", re.MULTILINE)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_epoch(proc: subprocess.Popen, state: Path, log: Path,
                    timeout: float = 300) -> None:
    """Until ``state`` (a state.json) records a finished epoch; fails if the sweep ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, ("the sweep ended before job 2 finished an epoch:\n"
                                     + log.read_text()[-3000:])
        try:
            if json.loads(state.read_text())["epochs"] >= 1:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    pytest.fail(f"no epoch finished in {state} within {timeout} s")


def _summary(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.e2e
def test_ctrl_c_in_job_2_of_4_lists_every_job_and_hints_a_working_resume(real_root, tmp_path):
    """seed=1,2 x trainer.epochs=1,LONG in Hydra's order: job 0 (1 epoch) finishes, job 1
    is frozen (SIGSTOP on the process group, so no epoch ends meanwhile, however busy the
    machine) once its first epoch ends, gets SIGINT and goes on; jobs 2-3 never start.
    Then the printed hint, run as printed, finishes job 1's run."""
    from mlflow.tracking import MlflowClient

    uri = fresh_store(tmp_path / "mlflow.db")
    env = cli_env(uri, real_root)
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), "-m", *SMOKE, f"data.cache_dir={tmp_path}/cache",
             f"hydra.sweep.dir={sweep}", "seed=1,2", f"trainer.epochs=1,{LONG}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            # A shell's background job (CI under nohup ... &) inherits SIGINT ignored;
            # Ctrl-C in a terminal reaches a process with the default handler.
            preexec_fn=_default_sigint)
        try:
            _wait_for_epoch(proc, sweep / "1" / "checkpoints" / "state.json", log)
            os.killpg(proc.pid, signal.SIGSTOP)
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            os.killpg(proc.pid, signal.SIGCONT)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode != 0, text[-3000:]

    rows = _summary(sweep)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"], text[-3000:]
    assert [r["status"] for r in rows] == ["FINISHED", "KILLED", "NOT_STARTED", "NOT_STARTED"]
    assert [(r["param:seed"], r["param:trainer.epochs"]) for r in rows] == [
        ("1", "1"), ("1", str(LONG)), ("2", "1"), ("2", str(LONG))]
    assert rows[3]["overrides"].split()[-2:] == ["seed=2", f"trainer.epochs={LONG}"]
    client = MlflowClient(uri)
    parent = client.get_run(json.loads((sweep / "mlflow_sweep.json").read_text())
                            ["parent_run_id"])
    assert parent.info.status == "KILLED"
    counts = internal(parent.data.metrics)
    assert {k: int(v) for k, v in counts.items() if k.startswith("jobs_")} == {
        "jobs_total": 4, "jobs_planned": 4, "jobs_finished": 1, "jobs_skipped": 0,
        "jobs_failed": 0, "jobs_killed": 1, "jobs_pruned": 0, "jobs_not_started": 2}
    assert "1 finished, 0 skipped, 0 failed, 1 killed, 0 pruned, 2 not started" in text
    assert "rerun the same command with sweep.skip_completed=true" in text

    killed = rows[1]["run_id"]
    (hint,) = HINT.findall(text)
    assert hint.endswith(f" trainer.resume={killed}") and "debug=smoke" in hint.split()
    assert "seed=1" in hint.split() and f"trainer.epochs={LONG}" in hint.split()
    done = json.loads((sweep / "1" / "checkpoints" / "state.json").read_text())["epochs"]
    # As printed, in the checkout, with the test's environment; only Hydra's own log folder
    # is sent to tmp_path (else it lands in the checkout's outputs/).
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run(f"{hint} hydra.run.dir={shlex.quote(str(tmp_path / 'resumed'))}",
                         shell=True, cwd=ROOT, env={**env, "PATH": path},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    run = client.get_run(killed)
    assert run.info.status == "FINISHED"
    assert internal(run.data.metrics)["epochs_run"] == LONG
    assert 1 <= done < LONG
    assert run.data.tags["segkit.resumed_after_epoch"] == str(done)


# ------------------------------------------------------------------ pieces, no training
def test_hint_is_a_command_only_when_an_epoch_finished(tmp_path):
    from segkit.lifecycle import interrupt_hint

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    overrides = ["debug=smoke", "trainer.resume=auto", "callbacks.extra=[{a: 1}]"]
    for sweep, again in ((True, "rerun the sweep with sweep.skip_completed=true"),
                         (False, "rerun the same command")):
        hint = interrupt_hint("abc", run_dir, (overrides, sweep))
        assert hint.endswith(f"nothing to resume (no epoch finished): {again}")
        assert "python run.py" not in hint
    for name in ("state.json", "last.keras", "config.yaml"):  # what an epoch end leaves
        (run_dir / "checkpoints" / name).write_text("x")
    hint = interrupt_hint("abc", run_dir, (overrides, True))
    command = hint.split("continue it with: ", 1)[1]
    assert shlex.split(command) == ["python", "run.py", "debug=smoke",
                                    "callbacks.extra=[{a: 1}]", "trainer.resume=abc"]
    assert "trainer.resume=abc added to its command" in interrupt_hint("abc", run_dir, None)


def test_planned_jobs_follow_hydras_order():
    from segkit.sweep.parent import planned_jobs

    basic = OmegaConf.create({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                    "params": {"model.filters": "4,8"}},
        "overrides": {"task": ["debug=smoke", "optimizer.lr=1e-3,1e-4", "model.filters=2,3"]}}})
    jobs = planned_jobs(basic)
    assert [j["job"] for j in jobs] == [0, 1, 2, 3]
    assert [j["overrides"] for j in jobs] == [
        ["model.filters=2", "debug=smoke", "optimizer.lr=0.001"],
        ["model.filters=2", "debug=smoke", "optimizer.lr=0.0001"],
        ["model.filters=3", "debug=smoke", "optimizer.lr=0.001"],
        ["model.filters=3", "debug=smoke", "optimizer.lr=0.0001"]]
    # glob(*) is expanded by Hydra's config loader, as the sweeper expands it
    from hydra import initialize_config_dir

    basic.hydra.overrides.task = ["experiment=glob(*)"]
    basic.hydra.sweeper.params = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        jobs = planned_jobs(basic)
    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert [j["overrides"] for j in jobs] == [[f"experiment={p}"] for p in presets]
    optuna = OmegaConf.create({"hydra": {"sweeper": {"_target_": "x.OptunaSweeper",
                                                     "n_trials": 3},
                                         "overrides": {"task": []}}})
    assert planned_jobs(optuna) == [{"job": i, "overrides": None} for i in range(3)]
    other = OmegaConf.create({"hydra": {"sweeper": {"_target_": "x.AxSweeper"},
                                        "overrides": {"task": []}}})
    assert planned_jobs(other) is None


def test_summary_rows_fill_the_plan_and_count_killed_apart():
    from segkit.sweep.parent import count_jobs, summary_rows

    planned = [{"job": i, "overrides": [f"seed={i}"]} for i in range(4)]
    rows = summary_rows([], ["seed"], "val_mdice", planned, interrupted_job=1)
    assert [(r["job"], r["status"], r["param:seed"]) for r in rows] == [
        ("0", "NOT_STARTED", "0"), ("1", "KILLED", "1"), ("2", "NOT_STARTED", "2"),
        ("3", "NOT_STARTED", "3")]
    counts = count_jobs(rows, planned)
    assert counts["jobs_total"] == counts["jobs_planned"] == 4
    assert (counts["jobs_killed"], counts["jobs_failed"], counts["jobs_not_started"]) == (1, 0, 3)
