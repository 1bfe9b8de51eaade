"""``segkit compare A B``: is model B better than model A on the same test images, and by
how much? Per-image paired differences, their mean with a bootstrap 95% interval, the paired
Wilcoxon signed-rank p-value, wins/ties/losses and a figure; printed as a table, written as
a report, and logged as an MLflow run tagged with both sides.

A side is an MLflow run id, a model URI (``runs:/...``, ``models:/...``; its training run is
used) or several of them joined by commas (a group: the mean over seeds or folds, image by
image). Scores are the per-image ones the runs' evaluation logged
(``evaluation/test_per_image.csv``). A run without them (an older run, a model file) has its
model evaluated here on the test split of a run that has them (that run's logged config:
data, split, eval settings), so the two sides are scored on the same images.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np

from segkit import plots
from segkit import tags as tag
from segkit.errors import SegkitError
from segkit.fileio import write_text
from segkit.statistics import DRAWS, Paired, paired_comparison
from segkit.tracking import setup_experiment, source_run_id

log = logging.getLogger(__name__)

PER_IMAGE = "evaluation/test_per_image.csv"
METRICS = ("dice", "iou")


class CompareError(SegkitError):
    """A side that cannot be read, or two sides that were not scored on the same images."""


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its runs and its per-image scores by image name."""

    label: str
    run_ids: tuple[str, ...]
    scores: dict[str, float]


def _run_id(ref: str, client: mlflow.MlflowClient) -> str | None:
    """The run behind ``ref``; None for a model file (no run)."""
    if Path(ref).suffix == ".keras" and Path(ref).is_file():
        return None
    if ref.startswith(("runs:/", "models:/")):
        found = source_run_id(ref)
        if not found:
            raise CompareError(f"{ref}: no training run found behind this model URI")
        return found
    try:
        return str(client.get_run(ref).info.run_id)
    except mlflow.exceptions.MlflowException:
        raise CompareError(f"{ref}: no such MLflow run or model URI in this tracking store "
                           "(give --tracking-uri?)") from None


def _per_image(run_id: str | None, client: mlflow.MlflowClient,
               metric: str) -> dict[str, float] | None:
    """The run's logged per-image scores; None when it has none."""
    if run_id is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, PER_IMAGE, tmp)
        except (mlflow.exceptions.MlflowException, OSError):
            return None
        with open(path, newline="") as fh:
            return {row["name"]: float(row[metric]) for row in csv.DictReader(fh)}


def _model_uri(ref: str, run_id: str | None, client: mlflow.MlflowClient) -> str:
    if run_id is None or ref.startswith(("runs:/", "models:/")):
        return ref
    return client.get_run(run_id).data.tags.get(tag.MODEL_URI) or f"runs:/{run_id}/model"


def _run_config(run_id: str, client: mlflow.MlflowClient):
    """The composed config a run logged (``config/config.yaml``), data never downloaded
    nor cached (the comparison writes nothing beside its report)."""
    from omegaconf import OmegaConf

    from segkit.config import register_resolvers

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "config/config.yaml", tmp)
        except (mlflow.exceptions.MlflowException, OSError):
            raise CompareError(f"run {run_id} logged no config/config.yaml: its split "
                               "cannot be rebuilt to evaluate the other side") from None
        cfg = OmegaConf.load(path)
    register_resolvers(Path.cwd())
    logged_root = client.get_run(run_id).data.params.get("data.root")  # resolved then
    cfg.data.root = logged_root or cfg.data.root
    cfg.data.download, cfg.data.cache_dir = False, None
    return cfg


def evaluate_on_run_split(model_uri: str, reference_run: str, client: mlflow.MlflowClient,
                          metric: str) -> dict[str, float]:
    """Per-image ``metric`` of the model at ``model_uri`` on the test split of
    ``reference_run`` (its data, split and eval settings), as its evaluation scored them."""
    from segkit.console import native_startup
    from segkit.data import prepare
    from segkit.evaluation import as_predictor, evaluate
    from segkit.experiment import load_for_evaluation

    cfg = _run_config(reference_run, client)
    log.info("evaluating %s on the test split of run %s", model_uri, reference_run)
    with native_startup(False):
        model = load_for_evaluation(model_uri)
    data = prepare(cfg.data, cfg.split, image_size=as_predictor(model).input_size)
    ev = cfg.eval
    result = evaluate(model, data.images["test"], data.masks["test"], data.names("test"),
                      split=f"{data.split.name}/test", threshold=ev.threshold,
                      batch_size=ev.batch_size, bins=ev.bins, tta=ev.tta)
    return {row["name"]: float(row[metric]) for row in result.per_image()}


def _refs(spec: str, client: mlflow.MlflowClient) -> list[tuple[str, str | None]]:
    refs = [(ref.strip(), _run_id(ref.strip(), client)) for ref in spec.split(",")
            if ref.strip()]
    if not refs:
        raise CompareError(f"{spec!r}: give a run id or a model URI")
    return refs


def read_sides(spec_a: str, spec_b: str, client: mlflow.MlflowClient,
               metric: str) -> tuple[Side, Side]:
    """Both sides' per-image scores: logged ones where the runs have them; the others'
    models evaluated on the test split of the first run (B's first, else A's) that has
    them. CompareError when no run of either side has per-image scores."""
    sides = [_refs(spec_a, client), _refs(spec_b, client)]
    logged = [[_per_image(run_id, client, metric) for _, run_id in refs] for refs in sides]
    reference = next((run_id for k in (1, 0) for (_, run_id), sc in zip(sides[k], logged[k],
                                                                          strict=True)
                      if sc is not None), None)
    out = []
    for spec, refs, scores in zip((spec_a, spec_b), sides, logged, strict=True):
        filled = [sc if sc is not None else
                  _evaluated(ref, run_id, reference, client, metric)
                  for (ref, run_id), sc in zip(refs, scores, strict=True)]
        out.append(_side(spec, tuple(run_id or ref for ref, run_id in refs), filled))
    return out[0], out[1]


def _evaluated(ref: str, run_id: str | None, reference: str | None,
               client: mlflow.MlflowClient, metric: str) -> dict[str, float]:
    model_uri = _model_uri(ref, run_id, client)
    if reference is None:
        raise CompareError(
            f"{ref}: no per-image scores ({PER_IMAGE}) on either side to take the test "
            f"images from: evaluate one first: python run.py task=evaluate "
            f"model_uri={model_uri}")
    return evaluate_on_run_split(model_uri, reference, client, metric)


def _side(spec: str, run_ids: tuple[str, ...], runs: list) -> Side:
    """A side from its runs' per-image scores (a group's must share their images: they are
    averaged image by image)."""
    names = set(runs[0])
    for run_id, scores in zip(run_ids[1:], runs[1:], strict=True):
        if set(scores) != names:
            raise CompareError(f"group {spec}: run {run_id} was scored on other images than "
                               f"{run_ids[0]}")
    mean = {n: float(np.mean([r[n] for r in runs])) for n in sorted(names)}
    return Side(spec if len(run_ids) > 1 else run_ids[0], run_ids, mean)


def check_same_images(a: Side, b: Side) -> list[str]:
    """The image names both sides scored; CompareError naming the difference otherwise."""
    only_a, only_b = sorted(set(a.scores) - set(b.scores)), sorted(set(b.scores) - set(a.scores))
    if only_a or only_b:
        raise CompareError(f"the two sides were scored on different test images: "
                           f"{len(only_a)} only in A (e.g. {only_a[:3]}), {len(only_b)} only "
                           f"in B (e.g. {only_b[:3]}): compare runs of the same split")
    return sorted(a.scores)


def format_table(result: Paired, a: Side, b: Side, metric: str) -> str:
    rows = [("A", a.label), ("B", b.label), ("images", str(result.n)),
            (f"mean {metric} A", f"{result.mean_a:.4f}"),
            (f"mean {metric} B", f"{result.mean_b:.4f}"),
            ("B - A", f"{result.mean_diff:+.4f}  (95% bootstrap interval "
                      f"{result.ci_low:+.4f} .. {result.ci_high:+.4f})"),
            ("Wilcoxon p", f"{result.p_value:.3g}"),
            ("B wins / ties / losses", f"{result.wins} / {result.ties} / {result.losses}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def compare(spec_a: str, spec_b: str, *, metric: str = "dice", tracking_uri: str,
            output: Path, seed: int = 0, draws: int = DRAWS,
            experiment: str = "segkit-compare") -> tuple[Paired, str, tuple[Side, Side]]:
    """Compare, write ``output``/{comparison.json, comparison.md, paired_scores.csv,
    paired.png}, log them as a run of ``experiment``; return the result, that run's id and
    the two sides."""
    if metric not in METRICS:
        raise CompareError(f"--metric {metric}: use one of {', '.join(METRICS)}")
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    a, b = read_sides(spec_a, spec_b, client, metric)
    names = check_same_images(a, b)
    va, vb = (np.array([s.scores[n] for n in names]) for s in (a, b))
    result = paired_comparison(va, vb, draws=draws, seed=seed)
    table = format_table(result, a, b, metric)
    output.mkdir(parents=True, exist_ok=True)
    write_text(output / "comparison.json", json.dumps(
        {"a": asdict(a) | {"scores": None}, "b": asdict(b) | {"scores": None},
         "metric": metric, "seed": seed, "draws": draws, **asdict(result)}, indent=2))
    write_text(output / "comparison.md", f"# segkit compare ({metric})\n\n```\n{table}\n```\n\n"
                                         "![paired scores](paired.png)\n")
    rows = "".join(f"{n},{x!r},{y!r},{y - x!r}\n" for n, x, y in zip(names, va, vb, strict=True))
    write_text(output / "paired_scores.csv", f"name,{metric}_a,{metric}_b,difference\n{rows}")
    plots.plot_paired(va, vb, ("A", "B"), metric, output / "paired.png")
    run_id = _log(a, b, result, metric, output, setup_experiment(tracking_uri, experiment))
    return result, run_id, (a, b)


def _log(a: Side, b: Side, result: Paired, metric: str, output: Path,
         experiment_id: str) -> str:
    run_tags = {"segkit.compare.a": ",".join(a.run_ids), "segkit.compare.b": ",".join(b.run_ids),
                "segkit.compare.metric": metric, tag.TASK: "compare"}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"compare {metric}",
                          tags=run_tags) as run:
        mlflow.log_metrics({k: float(v) for k, v in asdict(result).items()
                            if np.isfinite(float(v))})
        mlflow.log_artifacts(str(output), "comparison")
        return str(run.info.run_id)
