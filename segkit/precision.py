"""``trainer.precision``: the Keras dtype policy, ``auto`` choosing bf16 only where the
hardware computes it natively."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segkit.errors import ConfigError

if TYPE_CHECKING:
    import keras

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def check_precision(name: object) -> None:
    if name not in PRECISIONS:
        raise ConfigError(f"trainer.precision={name!r} is unknown: use one of "
                          f"{', '.join(PRECISIONS)}")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has native bf16 matrix units (AMX-BF16 or AVX512-BF16)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve_precision(name: str) -> str:
    """The Keras dtype policy for ``trainer.precision``.

    ``auto`` picks mixed_bfloat16 where the hardware computes bf16 natively (an Ampere or
    newer GPU, or a CPU with AMX/AVX512-BF16), else float32. bf16 needs no loss scaling.
    """
    check_precision(name)
    if name != "auto":
        return name
    # Imported here, not at the top: the config check above must stay free of TensorFlow.
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if tuple(cc) >= (8, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` itself when every layer computes in float32; else a copy whose layers all
    compute in float32, with the same weights (a mixed policy keeps its variables in float32,
    so nothing is lost). Inference and exports run on it:
    tf2onnx writes an ONNX graph mixing bf16 and float16 casts that ONNX Runtime and OpenVINO
    refuse, and a model trained on a CPU with bf16 units then scores the same on any machine.
    Keras' clone_model rebuilds the graph (nested models too); only the per-layer dtype is
    changed here."""
    import keras

    def is_float32(layer: keras.Layer) -> bool:
        return layer.dtype_policy.name == "float32"

    if all(is_float32(layer) for layer in model._flatten_layers(include_self=True)):
        return model

    def rebuilt(layer: keras.Layer) -> keras.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=rebuilt, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
