"""Segment new images with a saved or registered model, each at its own resolution.

Images are read and resized to the model's input size exactly as training read them
(``segkit.data.dataset.load_image``), predicted in batches, and each probability map is
resized back to its image's own size (``segkit.evaluation.resize_probs``) and thresholded.
Every output is written to a temporary name in the output folder and renamed into place.

TensorFlow, Keras and MLflow are imported only inside the functions that need them, so bad
arguments or a missing input fail in well under a second.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from segkit.data.dataset import (
    IMAGE_EXTENSIONS,
    DataError,
    Sample,
    check_sizes,
    describe_unreadable,
    load_image,
)
from segkit.errors import SegkitError
from segkit.fileio import atomic_path, write_text
from segkit.formats import format_of
from segkit.metric_names import internal
from segkit.runtimes import MODEL_FORMS, is_mlflow_uri

if TYPE_CHECKING:
    import keras

    from segkit.runtimes import Predictor

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
PROBABILITY_FORMATS = ("none", "8", "16")
TABLE_KEYS = ("mdice", "miou", "pixel_accuracy", "pixel_dice", "pixel_iou", "precision",
              "recall", "specificity", "auc")
METRICS_FILE = "metrics.json"
# The gallery's high-contrast outline colour for a prediction (segkit.plots.PRED_COLOR):
# magenta stands out on red mucosa, where a red tint did not.
OVERLAY_TINT = (255, 0, 255)  # predicted region: 25% magenta
OVERLAY_ALPHA = 0.25
OVERLAY_EDGE = (255, 0, 255)  # its contour: magenta
# What a broken, truncated or hostile image file raises in Pillow (PNG chunk errors are
# SyntaxError), and what a full disk raises while writing.
_FILE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class PredictError(SegkitError):
    """A model that cannot be used, no inputs, or a bad option: nothing can be predicted."""


@dataclass
class Summary:
    """What ``predict_files`` did with each input."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason)

    def line(self) -> str:
        return f"done {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)}"

    def lines(self) -> list[str]:
        """The summary line, then one ``failed: <path>: <reason>`` line per failure."""
        return [self.line(), *(f"failed: {path}: {reason}" for path, reason in self.failed)]


@dataclass(frozen=True)
class _Job:
    """One input to predict and the output files it will get."""

    path: Path
    outputs: dict[str, Path]


# ---------------------------------------------------------------- model and threshold


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the project-style store ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd()}/mlflow.db"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _check_store(tracking_uri: str) -> None:
    """A local sqlite store must exist: MLflow would otherwise create an empty one."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():
            raise PredictError(f"tracking store {tracking_uri} does not exist: point "
                               "--tracking-uri or MLFLOW_TRACKING_URI at the store holding "
                               "the model")


def model_size(model: keras.Model) -> int:
    """The side of the model's square RGB input; PredictError for any other model."""
    shape, out = model.input_shape, model.output_shape
    if not (isinstance(shape, tuple) and len(shape) == 4 and shape[3] == 3
            and shape[1] is not None and shape[1] == shape[2]):
        raise PredictError(f"model input shape {shape}: expected one square RGB input "
                           "(None, size, size, 3)")
    if not (isinstance(out, tuple) and len(out) == 4 and out[3] == 1):
        raise PredictError(f"model output shape {out}: expected one probability map "
                           "(None, size, size, 1)")
    return int(shape[1])


def _check_model_file(path: Path, uri: str) -> None:
    """A local model must exist, and a ``.keras`` file must be a zip archive (Keras would
    say "File not found" of one that exists but is not)."""
    if not path.is_file():
        raise PredictError(f"model {uri!r}: no such file; give {MODEL_FORMS}")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        what = "is empty (0 bytes)" if path.stat().st_size == 0 else "is not a zip archive"
        raise PredictError(f"model {uri!r} is not a Keras archive: the file {what}, and a "
                           ".keras file is a zip written by model.save(); give "
                           f"{MODEL_FORMS}")


def check_model(uri: str, tracking_uri: str | None = None) -> None:
    """What can be checked before a model loads (TensorFlow starts): an MLflow URI's local
    store exists (opened at ``tracking_uri``, default ``default_tracking_uri()``), a model
    file exists and a ``.keras`` file is a zip archive. PredictError naming ``uri``."""
    if is_mlflow_uri(uri):
        import mlflow

        from segkit.tracking import open_store

        tracking_uri = tracking_uri or default_tracking_uri()
        _check_store(tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        open_store(tracking_uri)  # a store that a training run is creating: wait for it
    elif not is_exported(uri):  # an export is checked by the runtime that opens it
        _check_model_file(Path(uri).expanduser(), uri)


def load_model(uri: str, tracking_uri: str | None = None) -> keras.Model:
    """Load a local ``.keras`` file, or a model from MLflow at ``tracking_uri`` (default:
    ``default_tracking_uri()``), without running code in it (``safe_mode``). Raises
    PredictError naming ``uri`` and the accepted forms."""
    from segkit.runtimes import ModelError, load_keras

    check_model(uri, tracking_uri)
    try:
        model = load_keras(uri)
    except ModelError as exc:
        raise PredictError(str(exc)) from None
    model_size(model)
    return model


def open_models(uris: Sequence[str], runtime: str | None = None,
                tracking_uri: str | None = None) -> Predictor:
    """The predictor of ``segkit predict``: the model at ``uris[0]`` on ``runtime`` (None: the
    runtime that reads it as it is, see ``segkit.ensemble.default_runtime``), or the
    ensemble of all ``uris`` (the mean of their probabilities)."""
    from segkit.ensemble import open_models as open_all
    from segkit.runtimes import check_runtime

    if runtime is not None:
        check_runtime(runtime)
    for uri in uris:
        check_model(uri, tracking_uri)
    return open_all(uris, runtime, tracking_uri or default_tracking_uri())


@dataclass(frozen=True)
class Source:
    """What a model's training run says about using it: the threshold it chose on validation
    and whether its evaluation flip-averaged (``eval.tta``); None where it says nothing."""

    threshold: float | None
    tta: bool | None
    why: str  # where they come from (``training run <id>``), or why there is nothing


def _run_source(uri: str) -> Source:
    """``val_best_threshold`` and ``eval.tta`` of the training run behind an MLflow ``uri``."""
    import mlflow

    from segkit.tracking import source_run_id

    run_id = source_run_id(uri)
    if not run_id:
        return Source(None, None, f"{uri} leads to no training run")
    try:
        data = mlflow.MlflowClient().get_run(run_id).data
    except mlflow.exceptions.MlflowException:
        return Source(None, None, f"no training run {run_id} in the store")
    threshold = internal(data.metrics).get("val_best_threshold")
    tta = data.params.get("eval.tta")
    return Source(threshold, None if tta is None else tta.lower() == "true",
                  f"training run {run_id}")


EXPORT_METADATA = "parity.json"  # written beside an export by `segkit export`


def is_exported(uri: str) -> bool:
    """True for an exported model (``segkit export``): .onnx, OpenVINO .xml, SavedModel dir."""
    return not is_mlflow_uri(uri) and format_of(Path(uri).expanduser()) is not None


def _export_source(uri: str, tracking_uri: str | None) -> Source:
    """The source of an exported model, from the ``parity.json`` that ``segkit export``
    wrote beside it: its threshold when recorded, else its source model's training run."""
    path = Path(uri).expanduser()
    meta_file = (path if path.is_dir() else path.parent) / EXPORT_METADATA  # SavedModel: in it
    if not meta_file.is_file():
        return Source(None, None, f"no {EXPORT_METADATA} beside the exported model")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        return Source(None, None, f"{meta_file} unreadable ({_first_line(exc)})")
    source = meta.get("source_model")
    if isinstance(source, str) and is_mlflow_uri(source):
        found = _mlflow_source(source, tracking_uri)
        return Source(meta.get("threshold", found.threshold), found.tta,
                      f"{found.why}, via {meta_file}")
    return Source(meta.get("threshold"), None, f"the export's {meta_file}")


def _mlflow_source(uri: str, tracking_uri: str | None) -> Source:
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return _run_source(uri)


def model_source(uri: str, tracking_uri: str | None = None) -> Source:
    """What is known about using the model at ``uri``: its training run's threshold and TTA
    (MLflow URI), an export's ``parity.json``, or nothing (a .keras file)."""
    if is_mlflow_uri(uri):
        return _mlflow_source(uri, tracking_uri)
    if is_exported(uri):
        return _export_source(uri, tracking_uri)
    return Source(None, None, "a model file carries no training run")


def _sources(uris: str | Sequence[str], tracking_uri: str | None) -> list[Source]:
    return [model_source(u, tracking_uri) for u in ([uris] if isinstance(uris, str) else uris)]


def resolve_threshold(uris: str | Sequence[str], explicit: float | None, *,
                      tracking_uri: str | None = None,
                      sources: Sequence[Source] | None = None) -> tuple[float, str]:
    """The threshold to use and why: ``explicit`` if given; else the ``val_best_threshold``
    that the training run behind the model logged (an ensemble: the mean of its members');
    else 0.5. ``sources``: the models' :func:`model_source`, when already looked up.

    Rounded to 6 decimals, the resolution of ``segkit.evaluation.grid``, so a ``--with-truth``
    score thresholds exactly as the written masks do.
    """
    value: float | None = explicit
    why = "given with --threshold"
    if explicit is None:
        found = list(sources) if sources is not None else _sources(uris, tracking_uri)
        value, why = _combined_threshold(found)
    if value is None:
        return DEFAULT_THRESHOLD, f"default; {why}"
    if not 0.0 <= value <= 1.0:
        raise PredictError(f"threshold {value} ({why}) is outside [0, 1]")
    return round(float(value), 6), why


def _combined_threshold(sources: Sequence[Source]) -> tuple[float | None, str]:
    missing = [s for s in sources if s.threshold is None]
    if missing:
        why = missing[0].why
        if missing[0].why.startswith("training run"):
            why = f"{why} logged no val_best_threshold"
        return None, why
    values = [float(s.threshold) for s in sources if s.threshold is not None]
    if len(values) == 1:
        what = "val_best_threshold of " if sources[0].why.startswith("training run") else ""
        return values[0], f"{what}{sources[0].why}"
    shown = ", ".join(f"{v:g}" for v in values)
    return float(np.mean(values)), f"mean of the {len(values)} models' thresholds ({shown})"


def resolve_tta(uris: str | Sequence[str], explicit: bool | None, *,
                tracking_uri: str | None = None,
                sources: Sequence[Source] | None = None) -> tuple[bool, str]:
    """Whether to flip-average (TTA) and why: ``explicit`` (--tta / --no-tta) if given; else
    what the training run's evaluation did (``eval.tta``), on only when every model's run
    did; else off."""
    if explicit is not None:
        return explicit, f"given with --{'' if explicit else 'no-'}tta"
    found = list(sources) if sources is not None else _sources(uris, tracking_uri)
    unknown = [s for s in found if s.tta is None]
    if unknown:
        return False, f"default; {unknown[0].why} (no eval.tta)"
    used = [bool(s.tta) for s in found]
    if all(used):
        return True, ("eval.tta of " + found[0].why if len(found) == 1
                      else "eval.tta of every model's training run")
    if not any(used):
        return False, ("eval.tta of " + found[0].why if len(found) == 1
                       else "eval.tta of every model's training run")
    return False, "the models' training runs differ in eval.tta: off (--tta turns it on)"


# ---------------------------------------------------------------- inputs


def _is_image(path: Path) -> bool:
    return (path.is_file() and not path.name.startswith(".")
            and path.suffix.lower() in IMAGE_EXTENSIONS)


def _expand(item: str) -> list[Path] | None:
    """The images that one argument names (folder: non-recursive; glob: sorted matches),
    or None when it names nothing that exists and is no pattern."""
    path = Path(item).expanduser()
    if path.is_dir():
        return [p for p in sorted(path.iterdir()) if _is_image(p)]
    if path.is_file():
        return [path]  # named explicitly: always tried, whatever its extension
    if any(ch in item for ch in "*?["):
        return [p for p in map(Path, sorted(glob(os.path.expanduser(item)))) if _is_image(p)]
    return None


def collect_inputs(items: Iterable[str]) -> list[Path]:
    """Image files from files, folders and glob patterns, in argument order, duplicates
    removed. PredictError when an argument does not exist or nothing is found."""
    items = list(items)
    found: list[Path] = []
    seen: set[Path] = set()
    missing = []
    for item in items:
        paths = _expand(item)
        if paths is None:
            missing.append(item)
            continue
        if not paths:
            log.warning("%s: no images (%s)", item, ", ".join(IMAGE_EXTENSIONS))
        for path in paths:
            if (key := path.resolve()) not in seen:
                seen.add(key)
                found.append(path)
    if missing:
        raise PredictError(f"no such file or folder: {', '.join(missing)}")
    if not found:
        raise PredictError(f"no input images found in {' '.join(items) or '(nothing)'}: give "
                           f"image files, folders or glob patterns ({', '.join(IMAGE_EXTENSIONS)})")
    return found


# ---------------------------------------------------------------- outputs


def check_output_dir(out_dir: Path) -> Path:
    """Check that ``out_dir`` can be written: an existing folder by writing (then removing) a
    file in it, a missing one by its nearest existing parent, which must be a writable
    folder; so an unwritable folder fails at once, in one line, rather than once per input
    after every prediction. Creates nothing: a run that fails later leaves no folder."""
    out_dir = Path(out_dir).expanduser()
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError("it is a file, not a folder")
        if out_dir.is_dir():
            with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".segkit-write-check-"):
                pass
            return out_dir
        parent = next(p for p in out_dir.absolute().parents if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(f"its parent {parent} is not a writable folder")
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise PredictError(f"output folder {out_dir} cannot be written ({why}): choose "
                           "another --output, or make it writable") from None
    return out_dir


def output_paths(out_dir: Path, stem: str, probabilities: str = "none",
                 overlay: bool = False) -> dict[str, Path]:
    """kind -> file for one input: ``mask``, and ``prob`` / ``overlay`` when asked for."""
    paths = {"mask": out_dir / f"{stem}_mask.png"}
    if probabilities != "none":
        paths["prob"] = out_dir / f"{stem}_prob.png"
    if overlay:
        paths["overlay"] = out_dir / f"{stem}_overlay.png"
    return paths


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def probability_png(prob: np.ndarray, bits: str) -> Image.Image:
    """round(p * 255) as 8-bit grey, or round(p * 65535) as a 16-bit PNG."""
    top, dtype = (255, np.uint8) if bits == "8" else (65535, np.uint16)
    return Image.fromarray(np.round(np.clip(prob, 0.0, 1.0) * top).astype(dtype))


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion; the image border does not erode."""
    p = np.pad(mask, 1, mode="edge")
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def overlay_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` (uint8 RGB) with ``mask`` tinted magenta and its contour drawn in magenta,
    about 1 pixel wide per 256 pixels of the shorter side."""
    out = image.astype(np.float32)
    out[mask] = (1 - OVERLAY_ALPHA) * out[mask] + OVERLAY_ALPHA * np.array(OVERLAY_TINT)
    out = np.round(out).astype(np.uint8)
    inner = mask
    for _ in range(max(1, round(min(mask.shape) / 256))):
        inner = _erode(inner)
    out[mask & ~inner] = OVERLAY_EDGE
    return out


def _render(job: _Job, prob: np.ndarray, threshold: float,
            probabilities: str) -> dict[str, Image.Image]:
    """The output images of one input from its probability map at its own resolution."""
    mask = prob >= threshold
    images = {"mask": Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))}
    if "prob" in job.outputs:
        images["prob"] = probability_png(prob, probabilities)
    if "overlay" in job.outputs:
        images["overlay"] = Image.fromarray(overlay_image(load_image(job.path), mask))
    return images


# ---------------------------------------------------------------- prediction


def _plan(paths: Sequence[Path], out_dir: Path, probabilities: str, overlay: bool,
          overwrite: bool, summary: Summary) -> list[_Job]:
    """Jobs for the inputs to predict; stem clashes fail, inputs with outputs are skipped."""
    owners: dict[str, Path] = {}
    jobs = []
    for path in paths:
        if (first := owners.setdefault(path.stem, path)) is not path:
            summary.failed.append((path, f"same name as {first} (stem {path.stem!r}): its "
                                         "outputs would overwrite the other's; rename one"))
            continue
        outputs = output_paths(out_dir, path.stem, probabilities, overlay)
        existing = [p.name for p in outputs.values() if p.exists()]
        if existing and not overwrite:
            log.info("skipped %s: %s exists (--overwrite replaces it)", path, existing[0])
            summary.skipped.append(path)
            continue
        jobs.append(_Job(path, outputs))
    return jobs


def _read(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image at model size (uint8 RGB) and its own (height, width)."""
    with Image.open(path) as im:
        width, height = im.size
    return load_image(path, size), (height, width)


def _try_read(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]] | str:
    try:
        return _read(path, size)
    except _FILE_ERRORS as exc:
        empty = describe_unreadable(path, exc)
        return f"the image {empty}" if empty.startswith("is empty") else _first_line(exc)


def _chunks(jobs: Sequence[_Job], size: int) -> Iterator[Sequence[_Job]]:
    for start in range(0, len(jobs), size):
        yield jobs[start:start + size]


@dataclass(frozen=True)
class _Settings:
    """How every batch is predicted and written."""

    threshold: float
    probabilities: str
    tta: bool


def _predict_batch(predictor: Predictor, jobs: Sequence[_Job], settings: _Settings,
                   pool: ThreadPoolExecutor, summary: Summary) -> None:
    """Read, predict and write one batch; an unreadable file fails alone."""
    from segkit.evaluation import predict_probs, resize_probs

    size = predictor.input_size

    read = list(pool.map(lambda job: _try_read(job.path, size), jobs))
    ok = []
    for job, result in zip(jobs, read, strict=True):
        if isinstance(result, str):
            summary.failed.append((job.path, result))
        else:
            ok.append((job, *result))
    if not ok:
        return
    probs = predict_probs(predictor, np.stack([image for _, image, _ in ok]), settings.tta)
    for (job, _, shape), prob in zip(ok, probs, strict=True):
        try:
            images = _render(job, resize_probs(prob, shape), settings.threshold,
                             settings.probabilities)
            for kind, image in images.items():
                save_png(image, job.outputs[kind])
        except _FILE_ERRORS as exc:
            summary.failed.append((job.path, _first_line(exc)))
        else:
            summary.done.append(job.path)


def predict_files(model: Predictor | keras.Model, paths: Sequence[Path], out_dir: Path, *,
                  threshold: float, batch_size: int = 8, probabilities: str = "none",
                  overlay: bool = False, overwrite: bool = False, progress: bool = True,
                  tta: bool = False) -> Summary:
    """Write ``<stem>_mask.png`` (0/255 at the input's own size) for every input, plus
    ``<stem>_prob.png`` (``probabilities`` = "8" or "16" bits) and ``<stem>_overlay.png``
    when asked. Inputs whose outputs exist are skipped unless ``overwrite``. ``model``: a
    predictor of any runtime (``segkit.runtimes``), an ensemble or a Keras model; ``tta``:
    flip averaging (``segkit.evaluation.predict_probs``)."""
    from segkit.evaluation import as_predictor

    if probabilities not in PROBABILITY_FORMATS:
        raise PredictError(f"probabilities={probabilities!r}: use one of {PROBABILITY_FORMATS}")
    if batch_size < 1:
        raise PredictError(f"batch size {batch_size}: must be at least 1")
    predictor = as_predictor(model)
    settings = _Settings(threshold, probabilities, tta)
    out_dir = check_output_dir(out_dir)
    summary = Summary()
    jobs = _plan(paths, out_dir, probabilities, overlay, overwrite, summary)
    with (tqdm(total=len(jobs), unit="img", desc="predict", disable=not progress) as bar,
          ThreadPoolExecutor(max_workers=2) as pool):  # Pillow decodes without the GIL
        for batch in _chunks(jobs, batch_size):
            _predict_batch(predictor, batch, settings, pool, summary)
            bar.update(len(batch))
    return summary


# ---------------------------------------------------------------- scoring against masks


def _masks_by_stem(mask_dir: Path) -> dict[str, list[Path]]:
    if not mask_dir.is_dir():
        raise PredictError(f"mask folder {mask_dir} does not exist")
    masks: dict[str, list[Path]] = {}
    for path in sorted(mask_dir.iterdir()):
        if _is_image(path):
            masks.setdefault(path.stem, []).append(path)
    return masks


def _pair_masks(paths: Sequence[Path], mask_dir: Path) -> tuple[list[Sample], list[str]]:
    """Samples for the inputs with exactly one readable mask of their size; the rest, why."""
    masks = _masks_by_stem(mask_dir)
    samples, unscored = [], []
    for path in paths:
        found = masks.get(path.stem, [])
        if len(found) != 1:
            names = ", ".join(p.name for p in found)
            unscored.append(f"{path} ({f'two masks: {names}' if found else 'no mask'})")
            continue
        sample = Sample(path.stem, path, found[0])
        try:
            check_sizes([sample])
        except DataError as exc:
            unscored.append(f"{path} ({exc})")
            continue
        samples.append(sample)
    return samples, unscored


def score_with_truth(model: Predictor | keras.Model, paths: Sequence[Path], mask_dir: Path,
                     out_dir: Path, *, threshold: float, batch_size: int = 8,
                     overwrite: bool = False, model_uri: str | Sequence[str] | None = None,
                     tta: bool = False) -> dict:
    """Score ``paths`` against the masks of the same stems in ``mask_dir``, each at the
    input's own resolution, with ``segkit.evaluation.evaluate`` (``tta``: flip averaging);
    write ``metrics.json`` to ``out_dir`` (kept if it exists, unless ``overwrite``) and
    return what it holds."""
    from segkit.evaluation import as_predictor, evaluate

    predictor = as_predictor(model)

    mask_dir = Path(mask_dir)
    samples, unscored = _pair_masks(paths, mask_dir)
    if unscored:
        log.warning("left out of scoring: %d input(s): %s", len(unscored), "; ".join(unscored))
    if not samples:
        raise PredictError(f"no input has a mask in {mask_dir} (same stem, any of "
                           f"{', '.join(IMAGE_EXTENSIONS)})")
    size = predictor.input_size
    images = np.stack([load_image(s.image, size) for s in samples])
    # evaluate() reads only ``originals`` for the truth, so the model-size masks are a
    # zero-memory placeholder. The images are predicted a second time here: predict_files
    # keeps no probability maps, and one more forward pass is cheap next to decoding.
    placeholder = np.broadcast_to(np.zeros((1, 1, 1, 1), np.uint8), (len(samples), size, size, 1))
    result = evaluate(predictor, images, placeholder, [s.name for s in samples],
                      split=f"inputs scored against {mask_dir}", threshold=threshold,
                      batch_size=batch_size, originals=samples, tta=tta)
    report = {"model": model_uri, "runtime": predictor.runtime, "tta": tta,
              "threshold": threshold, "mask_dir": str(mask_dir),
              "scored": len(samples), "unscored": unscored, "metrics": _json_metrics(result),
              "per_image": result.per_image()}
    target = Path(out_dir) / METRICS_FILE
    if target.exists() and not overwrite:
        log.warning("%s exists and was kept (--overwrite replaces it)", target)
    else:
        write_text(target, json.dumps(report, indent=2, default=float))
    return report


def _json_metrics(result) -> dict[str, float | None]:
    """The metrics for metrics.json: an undefined one (NaN, e.g. recall and AUC when no mask
    has a foreground pixel) is null, which JSON has, rather than NaN, which it has not."""
    return {k: float(v) if math.isfinite(v) else None for k, v in result.metrics.items()}


def format_table(metrics: dict[str, float | None]) -> str:
    """The headline metrics, one ``name  value`` row each (undefined ones say so)."""
    width = max(map(len, TABLE_KEYS))
    rows = [f"{'metric':<{width}}  value"]
    for key in (k for k in TABLE_KEYS if k in metrics):
        value = metrics[key]
        shown = f"{value:.4f}" if value is not None and math.isfinite(value) else "undefined"
        rows.append(f"{key:<{width}}  {shown}")
    return "\n".join(rows)
