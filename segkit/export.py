"""``segkit export``: write a trained model as ONNX, OpenVINO IR or a SavedModel, optionally
int8-quantized, and prove it computes what TensorFlow computes.

After the export, the same real images (the test split by default) go through the Keras
model on TensorFlow and through the export on its runtime; the largest absolute probability
difference and the Dice between the two runtimes' masks are printed and written to
``parity.json`` beside the export (with the source model and threshold, which ``segkit
predict`` reads). An export that misses the limits is removed and the command fails (exit 1).
An int8 export also reports the held-out mDice of both and the speed-up over float32.
Exports of an MLflow model are logged as artifacts of its training run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segkit.errors import ConfigError, RunFailed
from segkit.fileio import write_text
from segkit.formats import check_format, check_installed, files_of, output_path, write
from segkit.quantize import check_quantize, onnx_to_openvino, quantize_onnx
from segkit.runtimes import KerasPredictor, Predictor, open_exported

if TYPE_CHECKING:
    import keras

    from segkit.data.dataset import Sample

log = logging.getLogger(__name__)

PARITY_FILE = "parity.json"  # beside the export: its file(s) or SavedModel folder
RUNTIME_OF = {"onnx": "onnx", "openvino": "openvino", "saved_model": "tf"}


class ParityFailed(RunFailed):
    """The export ran but its outputs differ from TensorFlow's past the limits: exit 1."""


@dataclass(frozen=True)
class Limits:
    """The parity an export must reach: largest probability difference, and the Dice
    between the masks of TensorFlow and of the export (pooled over all parity images)."""

    max_diff: float
    min_dice: float

    def check(self) -> None:
        if not self.max_diff >= 0:
            raise ConfigError(f"--max-diff {self.max_diff} must be >= 0")
        if not 0 <= self.min_dice <= 1:
            raise ConfigError(f"--min-dice {self.min_dice} must be in [0, 1]")


FLOAT32_LIMITS = Limits(max_diff=1e-3, min_dice=0.999)
INT8_LIMITS = Limits(max_diff=0.1, min_dice=0.9)  # int8 moves probabilities a little


def default_limits(quantize: str | None) -> Limits:
    return INT8_LIMITS if quantize else FLOAT32_LIMITS


# ---------------------------------------------------------------- figures


def probabilities(predictor: Predictor, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """(N, H, W) float32 probabilities of ``images`` (float32 or uint8 NHWC, RGB 0-255)."""
    out = [predictor(np.asarray(images[i:i + batch], np.float32))[..., 0]
           for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32)


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between two boolean mask stacks, pooled over all pixels (1.0 when both empty)."""
    both, total = np.count_nonzero(a & b), np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * both / total


def mean_dice(probs: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """mDice (per-image Dice, averaged) of ``probs >= threshold`` against ``truth``."""
    from segkit.metrics import confusion_counts, per_image_scores

    counts = confusion_counts(probs >= threshold, truth.reshape(probs.shape) > 0)
    return float(per_image_scores(counts)["dice"].mean())


def parity(reference: np.ndarray, exported: np.ndarray, threshold: float) -> dict:
    """How far the export's probabilities are from TensorFlow's, and its masks."""
    diff = np.abs(reference - exported)
    return {"images": len(reference), "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "mask_dice": mask_dice(reference >= threshold, exported >= threshold)}


def throughput(predictor: Predictor, images: np.ndarray, batch: int = 8,
               seconds: float = 2.0) -> float:
    """Images per second of ``predictor`` on batches of ``batch`` (after one warm-up)."""
    x = np.asarray(np.resize(images, (batch, *images.shape[1:])), np.float32)
    predictor(x)
    done, start = 0, time.perf_counter()
    while done < 3 * batch or time.perf_counter() - start < seconds:
        predictor(x)
        done += batch
    return done / (time.perf_counter() - start)


# ---------------------------------------------------------------- export


@dataclass
class Exported:
    """What ``export_model`` wrote and measured."""

    path: Path
    format: str
    runtime: str
    quantize: str | None
    parity: dict
    limits: Limits
    held_out: dict | None = None  # int8: mDice and img/s of float32 and int8
    passed: bool = False

    def lines(self) -> list[str]:
        p = self.parity
        out = [f"exported {self.format}{' int8' if self.quantize else ''} to {self.path}",
               f"parity on {p['images']} image(s), {RUNTIME_OF[self.format]} vs tf: max |diff| "
               f"{p['max_abs_diff']:.2e} (limit {self.limits.max_diff:g}), mask Dice "
               f"{p['mask_dice']:.5f} (limit {self.limits.min_dice:g}): "
               f"{'passed' if self.passed else 'FAILED'}"]
        if h := self.held_out:
            out.append(f"held-out mDice on {h['images']} test image(s): float32 "
                       f"{h['mdice_float32']:.4f}, int8 {h['mdice_int8']:.4f} (drop "
                       f"{h['mdice_drop']:+.4f}); {h['runtime']} batch 8: float32 "
                       f"{h['float32_img_s']:.1f} img/s, int8 {h['int8_img_s']:.1f} img/s "
                       f"(x{h['speedup']:.2f})")
        return out


def _write_int8(model: keras.Model, fmt: str, path: Path, calibration: np.ndarray) -> Path:
    """The int8 export: float32 ONNX, quantized (QDQ), converted for OpenVINO if asked."""
    with tempfile.TemporaryDirectory(prefix="segkit-export-") as tmp:
        fp32 = write(model, "onnx", Path(tmp) / "float32.onnx")
        if fmt == "onnx":
            return quantize_onnx(fp32, path, calibration)
        qdq = quantize_onnx(fp32, Path(tmp) / "int8.onnx", calibration)
        return onnx_to_openvino(qdq, path)


def _held_out(reference: Predictor, exported: Predictor, fp32: Predictor,
              held_out: tuple[np.ndarray, np.ndarray], threshold: float) -> dict:
    """int8 against float32: held-out mDice of each, and img/s of each on one runtime."""
    images, masks = held_out
    tf_dice = mean_dice(probabilities(reference, images), masks, threshold)
    q_dice = mean_dice(probabilities(exported, images), masks, threshold)
    fast, slow = throughput(exported, images), throughput(fp32, images)
    return {"images": len(images), "mdice_float32": tf_dice, "mdice_int8": q_dice,
            "mdice_drop": tf_dice - q_dice, "runtime": exported.runtime,
            "float32_img_s": slow, "int8_img_s": fast, "speedup": fast / slow}


def _remove(path: Path, fmt: str) -> None:
    for f in files_of(path, fmt):
        if f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        elif f.exists():
            f.unlink()


def parity_file(path: Path, fmt: str) -> Path:
    """Where the parity record of an export at ``path`` goes (segkit predict reads it):
    beside it, in the same folder (one export per folder), kept when the export is removed."""
    return path.parent / PARITY_FILE


def export_model(model: keras.Model, fmt: str, output: Path | str, *, images: np.ndarray,
                 threshold: float = 0.5, quantize: str | None = None,
                 calibration: np.ndarray | None = None,
                 held_out: tuple[np.ndarray, np.ndarray] | None = None,
                 limits: Limits | None = None, record: dict | None = None) -> Exported:
    """Export ``model`` as ``fmt`` to ``output``, check parity on ``images`` (float32 NHWC RGB
    0-255 at the model's size) and write ``parity.json`` (plus ``record``'s keys) beside it.
    int8: ``calibration`` images calibrate it; ``held_out`` (images, masks) scores it.
    ParityFailed, with the export removed, when it misses ``limits``."""
    check_format(fmt)
    check_quantize(quantize, fmt, 1 if calibration is None else len(calibration))
    limits = limits or default_limits(quantize)
    path = output_path(Path(output), fmt)
    reference = KerasPredictor(model)
    model = reference.model  # its float32 copy: what write() would make again otherwise
    if quantize:
        if calibration is None:
            raise ConfigError("--quantize int8 needs calibration images")
        path.parent.mkdir(parents=True, exist_ok=True)
        path = _write_int8(model, fmt, path, calibration)
    else:
        path = write(model, fmt, path)
    exported = open_exported(path, RUNTIME_OF[fmt])
    result = Exported(path, fmt, exported.runtime, quantize,
                      parity(probabilities(reference, images),
                             probabilities(exported, images), threshold), limits)
    p = result.parity
    result.passed = bool(p["max_abs_diff"] <= limits.max_diff
                         and p["mask_dice"] >= limits.min_dice)
    if quantize and held_out is not None and result.passed:
        with tempfile.TemporaryDirectory(prefix="segkit-fp32-") as tmp:
            fp32 = open_exported(write(model, "onnx", Path(tmp) / "f.onnx"), exported.runtime)
            result.held_out = _held_out(reference, exported, fp32, held_out, threshold)
    _record(result, threshold, record or {})
    return result


def _record(result: Exported, threshold: float, record: dict) -> None:
    """Write ``parity.json`` beside the export; remove the export and raise ParityFailed
    when it missed its limits."""
    path, fmt, p, limits = result.path, result.format, result.parity, result.limits
    meta = {**record, "format": fmt, "file": path.name, "runtime": result.runtime,
            "quantize": result.quantize, "parity_threshold": threshold, "parity": p,
            "limits": asdict(limits), "passed": result.passed, "held_out": result.held_out}
    write_text(parity_file(path, fmt), json.dumps(meta, indent=2))
    if not result.passed:
        _remove(path, fmt)
        raise ParityFailed(f"{fmt} export differs from TensorFlow: max |diff| "
                           f"{p['max_abs_diff']:.2e} (limit {limits.max_diff:g}), mask Dice "
                           f"{p['mask_dice']:.5f} (limit {limits.min_dice:g}); export removed,"
                           f" figures in {parity_file(path, fmt)}")


# ---------------------------------------------------------------- images


def data_root(root: Path | str | None) -> Path:
    """The dataset folder for parity and calibration: ``root``, else $SEGKIT_DATA_DIR."""
    text = str(root) if root else os.environ.get("SEGKIT_DATA_DIR")
    if not text or not Path(text).expanduser().is_dir():
        raise ConfigError(f"dataset folder {text or '(none)'} not found: give --data "
                          "DIR (images/ + masks/) or set SEGKIT_DATA_DIR, or give --images")
    return Path(text).expanduser()


def split_samples(root: Path, part: str) -> list[Sample]:
    """The samples of the official split's ``part`` (train | test) of the dataset at ``root``
    (``<root>/splits`` lists, else segkit's packaged Kvasir-SEG lists)."""
    from segkit.data.dataset import discover
    from segkit.data.splits import official_parts

    samples = {s.name: s for s in discover(root)}
    train, test = official_parts("train.txt", "val.txt", list(samples), root)
    return [samples[n] for n in (train if part == "train" else test)]


def load_images(paths: list[Path], size: int) -> np.ndarray:
    """float32 (N, size, size, 3) RGB 0-255, read as training and prediction read them."""
    from segkit.data.dataset import load_image

    return np.stack([load_image(p, size) for p in paths]).astype(np.float32)


def load_masks(samples: list[Sample], size: int) -> np.ndarray:
    from segkit.data.dataset import load_mask

    return np.stack([load_mask(s.mask, size) for s in samples])


def calibration_images(root: Path, n: int, size: int) -> np.ndarray:
    """``n`` training images, a seeded draw (seed 0) from the official train part."""
    train = split_samples(root, "train")
    pick = np.random.default_rng(0).permutation(len(train))[:n]
    return load_images([train[i].image for i in sorted(pick)], size)


@dataclass(frozen=True)
class Request:
    """What ``segkit export`` was asked for (its command-line options)."""

    model: str
    format: str
    output: Path
    quantize: str | None = None
    calibration: int = 64
    parity_images: int = 16
    inputs: tuple[str, ...] = ()  # image files/folders for parity; () = the test split
    data: Path | None = None  # dataset folder; None: $SEGKIT_DATA_DIR
    threshold: float | None = None
    limits: Limits | None = None
    tracking_uri: str | None = None

    def check(self) -> None:
        """ConfigError for any option that cannot work, before a model is loaded."""
        check_format(self.format)
        check_installed(self.format, f"--format {self.format}")
        check_quantize(self.quantize, self.format, self.calibration)
        (self.limits or default_limits(self.quantize)).check()
        if self.parity_images < 1:
            raise ConfigError(f"--parity-images {self.parity_images} must be >= 1")


def _parity_paths(request: Request) -> tuple[list[Path], list[Sample]]:
    """The parity images, and the test samples (with masks) when they come from the split."""
    from segkit.predict import collect_inputs

    if request.inputs:
        return collect_inputs(request.inputs)[:request.parity_images], []
    test = split_samples(data_root(request.data), "test")
    return [s.image for s in test[:request.parity_images]], test


def export_uri(request: Request) -> Exported:
    """``segkit export``: load ``request.model`` (any form ``segkit predict`` takes), export,
    check parity, log to the model's MLflow run when it has one."""
    from segkit import predict

    request.check()
    paths, test = _parity_paths(request)
    if request.quantize and not test:
        test = split_samples(data_root(request.data), "test")
    tracking_uri = request.tracking_uri or predict.default_tracking_uri()
    model = predict.load_model(request.model, tracking_uri)
    size = predict.model_size(model)
    threshold, why = predict.resolve_threshold(request.model, request.threshold,
                                               tracking_uri=tracking_uri)
    record: dict[str, object] = {"source_model": request.model, "threshold_why": why,
              "parity_images": [str(p) for p in paths]}
    if not why.startswith("default"):
        record["threshold"] = threshold  # the model's own: segkit predict uses it
    held_out = calibration = None
    if request.quantize:
        calibration = calibration_images(data_root(request.data), request.calibration, size)
        held_out = (load_images([s.image for s in test], size), load_masks(test, size))
    result = export_model(model, request.format, request.output,
                          images=load_images(paths, size), threshold=threshold,
                          quantize=request.quantize, calibration=calibration,
                          held_out=held_out, limits=request.limits, record=record)
    log_to_run(request.model, result, tracking_uri)
    return result


def log_to_run(uri: str, result: Exported, tracking_uri: str) -> str | None:
    """Log the export and its parity.json to the training run behind an MLflow ``uri``
    (artifacts ``export/<format>[-int8]/``); the run id, or None for a model file."""
    from segkit.predict import is_mlflow_uri

    if not is_mlflow_uri(uri):
        return None
    import mlflow

    from segkit.tracking import source_run_id

    mlflow.set_tracking_uri(tracking_uri)
    run_id = source_run_id(uri)
    if run_id is None:
        log.warning("%s leads to no training run: the export was not logged", uri)
        return None
    folder = f"export/{result.format}{'-int8' if result.quantize else ''}"
    client = mlflow.MlflowClient()
    for f in files_of(result.path, result.format):
        if f.is_dir():
            client.log_artifacts(run_id, str(f), f"{folder}/{f.name}")
        else:
            client.log_artifact(run_id, str(f), folder)
    client.log_artifact(run_id, str(parity_file(result.path, result.format)), folder)
    return run_id


# ---------------------------------------------------------------- at the end of training


@dataclass(frozen=True)
class ExportOptions:
    """The ``export`` config group (conf/export/): what a training run exports at its end."""

    formats: list[str]
    parity_images: int
    max_diff: float
    min_dice: float

    def check(self) -> None:
        """ConfigError naming the ``export.*`` key; a format's packages must be installed."""
        for fmt in self.formats:
            check_format(fmt, "export.formats:")
            check_installed(fmt, f"export.formats={list(self.formats)}")
        if self.parity_images < 1:
            raise ConfigError(f"export.parity_images={self.parity_images} must be >= 1")
        if not self.max_diff >= 0:
            raise ConfigError(f"export.max_diff={self.max_diff} must be >= 0")
        if not 0 <= self.min_dice <= 1:
            raise ConfigError(f"export.min_dice={self.min_dice} must be in [0, 1]")


def export_options(node: object) -> ExportOptions:
    """The checked ``export`` config node (absent: nothing to export)."""
    from segkit.registry import from_mapping, plain

    values = plain(node) if node is not None else {}
    defaults = {"formats": [], "parity_images": 16, "max_diff": FLOAT32_LIMITS.max_diff,
                "min_dice": FLOAT32_LIMITS.min_dice}
    return from_mapping(ExportOptions, {**defaults, **values}, "export")


def export_trained(node: object, model: keras.Model, test_images: np.ndarray, run_dir: Path,
                   *, model_uri: str, threshold: float | None) -> list[Exported]:
    """Export a trained model in each of ``export.formats`` to ``<run_dir>/export/<format>/``
    with parity on the first test images, and log each to the active MLflow run
    (``export/<format>/``). A failed parity removes that export and warns: the run's model
    and evaluation are logged already, and ``segkit export`` can try again."""
    import mlflow

    options = export_options(node)
    images = np.asarray(test_images[:options.parity_images], np.float32)
    done = []
    for fmt in options.formats:
        folder = Path(run_dir) / "export" / fmt
        record: dict[str, object] = {"source_model": model_uri}
        if threshold is not None:
            record["threshold"] = threshold
        try:
            result = export_model(model, fmt, folder / "model", images=images,
                                  threshold=0.5 if threshold is None else threshold,
                                  limits=Limits(options.max_diff, options.min_dice),
                                  record=record)
        except ParityFailed as exc:
            log.warning("export.formats: %s", exc)
            continue
        log.info("%s", "; ".join(result.lines()))
        mlflow.log_artifacts(str(folder), f"export/{fmt}")
        done.append(result)
    return done
