"""Progress a person can read during a long run: a bar inside each epoch (steps done, time
left in the epoch) and, after each epoch, the time left for the whole run: the epochs
still to run, or the wall-clock budget (``trainer.max_minutes``) when that ends it first.

Hand-written on tqdm: Keras' own bar (``verbose=1``) shows no estimate for the run, and in
a log file it writes a line per step.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import keras
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """``3 h 05 min``, ``12 min 30 s`` or ``45 s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def run_eta(done: int, epochs: int, epoch_seconds: float, spent_seconds: float,
            max_minutes: float | None) -> str:
    """What is left after ``done`` of ``epochs`` epochs at ``epoch_seconds`` each, and
    whether the budget ends the run first (``spent_seconds`` of it are used)."""
    left = epochs - done
    by_epochs = left * epoch_seconds
    text = f"epoch {done}/{epochs}; about {duration(by_epochs)} for the {left} epoch(s) left"
    if max_minutes:
        budget_left = max(0.0, max_minutes * 60 - spent_seconds)
        if budget_left < by_epochs:
            last = done + int(budget_left // max(epoch_seconds, 1e-9))
            text = (f"epoch {done}/{epochs}; the {max_minutes:g} min budget ends the run in "
                    f"about {duration(budget_left)}, near epoch {min(last, epochs)}")
    return text


class Progress(keras.callbacks.Callback):
    """A tqdm bar over each epoch's steps (on a terminal only: a log file gets the epoch
    lines alone), then one line with the estimate for the whole run."""

    def __init__(self, epochs: int, steps: int, max_minutes: float | None = None,
                 spent_seconds: float = 0.0, bar: bool | None = None):
        super().__init__()
        self.epochs, self.steps, self.max_minutes = epochs, steps, max_minutes
        self.spent = spent_seconds
        self.bar_on = sys.stderr.isatty() if bar is None else bar
        self._bar: Any = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        if self.bar_on:
            self._bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}",
                             unit="step", leave=False, dynamic_ncols=True)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        seconds = time.perf_counter() - self._start
        self.spent += seconds
        log.info("%s", run_eta(epoch + 1, self.epochs, seconds, self.spent, self.max_minutes))
