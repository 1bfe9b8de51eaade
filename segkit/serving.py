"""MLflow serving: the trained model as an MLflow ``python_function`` model that segments
encoded images (PNG, JPEG, TIFF, ... as base64 text) the way ``segkit predict`` does.

A training run logs it beside the Keras model as ``runs:/<run_id>/serving`` (see
:func:`log_serving_model`; ``tracking.serving_model``), with the threshold the run chose on
validation and the run's ``eval.tta``. Then::

    mlflow models serve -m runs:/<run_id>/serving --env-manager local -h 127.0.0.1 -p 5001

answers ``POST /invocations`` with ``{"inputs": {"image": [<base64>, ...]}}`` (or
``{"dataframe_records": [{"image": <base64>}, ...]}``), optional ``"params": {"threshold":
0.4, "tta": true, "probabilities": true}``, by ``{"predictions": [{"mask": <base64 PNG>,
"height": ..., "width": ..., "foreground": ..., "threshold": ..., "tta": ...,
"probabilities": <base64 16-bit PNG or "">, "error": ""}, ...]}``: per image, the mask at its
own size, byte for byte what ``segkit predict`` writes (the images go through
:func:`segkit.predict.predict_files`). docs/prediction.md has the full request and response.
"""

from __future__ import annotations

import base64
import binascii
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

if TYPE_CHECKING:
    import keras
    import pandas as pd

NAME = "serving"  # runs:/<run_id>/serving
COLUMNS = ("mask", "probabilities", "height", "width", "foreground", "threshold", "tta",
           "error")


def signature(threshold: float, tta: bool):
    """One string column ``image`` in; one row per image out; the request's ``params``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    out = Schema([ColSpec("string", "mask"), ColSpec("string", "probabilities"),
                  ColSpec("long", "height"), ColSpec("long", "width"),
                  ColSpec("double", "foreground"), ColSpec("double", "threshold"),
                  ColSpec("boolean", "tta"), ColSpec("string", "error")])
    params = ParamSchema([ParamSpec("threshold", "double", float(threshold)),
                          ParamSpec("tta", "boolean", bool(tta)),
                          ParamSpec("probabilities", "boolean", False)])
    return ModelSignature(inputs=Schema([ColSpec("string", "image")]), outputs=out,
                          params=params)


def _decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return b""  # the image reader names it: "the image is empty (0 bytes)"


def _images(model_input: Any) -> list[str]:
    """The base64 strings of a request: a DataFrame column ``image`` (what MLflow's server
    makes of both request forms), a dict with ``image``, or a plain list."""
    if hasattr(model_input, "columns") or isinstance(model_input, dict):
        if "image" not in model_input:
            raise ValueError("the request has no 'image' column: send "
                             '{"inputs": {"image": [<base64 image file>, ...]}}')
        model_input = list(model_input["image"])
    # a cell may hold a list (a dict of lists passed in-process becomes one row)
    return [str(v) for cell in np.atleast_1d(np.asarray(model_input, dtype=object))
            for v in np.atleast_1d(np.asarray(cell, dtype=object))]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else ""


class SegmentationModel(PythonModel):
    """The pyfunc: a Keras model, its threshold and TTA setting (``model_config``)."""

    # Inputs are checked against the explicit signature (base64 strings in a column
    # ``image``), not against type hints of ``predict`` (MLflow's own switch for that).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        import keras

        from segkit.runtimes import KerasPredictor

        path = context.artifacts["keras_model"]
        self.predictor = KerasPredictor(keras.saving.load_model(path, compile=False,
                                                                safe_mode=True))
        config = context.model_config or {}
        self.threshold = float(config.get("threshold", 0.5))
        self.tta = bool(config.get("tta", False))

    def predict(self, context, model_input, params=None):  # no hints: the signature says
        """One row per image of ``model_input`` (see the module's docstring)."""
        params = params or {}
        return segment(self.predictor, _images(model_input),
                       threshold=float(params.get("threshold", self.threshold)),
                       tta=bool(params.get("tta", self.tta)),
                       probabilities=bool(params.get("probabilities", False)))


def segment(predictor: Any, images: Sequence[str], *, threshold: float, tta: bool,
            probabilities: bool) -> pd.DataFrame:
    """Masks (and 16-bit probability maps) of base64-encoded image files, by
    ``segkit.predict.predict_files`` in a temporary folder; an image that cannot be read
    gets its reason in ``error`` and empty outputs, the others are unaffected."""
    import pandas as pd
    from PIL import Image

    from segkit.predict import predict_files

    with tempfile.TemporaryDirectory(prefix="segkit-serving-") as tmp:
        folder = Path(tmp)
        paths = [folder / "in" / f"{i:06d}" for i in range(len(images))]
        (folder / "in").mkdir()
        for path, text in zip(paths, images, strict=True):
            path.write_bytes(_decode(text))
        summary = predict_files(predictor, paths, folder / "out", threshold=threshold,
                                tta=tta, probabilities="16" if probabilities else "none",
                                progress=False)
        errors = {p: why for p, why in summary.failed}
        rows = []
        for path in paths:
            mask_file = folder / "out" / f"{path.stem}_mask.png"
            row: dict[str, Any] = {
                "mask": _b64(mask_file), "height": 0, "width": 0, "foreground": float("nan"),
                "threshold": threshold, "tta": tta, "error": errors.get(path, ""),
                "probabilities": _b64(folder / "out" / f"{path.stem}_prob.png")}
            if mask_file.is_file():
                with Image.open(mask_file) as im:
                    mask = np.asarray(im) > 0
                row.update(height=mask.shape[0], width=mask.shape[1],
                           foreground=float(mask.mean()))
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Without MLflow's advice on logging a Python object (the pickle holds only a reference
    to :class:`SegmentationModel`) and on input examples (one would run the model now)."""
    loggers = [logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.models.signature")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*")
            warnings.filterwarnings("ignore", message=".*input_example.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def log_serving_model(model: keras.Model, threshold: float, tta: bool) -> str:
    """Log ``model`` to the active run as the pyfunc ``serving`` (the Keras file inside it,
    with ``threshold`` and ``tta`` as its defaults); return its model URI."""
    from importlib import metadata

    requirements = [f"{p}=={metadata.version(p)}"
                    for p in ("tensorflow", "keras", "mlflow", "pillow", "pandas")]
    with tempfile.TemporaryDirectory(prefix="segkit-serving-") as tmp, _quiet_mlflow():
        path = Path(tmp) / "model.keras"
        model.save(path)
        info = mlflow.pyfunc.log_model(
            name=NAME, python_model=SegmentationModel(), artifacts={"keras_model": str(path)},
            model_config={"threshold": float(threshold), "tta": bool(tta)},
            signature=signature(threshold, tta), pip_requirements=requirements)
    return str(info.model_uri)
