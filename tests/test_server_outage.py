"""A tracking server lost in the middle of training: training goes on without waiting on
it, the epoch metrics wait on disk, the run ends with one line naming `segkit sync` (no
traceback), and `segkit sync` against the restarted server completes the run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from segkit.metric_names import internal, to_mlflow
from tests.helpers import Job, cli_env, free_port, mlflow_server_at, tracking_uri

EPOCHS = 5  # the server goes after the 1st, while the run is stopped (SIGSTOP): 4 without it
OUTAGE_RUN = ("debug=smoke", "eval.plots=false", "callbacks.tensorboard.enabled=false",
              "split.val_fraction=0.34", "callbacks.early_stopping.enabled=false",
              f"trainer.epochs={EPOCHS}")


def test_the_journal_skips_a_torn_line_and_sends_each_epoch_with_its_step(tmp_path):
    """A kill during an append tears only that line; the next append starts a new line;
    send() logs every whole entry at its own step, then removes the journal."""
    import mlflow

    from segkit.sync import Journal

    journal = Journal(tmp_path)
    journal.add(0, {"loss": 0.5})
    with open(journal.path, "a") as f:
        f.write('{"step": 1, "timest')  # torn by a kill
    journal.add(2, {"loss": 0.25, "val_loss": float("nan")})
    assert [e["step"] for e in journal.entries()] == [0, 2]
    with tracking_uri(f"sqlite:///{tmp_path}/mlflow.db"):
        run = MlflowClient().create_run(MlflowClient().create_experiment("j"))
        assert journal.send(run.info.run_id) == 2
        history = MlflowClient().get_metric_history(run.info.run_id, to_mlflow("loss"))
        assert sorted((m.step, m.value) for m in history) == [(0, 0.5), (2, 0.25)]
        assert mlflow.active_run() is None
    assert not journal.path.exists()


def _wait_for(path: Path, job: Job, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if job.proc.poll() is not None:
            res = job.wait()
            pytest.fail(f"the run ended before its first epoch: {res.stderr[-3000:]}")
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)


@pytest.mark.e2e
def test_training_outlives_a_lost_tracking_server_and_sync_completes_the_run(
        real_root, smoke_cache, tmp_path):
    store, out = tmp_path / "store", tmp_path / "run"
    store.mkdir()
    art, port = ("--artifacts-destination", str(store / "artifacts")), free_port()
    with mlflow_server_at(store, *art, port=port) as url:
        job = Job.run_py(*OUTAGE_RUN, f"hydra.run.dir={out}", f"data.cache_dir={smoke_cache}",
                         env=cli_env(uri=url, data=real_root))
        _wait_for(out / "checkpoints" / "state.json", job)
        os.kill(job.proc.pid, signal.SIGSTOP)  # no epoch ends while the server goes
    lost = time.monotonic()  # leaving the block stopped the server
    os.kill(job.proc.pid, signal.SIGCONT)
    res = job.wait(timeout=240)
    after = time.monotonic() - lost
    assert after < 60, f"{after:.0f} s after the server went: a stall on it"
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: tracking server {url} unreachable: the run's results are in "
                      f"{out}; finish the logging with: segkit sync {out}   (or resume with "
                      f"python run.py trainer.resume={_run_id(out)})"], res.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epochs"] == EPOCHS and state["finished"]  # trained to its last epoch
    assert (out / "checkpoints" / "best.keras").is_file()
    assert (out / "evaluation" / "metrics.json").is_file()  # evaluated locally
    pending = [json.loads(line) for line in (out / "pending_metrics.jsonl").open()]
    assert pending and pending[-1]["step"] == EPOCHS  # steps count epochs from 1

    with mlflow_server_at(store, *art, port=port) as url:  # the same store and address
        client = MlflowClient(url)
        run_id = _run_id(out)
        assert client.get_run(run_id).info.status == "RUNNING"  # not FINISHED half-logged
        synced = Job.segkit("sync", out, cwd=tmp_path, env=cli_env()).wait(240)
        assert synced.returncode == 0, synced.stderr[-3000:]
        assert f"run {run_id} ({url}): logged " in synced.stdout
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in ("loss", "val_loss", "val_dice"):
            steps = [m.step for m in client.get_metric_history(run_id, to_mlflow(key))]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), key
        assert {"test_mdice", "val_mdice", "epochs_run"} <= set(internal(run.data.metrics))
        assert run.data.tags["segkit.model_uri"].startswith("models:/")
        files = {a.path for a in client.list_artifacts(run_id, "evaluation")}
        assert {"evaluation/metrics.json", "evaluation/report.md"} <= files
        assert not (out / "pending_metrics.jsonl").exists()


def _run_id(run_dir: Path) -> str:
    return json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
