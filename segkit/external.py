"""Score a model on the external test sets of ``eval.external``: one MLflow run per set, named
``external <name>``, tagged with the set (``segkit.dataset``) and the source model and run,
with the usual report under ``evaluation/`` and ``test_*`` metrics (so the MLflow columns and
``segkit compare`` read them like any test split).

From a training run the set runs are its children (nested under it in the UI); from
``task=evaluate`` they are top-level runs linked by ``segkit.source_run_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import keras
import mlflow
from omegaconf import DictConfig

from segkit import report
from segkit import tags as tag
from segkit.data.external import ExternalData, external_sets, load_external
from segkit.evaluation import as_predictor
from segkit.runtimes import Predictor
from segkit.summary import headline
from segkit.tracking import setup_experiment

log = logging.getLogger(__name__)


def _log_set(ext: ExternalData) -> None:
    n = len(ext.samples)
    mlflow.log_params({"external.name": ext.source.name, "external.root": str(ext.source.root),
                       "external.images": n, "data.fingerprint": ext.fingerprint})
    mlflow.set_tags({tag.DATASET: ext.source.name, tag.SPLIT: f"external:{ext.source.name}",
                     tag.TEST_SPLIT: f"{ext.source.name} ({n} images, original resolution)"})


def score_external(cfg: DictConfig, model: keras.Model | Predictor, run_dir: Path, *,
                   source_model_uri: str, source_run_id: str | None) -> dict[str, dict]:
    """Evaluate ``model`` on every set of ``cfg.eval.external`` (its report in
    ``run_dir/external/<name>/evaluation``), one run each, nested under the active run when
    there is one; return each set's metrics by name."""
    sets = external_sets(cfg.eval.external, cfg.get("dataset"))
    if not sets:
        return {}
    size = as_predictor(model).input_size
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    run_tags: Mapping[str, str] = {tag.TASK: "evaluate", tag.SOURCE_MODEL_URI: source_model_uri,
                                   tag.SOURCE_RUN_ID: source_run_id or ""}
    out = {}
    for source in sets:
        ext = load_external(source, size, cache, cfg.data.workers)
        folder = run_dir / "external" / source.name
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"external {source.name}",
                              tags=dict(run_tags), nested=True) as run:
            _log_set(ext)
            metrics = report.report_external(model, ext, cfg, folder / "evaluation")
        print(f"external {source.name}: {len(ext.samples)} images at original resolution: "
              f"{headline(metrics)}; run {run.info.run_id}; report "
              f"{folder / 'evaluation' / 'report.html'}", flush=True)
        out[source.name] = metrics
    return out
