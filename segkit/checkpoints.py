"""Training state on disk, written at every epoch end, so an interrupted run loses at most the
epoch in progress and ``trainer.resume`` continues it in the same MLflow run.

``<run_dir>/checkpoints/`` holds ``best.keras`` (the model evaluated after training),
``last.keras`` (weights and optimizer state after the last finished epoch), ``state.json``
(epochs done, history, the stateful callbacks' counters, training seconds) and
``config.yaml`` (the resolved config the run started with). Every file is written to a temp
name and renamed, so a kill in the middle of a save leaves the previous version intact.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from segkit.errors import ConfigError
from segkit.fileio import atomic_path, write_text

log = logging.getLogger(__name__)

BEST, LAST, STATE, CONFIG = "best.keras", "last.keras", "state.json", "config.yaml"
# The best epoch by early stopping's monitor, kept when callbacks.checkpoint.enabled=false and
# early_stopping.restore_best_weights=true: Keras keeps it in memory only, lost on a resume.
ES_BEST = "early_stopping_best.keras"


def _scalar(value) -> float | None:
    try:
        number = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class TrainingState(keras.callbacks.Callback):
    """Saves ``best.keras`` when ``monitor`` improves, then ``last.keras`` and ``state.json``,
    at every epoch end but a diverged one (a non-finite loss); on a resumed run, puts the
    saved counters back into the callbacks.

    Hand-written instead of ModelCheckpoint + BackupAndRestore: both write their files in
    place (a kill during a save corrupts them), and neither keeps EarlyStopping's or
    ReduceLROnPlateau's counters, so a resumed run would not stop or decay the learning rate
    where the uninterrupted one would. Put it last in the callback list: its
    ``on_train_begin`` runs after theirs (which reset the counters).
    """

    def __init__(self, folder: Path, monitor: str, mode: str, *, save_best: bool = True,
                 callbacks: Sequence[keras.callbacks.Callback] = (),
                 restored: dict | None = None, best_name: str = BEST):
        super().__init__()
        self.folder = Path(folder)
        self.monitor, self.mode, self.save_best = monitor, mode, save_best
        self.best_name = best_name  # BEST, or ES_BEST for early stopping's restore
        self.callbacks = list(callbacks)
        self.state = restored or {"epochs": 0, "history": {}, "best": None,
                                  "train_seconds": 0.0, "callbacks": {}}

    @property
    def history(self) -> dict[str, list[float]]:
        """Every finished epoch's logs, across interruptions (Keras' History covers one fit)."""
        return self.state["history"]

    def _stateful(self):
        for cb in self.callbacks:
            if isinstance(cb, (keras.callbacks.EarlyStopping,
                               keras.callbacks.ReduceLROnPlateau)):
                yield type(cb).__name__, cb

    def on_train_begin(self, logs=None):
        for name, cb in self._stateful():
            for key, value in self.state["callbacks"].get(name, {}).items():
                setattr(cb, key, value)

    def _improved(self, value: float | None) -> bool:
        best = self.state["best"]
        if value is None:
            return False
        return best is None or (value > best if self.mode == "max" else value < best)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if any(k.endswith("loss") and _scalar(v) is None for k, v in logs.items()):
            return  # a diverged epoch (NaN/inf loss): the last healthy one stays saved
        for key, value in logs.items():
            if (number := _scalar(value)) is not None:
                self.history.setdefault(key, []).append(number)
        current = _scalar(logs.get(self.monitor))
        if self.save_best and self._improved(current):
            self.state["best"] = current
            self.state["best_epoch"] = epoch
            with atomic_path(self.folder / self.best_name) as tmp:
                self.model.save(tmp)
        with atomic_path(self.folder / LAST) as tmp:
            self.model.save(tmp)
        self.state["epochs"] = epoch + 1
        self.state["train_seconds"] += float(logs.get("epoch_seconds", 0.0))
        self.state["callbacks"] = {
            name: {k: _scalar(getattr(cb, k)) for k in ("wait", "best", "best_epoch",
                                                         "cooldown_counter")
                   if hasattr(cb, k) and _scalar(getattr(cb, k)) is not None}
            for name, cb in self._stateful()}
        self.save_state()

    def restore_best(self, model: keras.Model) -> int | None:
        """Put the best epoch's saved weights into ``model`` (the epochs before a resume
        count) and log which epoch that is; returns it (1-based), or None when no best is
        kept. segkit does this instead of EarlyStopping(restore_best_weights=True), whose
        best weights live in memory: after a resume it would restore (and name) the first
        resumed epoch instead."""
        path, epoch = self.folder / self.best_name, self.state.get("best_epoch")
        if not self.save_best or epoch is None or not path.is_file():
            return None
        model.load_weights(path)
        log.info("evaluating the weights of epoch %d, the best %s (%.4f), from %s",
                 epoch + 1, self.monitor, self.state["best"], path.name)
        return int(epoch) + 1

    def save_state(self, **extra) -> None:
        self.state.update(extra)
        write_text(self.folder / STATE, json.dumps(self.state, indent=1))


def save_config(folder: Path, cfg: DictConfig) -> None:
    """The resolved config the run started with: a resume continues with exactly this."""
    write_text(Path(folder) / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


@dataclass(frozen=True)
class Resume:
    """What ``trainer.resume`` found: the run to continue and its saved state."""

    run_id: str
    run_dir: Path
    cfg: DictConfig
    state: dict

    def load_last(self) -> keras.Model:
        """The last finished epoch's model, compiled, with its optimizer state."""
        return keras.saving.load_model(self.run_dir / "checkpoints" / LAST, safe_mode=True)


def missing_for_resume(run_dir: Path) -> list[str]:
    """The files of ``<run_dir>/checkpoints`` that a resume needs and that are not there
    (all of them until the run finishes its first epoch)."""
    folder = Path(run_dir) / "checkpoints"
    return [n for n in (STATE, LAST, CONFIG) if not (folder / n).is_file()]


def load_resume(run_id: str, run_dir: Path, cfg: DictConfig) -> Resume:
    """The saved state of run ``run_id`` under ``run_dir``; ConfigError when it cannot resume.

    The run continues with the config it started with; keys of ``cfg`` that differ (other
    than ``trainer.resume`` itself) are reported and ignored.
    """
    folder = Path(run_dir) / "checkpoints"
    if missing := missing_for_resume(run_dir):
        raise ConfigError(
            f"trainer.resume={run_id}: {folder} has no {', '.join(missing)} (the run finished "
            "no epoch, or its folder was removed): start a new run without trainer.resume")
    try:
        state = json.loads((folder / STATE).read_text())
        saved = OmegaConf.create((folder / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"trainer.resume={run_id}: {folder / STATE} is unreadable ({exc}): "
                          "start a new run without trainer.resume") from exc
    saved.trainer.resume = cfg.trainer.resume
    ignored = sorted(k for k in _diff(OmegaConf.to_container(saved, resolve=True),
                                      OmegaConf.to_container(cfg, resolve=True))
                     if not k.startswith(("hydra.", "paths.")))
    if ignored:
        log.warning("trainer.resume: continuing with the run's own config; ignoring the "
                    "changed keys %s", ", ".join(ignored))
    assert isinstance(saved, DictConfig)  # config.yaml holds a mapping
    return Resume(run_id, Path(run_dir), saved, state)


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b))
                for k in _diff(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]
