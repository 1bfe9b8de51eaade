"""What the search writes into MLflow: its tags on the parent run (the study), each child
run's trial state, and at the end Optuna's figures (optimization history, parameter
importances, parallel coordinates, intermediate values), ``optimization_results.yaml`` and
the best trial's run id on the parent. Never raises: tracking must not stop a search."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from segkit.search import study as search
from segkit.sweep.job import _client, read_sweep_file

log = logging.getLogger(__name__)

FIGURES = {  # file name -> Optuna's matplotlib plot
    "optimization_history.png": "plot_optimization_history",
    "param_importances.png": "plot_param_importances",
    "parallel_coordinate.png": "plot_parallel_coordinate",
    "intermediate_values.png": "plot_intermediate_values",
}


def _parent(sweep_dir: Path) -> str | None:
    info = read_sweep_file(sweep_dir)
    return info["parent_run_id"] if info else None


def tag_parent(sweep_dir: Path, config: DictConfig, tags: dict[str, str]) -> None:
    parent = _parent(sweep_dir)
    if parent is None:
        return
    try:
        client = _client(str(config.tracking.uri))
        for key, value in tags.items():
            client.set_tag(parent, key, value[:5000])
    except Exception as exc:
        log.warning("search: the parent run's tags could not be set: %s", exc)


def tag_child(config: DictConfig, run_id: str | None, state: str) -> None:
    if not run_id:
        return
    try:
        _client(str(config.tracking.uri)).set_tag(run_id, search.TRIAL_STATE_TAG, state)
    except Exception as exc:
        log.warning("search: run %s: trial state not tagged: %s", run_id, exc)


def end_killed(config: DictConfig, run_id: str | None) -> None:
    """The run of an orphaned trial: KILLED (when still RUNNING) and tagged ``fail``."""
    if not run_id:
        return
    try:
        client = _client(str(config.tracking.uri))
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "segkit.error", "its sweeper was killed while it ran")
            client.set_terminated(run_id, "KILLED")
        client.set_tag(run_id, search.TRIAL_STATE_TAG, "fail")
    except Exception as exc:
        log.warning("search: run %s of an orphaned trial not closed: %s", run_id, exc)


def results(study: optuna.Study) -> dict[str, Any]:
    """Optuna's results as hydra-optuna-sweeper wrote them, with the trial counts."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    out: dict[str, Any] = {"name": "optuna", "study_name": study.study_name,
                           **{f"n_{s.name.lower()}": states.count(s) for s in TrialState}}
    if TrialState.COMPLETE in states:
        best = study.best_trial
        out.update(best_params=best.params, best_value=best.value, best_trial=best.number,
                   best_run_id=best.user_attrs.get(search.RUN_ID_ATTR))
    return out


def draw(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's figures of ``study`` as PNGs in ``folder`` (those it can draw)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in FIGURES.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings
                ax = getattr(vis, plot)(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(9, 5.5)
            fig.tight_layout()
            fig.savefig(folder / name, dpi=100)
            plt.close(fig)
            written.append(folder / name)
        except Exception as exc:  # e.g. importances need two finished trials
            log.info("search: %s not drawn: %s", name, exc)
    return written


def finish(sweep_dir: Path, config: DictConfig, study: optuna.Study, conf: DictConfig) -> None:
    """Results file, figures and best-trial tags (see the module's docstring)."""
    found = results(study)
    OmegaConf.save(OmegaConf.create(found), sweep_dir / "optimization_results.yaml")
    paths = draw(study, sweep_dir / "optuna")
    if "best_value" in found:
        print(f"search: best trial {found['best_trial']} ({found['best_value']:.4f}): "
              f"{found['best_params']}")
    parent = _parent(sweep_dir)
    if parent is None:
        return
    try:
        client = _client(str(config.tracking.uri))
        for path in paths:
            client.log_artifact(parent, str(path), "optuna")
        if "best_trial" in found:
            client.set_tag(parent, search.BEST_TRIAL_TAG, str(found["best_trial"]))
            client.set_tag(parent, search.BEST_TRIAL_RUN_TAG, str(found["best_run_id"]))
    except Exception as exc:
        log.warning("search: the figures could not be logged to the parent run: %s", exc)
