"""The Keras callback that connects a search job to its Optuna trial: every epoch it reports the
monitored validation score (``hydra.sweeper.monitor``, by default ``val_mean_image_dice``: the
per-image Dice averaged over the validation carve-out, computed by Keras each epoch, the
per-epoch twin of the objective ``val_mdice``) and asks the study's pruner whether the trial is
behind; it reports the best value so far, as the trial is scored on its best epoch
(``hparams_search=optuna`` sets the checkpoint's monitor to the same metric). A pruned trial
stops training at that epoch's end, like EarlyStopping: checkpoints and history are kept, the
model is logged and evaluated, and the run ends FINISHED with ``segkit.trial_state=pruned``; the
sweeper tells Optuna PRUNED.

Hand-written rather than optuna-integration's KerasPruningCallback / TFKerasPruningCallback,
which raise TrialPruned inside ``fit`` (the run would end FAILED, nothing logged) and hold an
in-process Trial; here the trial is reached through the storage from any worker process."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import keras
import mlflow

from segkit.search import study as search

log = logging.getLogger(__name__)


def current_link() -> tuple[dict, int] | None:
    """(search file, trial number) of the running Hydra job when it is a search trial."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    info = search.read_search_file(Path(str(hc.sweep.dir)))
    if info is None:
        return None
    entry = info.get("trials", {}).get(str(hc.job.num))
    return (info, int(entry["trial_id"])) if entry else None


class TrialPruning(keras.callbacks.Callback):
    """Reports ``monitor`` after every epoch to the trial ``trial_id`` of the search
    ``info`` (see :data:`segkit.search.study.SEARCH_FILE`) and stops a trial the pruner
    prunes. ``pruned_at``: the epoch (1-based) it stopped at, else None."""

    def __init__(self, info: dict, trial_id: int):
        super().__init__()
        import optuna

        storage = search.open_storage(info["storage"])
        study = optuna.load_study(study_name=info["study_name"], storage=storage,
                                  pruner=search.build_pruner(info["pruner"]))
        # Optuna's Trial of a trial asked for in another process (the sweeper's)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.monitor = str(info["monitor"])
        # the study's direction is the monitor's too (both are validation scores)
        self.better = min if info.get("direction") == "minimize" else max
        self.best: float | None = None
        self.pruned_at: int | None = None
        self._missing_warned = False

    def on_train_begin(self, logs=None):
        run = mlflow.active_run()
        if run is not None:
            self.trial.set_user_attr(search.RUN_ID_ATTR, run.info.run_id)
            mlflow.set_tags({search.TRIAL_TAG: str(self.trial.number),
                             search.STUDY_TAG: self.trial.study.study_name})

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            if not self._missing_warned:
                log.warning("search: %s missing or not finite in the epoch's logs: not "
                            "reported to trial %d", self.monitor, self.trial.number)
                self._missing_warned = True
            return
        # The best value so far, not this epoch's: the trial is scored on its best epoch
        # (the checkpoint's), and one noisy epoch should not prune a good trial.
        self.best = float(value) if self.best is None else self.better(self.best, float(value))
        self.trial.report(self.best, step=epoch + 1)  # steps: epoch numbers, from 1
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.trial.set_user_attr(search.PRUNED_ATTR, epoch + 1)
            mlflow.set_tags({search.TRIAL_STATE_TAG: "pruned",
                             search.PRUNED_AT_TAG: str(epoch + 1)})
            self.model.stop_training = True
            print(f"search: trial {self.trial.number} pruned after epoch {epoch + 1} "
                  f"(best {self.monitor} so far {self.best:.4f}): training stops, the run is "
                  "kept")


def search_callbacks() -> list[keras.callbacks.Callback]:
    """[TrialPruning] inside a search trial, else []."""
    link = current_link()
    return [] if link is None else [TrialPruning(*link)]
