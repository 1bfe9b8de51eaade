"""The run's time estimate: epochs left, or the budget when it ends the run first."""

from __future__ import annotations

import logging

from segkit.progress import Progress, duration, run_eta


def test_durations_read_as_a_person_would_say_them():
    assert duration(45.4) == "45 s"
    assert duration(750) == "12 min 30 s"
    assert duration(3 * 3600 + 5 * 60 + 20) == "3 h 05 min"


def test_eta_counts_the_epochs_left():
    assert run_eta(3, 30, 60.0, 180.0, None) == \
        "epoch 3/30; about 27 min 00 s for the 27 epoch(s) left"


def test_eta_says_when_the_budget_stops_the_run_first():
    # 200 epochs of 60 s would take 197 min; a 60 min budget with 3 min spent ends first
    assert run_eta(3, 200, 60.0, 180.0, 60) == \
        "epoch 3/200; the 60 min budget ends the run in about 57 min 00 s, near epoch 60"
    # a budget longer than the epochs left changes nothing
    assert run_eta(3, 10, 60.0, 180.0, 60).endswith("for the 7 epoch(s) left")


def test_the_callback_logs_the_estimate_after_each_epoch(caplog):
    progress = Progress(epochs=4, steps=2, max_minutes=None, bar=True)
    with caplog.at_level(logging.INFO, logger="segkit.progress"):
        for epoch in range(2):
            progress.on_epoch_begin(epoch)
            progress.on_train_batch_end(0)
            progress.on_train_batch_end(1)
            progress.on_epoch_end(epoch)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(";")[0] for line in lines] == ["epoch 1/4", "epoch 2/4"]
    assert lines[1].endswith("for the 2 epoch(s) left")
