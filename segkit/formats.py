"""Exported model formats: which format a file is, and writing a Keras model in one.

``onnx`` (one ``.onnx`` file, through tf2onnx), ``openvino`` (an ``.xml`` graph with its
``.bin`` weights beside it) and ``saved_model`` (a TensorFlow SavedModel folder), each written
by Keras 3's own ``model.export(path, format=...)``. The optional packages (the ``deploy``
extra) are imported only inside the functions that need them: a core install imports this
module, and a missing package is one ConfigError line naming the extra.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from segkit.errors import ConfigError
from segkit.precision import float32_copy

if TYPE_CHECKING:
    import keras

FORMATS = ("onnx", "openvino", "saved_model")
DEPLOY_EXTRA = "pip install -e '.[deploy]'"
# format -> the Keras export format name, and the Python packages it needs
_KERAS_FORMAT = {"onnx": "onnx", "openvino": "openvino", "saved_model": "tf_saved_model"}
_NEEDS = {"onnx": ("onnx", "tf2onnx"), "openvino": ("openvino",), "saved_model": ()}
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "saved_model": ""}


def require(module: str, what: str) -> object:
    """``module`` imported, or ConfigError: ``what`` needs it, install the deploy extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs the Python package {module!r}, which is not "
                          f"installed ({type(exc).__name__}): {DEPLOY_EXTRA}") from None


# what exporting to a format and checking its parity need: the exporter and the runtime
_INSTALLED = {"onnx": ("onnx", "tf2onnx", "onnxruntime"), "openvino": ("openvino",),
              "saved_model": ()}


def check_installed(fmt: str, what: str) -> None:
    """ConfigError naming the deploy extra when a package that ``fmt`` needs is missing.
    Looked up, not imported: tf2onnx would start TensorFlow."""
    for module in _INSTALLED[fmt]:
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{what} needs the Python package {module!r}, which is not "
                              f"installed: {DEPLOY_EXTRA}")


def check_format(fmt: str, key: str = "--format") -> str:
    """``fmt`` if it is a known format, else ConfigError naming ``key``."""
    if fmt not in FORMATS:
        raise ConfigError(f"{key} {fmt!r} is unknown: use one of {', '.join(FORMATS)}")
    return fmt


def format_of(path: Path | str) -> str | None:
    """The exported format ``path`` holds (by its name, or a SavedModel folder's
    saved_model.pb), or None for anything else (a .keras file, an MLflow URI)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() == ".xml":
        return "openvino"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "saved_model"
    return None


def output_path(path: Path | str, fmt: str) -> Path:
    """``path`` with the suffix that ``fmt`` requires (``.onnx``, ``.xml``) when it lacks it."""
    path = Path(path)
    suffix = SUFFIX[fmt]
    return path if not suffix or path.suffix.lower() == suffix else path.with_suffix(suffix)


def files_of(path: Path, fmt: str) -> list[Path]:
    """The files an export at ``path`` consists of (OpenVINO: the .xml and its .bin)."""
    return [path, path.with_suffix(".bin")] if fmt == "openvino" else [path]


def write(model: keras.Model, fmt: str, path: Path | str) -> Path:
    """Export ``model``, computing in float32, as ``fmt`` to ``path`` (replacing what is
    there) with Keras' ``model.export``; return the path written."""
    check_format(fmt)
    for module in _NEEDS[fmt]:
        require(module, f"exporting to {fmt}")
    path = output_path(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in files_of(path, fmt):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    model = float32_copy(model)  # a mixed-precision graph does not convert (see there)
    _call_once(model)
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its per-step INFO lines
    with warnings.catch_warnings():  # tf2onnx's probe of np.object, not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format=_KERAS_FORMAT[fmt], verbose=False)
    return path


def _call_once(model: keras.Model) -> None:
    """Run ``model`` on one zero image: Keras exports only a model that has been called
    (a freshly loaded one has not)."""
    import numpy as np

    shape = tuple(1 if d is None else d for d in model.input_shape)
    model(np.zeros(shape, np.float32), training=False)
