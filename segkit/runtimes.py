"""Inference runtimes behind one interface: a Predictor maps a float32 NHWC RGB batch in
0-255 (what segkit's models take: their first layer rescales) to float32 (N, H, W, 1)
probabilities, whichever runtime computes them.

- ``tf``: TensorFlow, through Keras (a ``.keras`` file or an MLflow model) or a SavedModel
  folder. Always installed.
- ``onnx``: ONNX Runtime, on an ``.onnx`` file (a Keras model is exported first).
- ``openvino``: OpenVINO, on an ``.xml`` IR or an ``.onnx`` file.

``auto`` takes the fastest runtime installed: openvino, then onnx, then tf. On the project's
2-core CPU (issue 19's probe; BENCHMARKS.md for the measured figures) OpenVINO ran the
reference U-Net at about 2x TensorFlow's speed and ONNX Runtime at about 1.7x: both run a
graph fused and planned ahead for the CPU, where TensorFlow dispatches op by op.

ONNX Runtime and OpenVINO are the optional ``deploy`` extra: they are imported only inside
the functions that need them, and a missing one is one ConfigError line naming the extra.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from segkit.errors import ConfigError, SegkitError
from segkit.formats import DEPLOY_EXTRA, format_of, require, write
from segkit.precision import float32_copy

if TYPE_CHECKING:
    import keras

RUNTIMES = ("tf", "onnx", "openvino")
FASTEST_FIRST = ("openvino", "onnx", "tf")  # what ``auto`` tries, in order
_MODULE = {"tf": "tensorflow", "onnx": "onnxruntime", "openvino": "openvino"}
# the runtimes that can read each exported format
_READS = {"onnx": ("onnx", "openvino"), "openvino": ("openvino",), "saved_model": ("tf",)}
MODEL_FORMS = ("a .keras file, runs:/<run_id>/model, models:/<name>/<version>, "
               "models:/<name>@<alias>, models:/m-<logged model id>, an exported .onnx or "
               "OpenVINO .xml file, or a SavedModel folder")


class ModelError(SegkitError):
    """A model that cannot be opened (missing, corrupt, wrong shape): exit status 2."""


class Predictor(Protocol):
    """float32 NHWC RGB batch in 0-255 -> float32 (N, input_size, input_size, 1)
    probabilities."""

    runtime: str  # "tf" | "onnx" | "openvino"
    input_size: int  # the square side the model takes

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def _first_line(exc: BaseException) -> str:
    # OpenVINO's first line only names its own source file: skip such lines
    text = [t for t in str(exc).strip().splitlines() if t and not t.startswith("Exception from")]
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _square_side(shape: Any, what: str) -> int:
    """The side of a ``(N, S, S, 3)`` input shape; ModelError for any other."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(dims) != 4 or dims[3] != 3 or dims[1] is None or dims[1] != dims[2]:
        raise ModelError(f"{what}: input shape {list(shape)}: expected one square RGB input "
                         "(N, size, size, 3)")
    return int(dims[1])


# ---------------------------------------------------------------- the predictors


@dataclass
class KerasPredictor:
    """TensorFlow through a Keras model, computing in float32 whatever policy it trained
    under (:func:`~segkit.precision.float32_copy`); ``jit_compile`` runs it with XLA."""

    model: keras.Model
    jit_compile: bool = False
    runtime: str = "tf"
    input_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.model = float32_copy(self.model)  # the same probabilities on any machine
        self.input_size = _square_side(self.model.input_shape, self.model.name)
        if self.jit_compile:
            self.model.jit_compile = True

    _batch: int = field(default=0, init=False, repr=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Keras traces its predict function once per input shape: a batch shorter than the
        first one (a split's last batch) is padded to it, so each model traces once. TF
        counts traces per function *code*, across models, and in the second job of a sweep
        the extra traces added up to its "triggered tf.function retracing" warnings."""
        n = len(batch)
        if n < self._batch:
            pad = np.zeros((self._batch - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        self._batch = max(self._batch, n)
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)[:n]


@dataclass
class SavedModelPredictor:
    """TensorFlow through a SavedModel folder's ``serve`` function (Keras' export)."""

    path: Path
    runtime: str = "tf"
    input_size: int = field(init=False)
    _serve: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(self.path))
        self._serve = loaded.signatures["serving_default"]
        spec = next(iter(self._serve.structured_input_signature[1].values()))
        self._name = next(iter(self._serve.structured_input_signature[1]))
        self.input_size = _square_side(spec.shape.as_list(), str(self.path))
        self._loaded = loaded  # keeps the variables alive

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self._serve(**{self._name: batch.astype(np.float32)})
        return np.asarray(next(iter(out.values())), dtype=np.float32)


@dataclass
class OnnxPredictor:
    """ONNX Runtime on the CPU: an ``.onnx`` file, all graph optimizations on."""

    path: Path
    runtime: str = "onnx"
    input_size: int = field(init=False)

    def __post_init__(self) -> None:
        ort: Any = require("onnxruntime", "runtime onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self._session = ort.InferenceSession(str(self.path), options,
                                             providers=["CPUExecutionProvider"])
        inp = self._session.get_inputs()[0]
        self._name = inp.name
        self.input_size = _square_side(inp.shape, str(self.path))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {self._name: batch.astype(np.float32, copy=False)})
        return np.asarray(out[0], dtype=np.float32)


@dataclass
class OpenVINOPredictor:
    """OpenVINO on the CPU: an IR ``.xml`` (or ``.onnx``) file, float32 kept in float32
    (a CPU with bf16 units would otherwise compute float layers in bf16)."""

    path: Path
    runtime: str = "openvino"
    input_size: int = field(init=False)

    def __post_init__(self) -> None:
        ov: Any = require("openvino", "runtime openvino")
        core = ov.Core()
        model = core.read_model(str(self.path))
        shape = [d.get_length() if d.is_static else None for d in model.inputs[0].partial_shape]
        self.input_size = _square_side(shape, str(self.path))
        self._compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self._request = self._compiled.create_infer_request()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)


# ---------------------------------------------------------------- choosing and opening


def installed_runtimes() -> list[str]:
    """The runtimes whose packages import here, fastest first."""
    import importlib.util

    return [r for r in FASTEST_FIRST if importlib.util.find_spec(_MODULE[r]) is not None]


def check_runtime(runtime: str) -> str:
    """``runtime`` if known (``auto`` or one of RUNTIMES), else ConfigError."""
    if runtime != "auto" and runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r} is unknown: use auto, "
                          f"{', '.join(RUNTIMES)}")
    return runtime


def choose_runtime(runtime: str, fmt: str | None = None) -> str:
    """The runtime to use for a model of exported format ``fmt`` (None: a Keras model):
    ``runtime`` itself, checked, or for ``auto`` the fastest installed that can read it."""
    check_runtime(runtime)
    readers = _READS[fmt] if fmt else RUNTIMES
    if runtime == "auto":
        runtime = next((r for r in installed_runtimes() if r in readers), readers[0])
    if runtime not in readers:
        raise ConfigError(f"--runtime {runtime} cannot run a {fmt} export: use "
                          f"{' or '.join(readers)}, or export the model to another format")
    if runtime not in installed_runtimes():
        raise ConfigError(f"runtime {runtime} needs the Python package {_MODULE[runtime]!r}, "
                          f"which is not installed: {DEPLOY_EXTRA}")
    return runtime


def open_exported(path: Path, runtime: str) -> Predictor:
    """A predictor for an exported file on ``runtime``; ModelError when it cannot be read."""
    fmt = format_of(path)
    if fmt is None or not path.exists():
        raise ModelError(f"model {str(path)!r}: no such exported model; give {MODEL_FORMS}")
    runtime = choose_runtime(runtime, fmt)
    make: dict[str, Callable[[Path], Predictor]] = {
        "tf": SavedModelPredictor, "onnx": OnnxPredictor, "openvino": OpenVINOPredictor}
    try:
        return make[runtime](path)
    except SegkitError:
        raise
    except Exception as exc:  # each runtime raises its own types for a corrupt file
        raise ModelError(f"model {str(path)!r} could not be read by runtime {runtime} "
                         f"({_first_line(exc)}): export it again with segkit export") from exc


def from_keras(model: keras.Model, runtime: str = "auto", *,
               workdir: Path | None = None) -> Predictor:
    """A predictor running ``model`` on ``runtime``: tf wraps it; onnx and openvino export it
    first (seconds) into ``workdir`` (default: a temporary folder kept for the process)."""
    runtime = choose_runtime(runtime)
    if runtime == "tf":
        return KerasPredictor(model)
    fmt = "onnx" if runtime == "onnx" else "openvino"
    folder = Path(workdir or tempfile.mkdtemp(prefix="segkit-runtime-"))
    return open_exported(write(model, fmt, folder / f"model-{os.getpid()}"), runtime)


def is_mlflow_uri(uri: str) -> bool:
    """True for ``runs:/``, ``models:/`` and other ``scheme://`` URIs; False for a path."""
    return uri.startswith(("runs:/", "models:/")) or "://" in uri


def _check_keras_file(path: Path, uri: str) -> None:
    if not path.is_file():
        raise ModelError(f"model {uri!r}: no such file; give {MODEL_FORMS}")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"model {uri!r} is not a Keras archive (a zip written by "
                         f"model.save()); give {MODEL_FORMS}")


def load_keras(uri: str, tracking_uri: str | None = None) -> keras.Model:
    """A ``.keras`` file or an MLflow model (``runs:/``, ``models:/``) loaded without code
    (``safe_mode``) and uncompiled; ModelError naming ``uri`` and the accepted forms."""
    import keras

    try:
        if is_mlflow_uri(uri):
            import mlflow

            if tracking_uri:
                mlflow.set_tracking_uri(tracking_uri)
            return mlflow.keras.load_model(uri, load_model_kwargs={"safe_mode": True,
                                                                   "compile": False})
        _check_keras_file(Path(uri).expanduser(), uri)
        return keras.saving.load_model(Path(uri).expanduser(), compile=False, safe_mode=True)
    except SegkitError:
        raise
    except Exception as exc:  # Keras and MLflow raise many types for a bad file or URI
        raise ModelError(f"model {uri!r} could not be loaded ({_first_line(exc)}); "
                         f"give {MODEL_FORMS}") from exc


def open_predictor(model: str | Path, runtime: str = "auto",
                   tracking_uri: str | None = None) -> Predictor:
    """A predictor for ``model`` (any form of MODEL_FORMS) on ``runtime`` (auto: the fastest
    installed that can read it). ConfigError for an unknown or missing runtime, ModelError
    for a model that cannot be opened."""
    check_runtime(runtime)
    text = str(model)
    if not is_mlflow_uri(text) and format_of(Path(text).expanduser()) is not None:
        return open_exported(Path(text).expanduser(), runtime)
    choose_runtime(runtime)  # a missing runtime fails before the model loads
    return from_keras(load_keras(text, tracking_uri), runtime)
