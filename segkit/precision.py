"""``trainer.precision``: the Keras dtype policy, ``auto`` choosing bf16 only where the
hardware computes it natively."""

from __future__ import annotations

from pathlib import Path

from segkit.errors import ConfigError

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
