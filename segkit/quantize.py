"""Post-training int8 quantization with ONNX Runtime's static quantization.

A float32 ONNX export is pre-processed (shape inference, graph cleanup), then quantized with
``onnxruntime.quantization.quantize_static``: weights int8 per output channel, activations
uint8 with ranges calibrated (min/max) on training images, written in the QDQ format that
both ONNX Runtime and OpenVINO run in int8. For ``--format openvino`` the QDQ model is
converted with ``openvino.convert_model``, which keeps its int8 layers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segkit.errors import ConfigError
from segkit.formats import require

QUANTIZE = ("int8",)
QUANTIZABLE = ("onnx", "openvino")


def check_quantize(quantize: str | None, fmt: str, calibration: int) -> None:
    """ConfigError for an unknown mode, a format it cannot write, or no calibration images."""
    if quantize is None:
        return
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r} is unknown: use int8")
    if fmt not in QUANTIZABLE:
        raise ConfigError(f"--quantize int8 writes onnx or openvino, not {fmt}: use "
                          "--format onnx or --format openvino")
    if calibration < 1:
        raise ConfigError(f"--calibration {calibration}: give at least 1 training image")
    require("onnxruntime", "--quantize int8")


def _batches(images: np.ndarray, name: str, batch: int = 8) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(images), batch):
        yield {name: np.asarray(images[start:start + batch], np.float32)}


def quantize_onnx(src: Path, dst: Path, calibration: np.ndarray) -> Path:
    """``src`` (float32 ONNX) quantized to int8 QDQ at ``dst``, calibrated on
    ``calibration`` (float32 NHWC RGB 0-255, what the model takes)."""
    quant: Any = require("onnxruntime.quantization", "--quantize int8")
    ort: Any = require("onnxruntime", "--quantize int8")
    name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = _batches(calibration, name)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="segkit-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quant.quantize_static(str(pre), str(dst), Reader(),
                              quant_format=quant.QuantFormat.QDQ, per_channel=True,
                              activation_type=quant.QuantType.QUInt8,
                              weight_type=quant.QuantType.QInt8)
    return dst


def onnx_to_openvino(src: Path, dst: Path) -> Path:
    """An ONNX file converted to OpenVINO IR (``dst`` .xml and its .bin), weights as stored
    (no float16 compression, so a float32 model stays float32 and an int8 one int8)."""
    ov: Any = require("openvino", "--format openvino")
    ov.save_model(ov.convert_model(str(src)), str(dst), compress_to_fp16=False)
    return dst
