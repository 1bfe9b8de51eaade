"""What a benchmark ran on: the CPU (/proc/cpuinfo, lscpu), its peak FLOP/s, memory, GPUs,
package versions, and this process's peak resident memory."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import subprocess
from collections.abc import Iterable
from pathlib import Path

# CPU flags that decide the peak FLOP/s and whether bf16 is native.
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "f16c",
         "avx512_vnni", "avx_vnni", "amx_int8")  # the last three: int8 dot products
NATIVE_BF16 = frozenset({"amx_bf16", "avx512_bf16"})
LSCPU_FIELDS = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
                "L2 cache", "L3 cache", "Hypervisor vendor", "CPU max MHz")
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "mlflow", "pillow",
            "hydra-core", "matplotlib")

# FLOP per cycle and core (an FMA is 2 FLOP), and why, per instruction set.
BF16_UNITS = {"amx_bf16": (1024, "AMX-BF16: 1024 bf16 FLOP/cycle/core"),
              "avx512_bf16": (128, "AVX512-BF16: 2 units x 32 bf16 lanes x 2 FLOP (FMA)")}
FLOAT32_UNITS = (
    ({"avx512f"}, 64, "AVX-512: 2 FMA units x 16 float32 lanes x 2 FLOP"),
    ({"avx2", "fma"}, 32, "AVX2+FMA: 2 FMA units x 8 float32 lanes x 2 FLOP (Zen 3)"),
    (set(), 8, "SSE: 4 float32 lanes x 2 FLOP (no FMA)"),
)


def parse_cpuinfo(text: str) -> dict:
    """Model name, clock (MHz, first core) and flag set from /proc/cpuinfo text."""
    info: dict = {"model": None, "mhz": None, "flags": set()}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and info["model"] is None:
            info["model"] = value
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = float(value)
        elif key == "flags" and not info["flags"]:
            info["flags"] = set(value.split())
    return info


def flop_per_cycle(flags: set[str], policy: str) -> tuple[int | None, str]:
    """FLOP per cycle and core for ``policy`` given the CPU ``flags``, and the assumption.

    float32: AVX-512 = 2 FMA units x 16 lanes x 2 = 64 (some Xeons have one 512-bit unit:
    half), AVX2 + FMA = 2 x 8 x 2 = 32 (Zen 3, most Intel cores). bf16: AMX-BF16 = 1024
    (Intel's figure for the TMUL unit), AVX512-BF16 = 2 x 32 x 2 = 128; without either,
    bf16 is emulated: no meaningful peak.
    """
    flags = set(flags)
    if "bfloat16" in policy:
        unit = next((BF16_UNITS[f] for f in BF16_UNITS if f in flags), None)
        if unit:
            return unit
    if "bfloat16" in policy or "float16" in policy:
        return None, f"{policy} has no native unit on this CPU (emulated): no peak stated"
    return next((per, why) for need, per, why in FLOAT32_UNITS if need <= flags)


def peak_flops(cores: int, ghz: float, flags: set[str], policy: str) -> tuple[float | None, str]:
    """Peak FLOP/s of ``cores`` CPU cores at ``ghz`` for ``policy``, and the assumption."""
    per, why = flop_per_cycle(flags, policy)
    if per is None:
        return None, why
    return cores * ghz * 1e9 * per, f"{cores} cores x {ghz:.3g} GHz x {per} FLOP/cycle ({why})"


def has_native_bf16(flags: Iterable[str]) -> bool:
    """Whether these CPU flags include a native bf16 unit (AMX or AVX512-BF16)."""
    return bool(NATIVE_BF16 & set(flags))


def _cpuinfo() -> dict:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {"model": platform.processor(), "mhz": None, "flags": set()}


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in LSCPU_FIELDS:
            fields[key.strip()] = value.strip()
    return fields


def _memory_gb() -> float | None:
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
    except (OSError, TypeError):
        return None
    return round(kib * 1024 / 1024**3, 1)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine() -> dict:
    """What the run ran on: CPU (lscpu), cores, clock, flags that matter, memory, load."""
    cpu, fields = _cpuinfo(), _lscpu()
    return {"cpu": fields.get("Model name") or cpu["model"], "lscpu": fields,
            "nproc": usable_cores(), "mhz": cpu["mhz"],
            "flags": sorted(f for f in FLAGS if f in cpu["flags"]),
            "memory_gb": _memory_gb(), "load_average_start": list(os.getloadavg()),
            "platform": platform.platform()}


def gpu_names() -> str | None:
    """The GPUs TensorFlow sees, comma-separated, or None (imports TensorFlow)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name)
                     for g in gpus) or None


def versions() -> dict[str, str]:
    """Python's and the installed packages' versions that the figures depend on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
