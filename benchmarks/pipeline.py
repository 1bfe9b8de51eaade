"""The whole pipeline against the naive baseline and the machine's limit, in one run.

    python benchmarks/pipeline.py [--data-dir ../shared/data/kvasir-seg] [--repeats 3]
                                  [--steps N] [--quick] [--no-xla] [--notes TEXT]
    python benchmarks/pipeline.py --render-only   # BENCHMARKS.md again from the JSON

Measures, on one machine in one run, and writes ``results/benchmarks.json`` and
``BENCHMARKS.md`` (one table: measure, value, target, met/missed, what limits it):

- data: cold preparation of every Kvasir-SEG pair (decode + resize, ``segkit.data.prepare``
  into an empty cache), a warm start from that cache, and the peak resident memory of a
  process doing only that (a subprocess, so the peak is its own);
- training throughput of the reference U-Net (256x256, batch 8), steady state: segkit's
  pipeline (``make_dataset`` with flips + the model compiled as ``segkit.app`` does) with
  ``trainer.precision=auto`` and with float32, the naive baseline (float32 NumPy arrays / 255
  in memory, ``model.fit(x, y, batch_size=8)``), the same steps fed from in-memory tensors
  (the input pipeline's overhead is the difference), and optionally XLA (``jit_compile``);
- inference: ``model.predict`` at 256x256, and end to end at original resolution through
  ``segkit.predict.predict_files`` (read, resize, predict, resize back, write PNG);
- model cost: FLOPs per image counted from the layer shapes (cross-checked with TensorFlow's
  profiler), achieved FLOP/s, and the peak of the machine for the precision used;
- tracking: the share of a smoke run's wall time spent in MLflow calls and plots.

The machine is shared and noisy: variants are interleaved (the order rotates per repeat),
every figure is a median over repeats, and only ratios within one run are compared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: segkit and conf/ beside it
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kvasir-seg"
SIZE, BATCH = 256, 8
MB = 1024 * 1024

# What each target of the issue asks for (written for an AMX machine).
TARGETS = {
    "speedup_auto_vs_naive": 2.5,     # training with precision=auto vs the naive float32 fit
    "pipeline_overhead": 0.05,        # share of step time, augmentation on
    "warm_start_s": 3.0,              # 1000 images from the cache
    "predict_img_per_s": 60.0,        # model.predict at 256x256
    "tracking_share": 0.10,           # MLflow + plots, share of a smoke run's wall time
}


# ------------------------------------------------------------------ small helpers


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "mlflow", "pillow",
                 "hydra-core", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


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


def peak_flops(cores: int, ghz: float, flags: set[str], policy: str) -> tuple[float | None, str]:
    """Peak FLOP/s of ``cores`` CPU cores at ``ghz`` for ``policy``, and the assumption.

    An FMA is 2 FLOP. float32: AVX-512 = 2 FMA units x 16 lanes x 2 = 64 FLOP/cycle/core
    (some Xeons have one 512-bit unit: half), AVX2 + FMA = 2 x 8 x 2 = 32 (Zen 3, most
    Intel cores). bf16: AMX-BF16 = 1024 FLOP/cycle/core (Intel's figure for the TMUL unit),
    AVX512-BF16 = 2 x 32 x 2 = 128; without either, bf16 is emulated: no meaningful peak.
    """
    bf16 = "bfloat16" in policy
    if bf16 and "amx_bf16" in flags:
        per, why = 1024, "AMX-BF16: 1024 bf16 FLOP/cycle/core"
    elif bf16 and "avx512_bf16" in flags:
        per, why = 128, "AVX512-BF16: 2 units x 32 bf16 lanes x 2 FLOP (FMA)"
    elif bf16 or "float16" in policy:
        return None, f"{policy} has no native unit on this CPU (emulated): no peak stated"
    elif "avx512f" in flags:
        per, why = 64, "AVX-512: 2 FMA units x 16 float32 lanes x 2 FLOP"
    elif "avx2" in flags and "fma" in flags:
        per, why = 32, "AVX2+FMA: 2 FMA units x 8 float32 lanes x 2 FLOP (Zen 3)"
    else:
        per, why = 8, "SSE: 4 float32 lanes x 2 FLOP (no FMA)"
    peak = cores * ghz * 1e9 * per
    return peak, f"{cores} cores x {ghz:.3g} GHz x {per} FLOP/cycle ({why})"


def machine() -> dict:
    """What the run ran on: CPU (lscpu), cores, clock, flags that matter, memory, GPUs."""
    try:
        cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = {"model": platform.processor(), "mhz": None, "flags": set()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    fields = {}
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
                           "L2 cache", "L3 cache", "Hypervisor vendor", "CPU max MHz"):
            fields[key.strip()] = value.strip()
    try:
        mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1]) * 1024
    except (OSError, TypeError):
        mem = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "f16c")
    return {"cpu": fields.get("Model name") or cpu["model"], "lscpu": fields,
            "nproc": cores, "mhz": cpu["mhz"], "flags": sorted(f for f in wanted
                                                                if f in cpu["flags"]),
            "memory_gb": round(mem / 1024**3, 1) if mem else None,
            "load_average_start": list(os.getloadavg()), "platform": platform.platform()}


def rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ FLOPs


def count_flops(model) -> dict:
    """Forward FLOPs per image from the layer shapes (a multiply-add = 2 FLOP).

    ``conv``: Conv2D (2 x H_out x W_out x C_out x k_h x k_w x C_in / groups),
    Conv2DTranspose (2 x H_in x W_in x C_in x k_h x k_w x C_out) and Dense; ``other``: bias
    adds (1 per output) and max pooling (one compare per window element). Activations,
    rescaling and concatenation are not counted (memory traffic, not arithmetic).
    """
    from keras import layers

    conv, other, per_layer = 0, 0, {}
    for layer in model.layers:
        out_shape = layer.output.shape
        if isinstance(layer, layers.Conv2DTranspose):
            _, h, w, c_in = layer.input.shape
            kh, kw = layer.kernel_size
            flops = 2 * h * w * c_in * kh * kw * layer.filters
        elif isinstance(layer, layers.Conv2D):
            c_in = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            _, h, w, c_out = out_shape
            flops = 2 * h * w * c_out * kh * kw * c_in // layer.groups
        elif isinstance(layer, layers.Dense):
            flops = 2 * int(np.prod(out_shape[1:-1] or [1])) * layer.input.shape[-1] * layer.units
        elif isinstance(layer, layers.MaxPooling2D):
            other += int(np.prod(out_shape[1:])) * int(np.prod(layer.pool_size))
            continue
        else:
            continue
        conv += flops
        per_layer[layer.name] = int(flops)
        if getattr(layer, "use_bias", False):
            other += int(np.prod(out_shape[1:]))
    return {"conv": int(conv), "other": int(other), "total": int(conv + other),
            "per_layer": per_layer}


def profiler_flops(model, size: int) -> dict:
    """TensorFlow's own FLOP count of the frozen forward graph for one image, per op type.

    Uses the statistics registry behind ``tf.compat.v1.profiler`` (its ``flops_registry``:
    Conv2D, Conv2DBackpropInput (what Conv2DTranspose runs), BiasAdd, MaxPool, element-wise
    ops); compute ops without a formula are listed as uncounted. Activations are not counted,
    like ``count_flops``, so the two totals agree exactly for a conv/pool/bias network.
    """
    import tensorflow as tf
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.profiler.internal import flops_registry  # noqa: F401 (registers)

    channels = model.input_shape[-1]
    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(
        fn.get_concrete_function(tf.TensorSpec([1, size, size, channels], tf.float32)))
    graph = frozen.graph
    by_type: dict[str, int] = defaultdict(int)
    uncounted = set()
    for op in graph.get_operations():
        try:
            value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except ValueError:  # shape not fully known
            value = None
        if value is None:
            uncounted.add(op.type)
        else:
            by_type[op.type] += int(value)
    return {"total": int(sum(by_type.values())), "by_op_type": dict(by_type),
            "uncounted_compute_ops": sorted(t for t in uncounted
                                            if t.startswith(("Conv", "MatMul", "Depthwise")))}


# ------------------------------------------------------------------ config and model


def compose(data_dir: Path, cache_dir: Path, *overrides: str):
    """The project's config, composed as run.py does, pointed at ``data_dir``/``cache_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from segkit.config import register_resolvers

    register_resolvers(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=[f"data.root={data_dir}",
                                                  f"data.cache_dir={cache_dir}",
                                                  "data.download=false", *overrides])


def build(cfg, policy: str, jit_compile: bool = False, steps_per_epoch: int = 100):
    """The model compiled exactly as ``segkit.app`` compiles it (loss, optimizer and its
    schedule, training metrics), with XLA switched on when ``jit_compile``.

    Keras' default ``jit_compile="auto"`` means no XLA on a CPU and XLA on a GPU.
    """
    import inspect

    from segkit.app import _build_compiled

    if "steps_per_epoch" in inspect.signature(_build_compiled).parameters:
        model = _build_compiled(cfg, policy, steps_per_epoch)
    else:  # older segkit: no learning-rate schedule
        model = _build_compiled(cfg, policy)
    if jit_compile:
        model.jit_compile = True  # before the first fit: the train function is built with it
    return model


# ------------------------------------------------------------------ data (subprocess)


def data_worker(data_dir: Path, cache_root: Path, repeats: int, out: Path) -> None:
    """Cold prepare into an empty cache, then warm starts from it; peak RSS; JSON to ``out``.

    Runs in its own process (no TensorFlow import), so ``ru_maxrss`` is this part's own.
    """
    from segkit.data import prepare
    from segkit.data.cache import fingerprint
    from segkit.data.dataset import discover

    base_rss = rss_mb()
    cold, warm, fp_s, first_peak = [], [], [], None
    data = None
    for r in range(repeats):
        cfg = compose(data_dir, cache_root / f"cold{r}", "split=official")
        del data  # each call starts with nothing held, as a new run does
        t = time.perf_counter()
        data = prepare(cfg.data, cfg.split)
        cold.append(time.perf_counter() - t)
        first_peak = first_peak or rss_mb()  # one cold prepare, as a run does it
        for _ in range(2):
            del data
            t = time.perf_counter()
            data = prepare(cfg.data, cfg.split)
            warm.append(time.perf_counter() - t)
        samples = discover(data.root)
        t = time.perf_counter()
        fingerprint(samples)
        fp_s.append(time.perf_counter() - t)
        if r < repeats - 1:
            shutil.rmtree(cache_root / f"cold{r}", ignore_errors=True)
    n = sum(len(data.names(p)) for p in ("train", "val", "test"))
    images_bytes = sum(a.nbytes for a in data.images.values())
    masks_bytes = sum(a.nbytes for a in data.masks.values())
    entry = next(p for p in (cache_root / f"cold{repeats - 1}").iterdir() if p.is_dir())
    result = {
        "pairs": n, "image_size": data.image_size, "cold_s": cold, "warm_s": warm,
        "fingerprint_s": fp_s, "cold_s_median": median(cold), "warm_s_median": median(warm),
        "fingerprint_s_median": median(fp_s),
        "cold_img_per_s": n / median(cold), "warm_img_per_s": n / median(warm),
        "dtypes": sorted({str(a.dtype) for a in [*data.images.values(), *data.masks.values()]}),
        "uint8_mb": (images_bytes + masks_bytes) / MB,
        "float32_mb": 4 * (images_bytes + masks_bytes) / MB,
        "cache_entry": str(entry), "cache_mb": sum(f.stat().st_size for f in entry.iterdir()) / MB,
        "rss_after_imports_mb": base_rss, "peak_rss_mb": first_peak,
        "peak_rss_all_calls_mb": rss_mb(),
        "split_sizes": data.split.sizes(), "fingerprint": data.fingerprint,
    }
    out.write_text(json.dumps(result, indent=2))


def run_worker(kind: str, args: Sequence[str], timeout: float = 900) -> tuple[dict, float]:
    """Run this script as a ``kind`` worker in a fresh process; its JSON and wall seconds."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        t = time.perf_counter()
        res = subprocess.run([sys.executable, __file__, f"--_worker={kind}", f"--_out={out}",
                              *args], capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t
        if res.returncode != 0:
            raise RuntimeError(f"{kind} worker failed ({res.returncode}):\n{res.stderr[-3000:]}")
        return json.loads(out.read_text()), wall
    finally:
        out.unlink(missing_ok=True)


# ------------------------------------------------------------------ training


def step_timer():
    """A Keras callback recording the end of every training step (synchronised: the loss is
    read back, so asynchronous devices finish the step before the clock is read)."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(np.asarray(logs["loss"]))
            self.ends.append(time.perf_counter())

    return StepTimer()


def steady_step_s(ends: Sequence[float], warmup: int) -> float:
    """Seconds per step after the first ``warmup`` steps (which include iterator start-up)."""
    if len(ends) <= warmup:
        raise ValueError(f"{len(ends)} steps recorded, {warmup} of them warm-up: need more")
    return (ends[-1] - ends[warmup - 1]) / (len(ends) - warmup) if warmup else \
        (ends[-1] - ends[0]) / (len(ends) - 1)


def rotate(items: Sequence, r: int) -> list:
    """``items`` started at position ``r`` (mod len): each repeat runs them in another order."""
    r %= len(items)
    return [*items[r:], *items[:r]]


def train_variants(cfg, images: np.ndarray, masks: np.ndarray, *, steps: int, warmup: int,
                   repeats: int, xla: bool, log: Callable[[str], None]) -> dict:
    """Steady-state training throughput of every variant, interleaved, ``repeats`` times."""
    import keras
    import tensorflow as tf

    from segkit.data.pipeline import make_dataset
    from segkit.training import resolve_precision

    auto = resolve_precision("auto")
    n_steps = warmup + steps
    x_raw = images.astype(np.float32)                     # 0-255: segkit's model input
    y = masks.astype(np.float32)
    x_naive = images.astype(np.float32) / 255.0           # the reference design's arrays
    nb = len(images) // BATCH
    in_memory = tf.data.Dataset.from_tensor_slices(
        (x_raw[: nb * BATCH].reshape(nb, BATCH, *x_raw.shape[1:]),
         y[: nb * BATCH].reshape(nb, BATCH, *y.shape[1:]))).repeat()

    def pipeline():
        # The str form works whether make_dataset takes only names or also config mappings.
        return make_dataset(images, masks, BATCH, training=True, seed=0,
                            augment="flips").repeat()

    variants = {
        "segkit_auto": {"policy": auto, "feed": "segkit pipeline (flips)",
                        "label": f"segkit, precision=auto (-> {auto})"},
        "segkit_float32": {"policy": "float32", "feed": "segkit pipeline (flips)",
                           "label": "segkit, precision=float32"},
        "naive_float32": {"policy": "float32", "feed": "float32 NumPy arrays / 255",
                          "label": "naive baseline (float32 arrays, model.fit(x, y))"},
        "in_memory_float32": {"policy": "float32", "feed": "in-memory float32 batches",
                              "label": "segkit model, float32, in-memory tensors"},
    }
    if xla:
        variants["xla_float32"] = {"policy": "float32", "feed": "in-memory float32 batches",
                                   "label": "segkit model, float32, XLA, in-memory tensors"}
    models, weights = {}, None
    for name, v in variants.items():
        keras.utils.set_random_seed(0)
        model = build(cfg, v["policy"], jit_compile=name.startswith("xla"),
                      steps_per_epoch=max(1, len(images) // BATCH))
        v["jit_compile"] = bool(model.jit_compile)
        if weights is None:
            weights = model.get_weights()
        else:
            model.set_weights(weights)  # same starting point for every variant
        if name.startswith("naive"):
            # The reference design: plain Adam + BCE + accuracy, nothing else.
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                          metrics=["accuracy"])
        models[name] = model

    def fit_once(name: str) -> float:
        model, timer = models[name], step_timer()
        if name.startswith("naive"):
            model.fit(x_naive, y, batch_size=BATCH, epochs=1, steps_per_epoch=n_steps,
                      callbacks=[timer], verbose=0)
        elif name.startswith("segkit"):
            model.fit(pipeline(), epochs=1, steps_per_epoch=n_steps, callbacks=[timer],
                      verbose=0, shuffle=False)  # make_dataset shuffles
        else:
            model.fit(in_memory, epochs=1, steps_per_epoch=n_steps, callbacks=[timer],
                      verbose=0, shuffle=False)
        return steady_step_s(timer.ends, warmup)

    first_s = {}
    for name in variants:  # tracing / compilation and first allocation, not measured
        t = time.perf_counter()
        model = models[name]
        if name.startswith("naive"):
            model.fit(x_naive[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
        elif name.startswith("segkit"):
            model.fit(pipeline(), epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
        else:
            model.fit(in_memory, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
        first_s[name] = time.perf_counter() - t
        log(f"  warm-up {name}: {first_s[name]:.1f}s")
    step_s = {name: [] for name in variants}
    for r in range(repeats):
        for name in rotate(list(variants), r):
            step_s[name].append(fit_once(name))
            log(f"  repeat {r + 1}/{repeats} {name}: {BATCH / step_s[name][-1]:.2f} img/s")
    for name, v in variants.items():
        v["step_s"] = step_s[name]
        v["img_per_s"] = [BATCH / s for s in step_s[name]]
        v["step_s_median"] = median(step_s[name])
        v["img_per_s_median"] = BATCH / v["step_s_median"]
        v["warmup_fit_s"] = first_s[name]
    result = {
        "auto_policy": auto, "steps": steps, "warmup_steps": warmup, "repeats": repeats,
        "train_images": len(images), "batch": BATCH, "variants": variants,
        "naive_arrays_mb_per_1000": 1000 * (x_naive[0].nbytes + y[0].nbytes) / MB,
    }
    # Input-pipeline overhead: segkit float32 (pipeline + flips) vs in-memory tensors, same
    # model and precision. Paired per repeat (adjacent in time), then the median.
    pipe, mem = step_s["segkit_float32"], step_s["in_memory_float32"]
    paired = [(p - m) / p for p, m in zip(pipe, mem, strict=True)]
    result["pipeline"] = {
        "pipeline_step_s_median": median(pipe), "in_memory_step_s_median": median(mem),
        "overhead_share_of_medians": (median(pipe) - median(mem)) / median(pipe),
        "overhead_share_paired": paired, "overhead_share": median(paired),
        "pipeline_alone_img_per_s": pipeline_alone(pipeline, batches=16),
    }
    # Its own cost: seconds the pipeline needs per batch with the cores to itself, as a
    # share of a step (the cores are saturated by the model, so that time is taken from it).
    p = result["pipeline"]
    p["own_cost_share"] = (BATCH / p["pipeline_alone_img_per_s"]) / median(mem)
    result["_models"] = models  # removed before writing JSON
    return result


def pipeline_alone(make: Callable, batches: int) -> float:
    """Images/s the input pipeline (shuffle, flips, batch, cast) produces with no model."""
    it = iter(make())
    next(it)  # shuffle buffer fill
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - t)


# ------------------------------------------------------------------ inference


class TimedModel:
    """A model whose ``predict_on_batch`` time is added up; everything else is the model's."""

    def __init__(self, model):
        self._model, self.predict_s = model, 0.0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def predict_on_batch(self, x):
        t = time.perf_counter()
        out = np.asarray(self._model.predict_on_batch(x))
        self.predict_s += time.perf_counter() - t
        return out


def inference(model, images: np.ndarray, paths: Sequence[Path], repeats: int, workdir: Path,
              log: Callable[[str], None], xla: bool = True) -> dict:
    """model.predict at 256x256 (also with XLA) and ``segkit.predict.predict_files`` end to
    end."""
    import keras

    from segkit.predict import load_model, predict_files

    x = images.astype(np.float32)
    model.predict(x[:BATCH], batch_size=BATCH, verbose=0)  # warm-up: tracing
    models = {"predict": model}
    if xla:  # the same weights, predict compiled by XLA
        jit = keras.models.clone_model(model)
        jit.set_weights(model.get_weights())
        jit.compile(jit_compile=True)
        jit.predict(x[:BATCH], batch_size=BATCH, verbose=0)  # warm-up: XLA compilation
        models["predict_xla"] = jit
    saved = workdir / "random_weights.keras"
    model.save(saved)
    t = time.perf_counter()
    loaded = load_model(str(saved))
    load_s = time.perf_counter() - t
    timed = TimedModel(loaded)
    predict_files(timed, paths[:BATCH], workdir / "warmup", threshold=0.5, progress=False)
    pred, e2e, e2e_predict_share = {k: [] for k in models}, [], []
    for r in range(repeats):
        order = rotate([*models, "e2e"], r)
        for kind in order:
            if kind in models:
                t = time.perf_counter()
                models[kind].predict(x, batch_size=BATCH, verbose=0)
                pred[kind].append(len(x) / (time.perf_counter() - t))
            else:
                timed.predict_s = 0.0
                out = workdir / f"e2e{r}"
                t = time.perf_counter()
                summary = predict_files(timed, paths, out, threshold=0.5, batch_size=BATCH,
                                        progress=False, overwrite=True)
                wall = time.perf_counter() - t
                if summary.failed or len(summary.done) != len(paths):
                    raise RuntimeError(f"predict_files: {summary.lines()}")
                e2e.append(len(paths) / wall)
                e2e_predict_share.append(timed.predict_s / wall)
        log(f"  repeat {r + 1}/{repeats}: "
            + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in pred.items())
            + f", end to end {e2e[-1]:.1f} img/s")
    sizes = []
    from PIL import Image

    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    out = {"predict_images": len(x), "batch": BATCH, "predict_img_per_s": pred["predict"],
           "predict_img_per_s_median": median(pred["predict"]), "e2e_images": len(paths),
           "e2e_img_per_s": e2e, "e2e_img_per_s_median": median(e2e),
           "e2e_predict_share": e2e_predict_share,
           "e2e_predict_share_median": median(e2e_predict_share),
           "load_model_s": load_s,
           "e2e_mean_megapixels": float(np.mean([w * h for w, h in sizes]) / 1e6)}
    if "predict_xla" in pred:
        out["predict_xla_img_per_s"] = pred["predict_xla"]
        out["predict_xla_img_per_s_median"] = median(pred["predict_xla"])
        out["predict_xla_vs_predict_paired"] = paired_ratios(pred["predict_xla"],
                                                             pred["predict"])
    return out


# ------------------------------------------------------------------ tracking (subprocess)


class Ledger:
    """Seconds spent in wrapped functions, by category; nested calls count once (outermost).

    ``exclusive`` categories (MLflow, plots) share one nesting guard, so a call inside
    another timed call is not counted twice in ``seconds``; context categories (fit,
    evaluation, data) are timed independently and include whatever they call.
    ``by_name`` holds every wrapped function's own inclusive time (for the breakdown).
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.by_name: dict[str, float] = defaultdict(float)
        self.top: dict[str, float] = defaultdict(float)  # outermost calls only
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0

    def wrap(self, category: str, name: str, fn: Callable, *, exclusive: bool = True):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            outermost = not (exclusive and self._depth)
            self._depth += exclusive
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t
                self._depth -= exclusive
                if outermost:
                    self.seconds[category] += spent
                    if exclusive:
                        self.top[name] += spent
                self.by_name[name] += spent
                self.calls[name] += 1
        return timed

    def patch(self, owner, attr: str, category: str, *, exclusive: bool = True,
              label: str | None = None) -> None:
        if hasattr(owner, attr):
            name = label or f"{getattr(owner, '__name__', type(owner).__name__)}.{attr}"
            setattr(owner, attr, self.wrap(category, name, getattr(owner, attr),
                                           exclusive=exclusive))


# MLflow calls that segkit makes only inside its own timed tracking helpers.
NESTED = frozenset({"mlflow.get_experiment_by_name", "mlflow.create_experiment",
                    "mlflow.set_tracking_uri", "mlflow.keras.log_model"})
MLFLOW_CALLS = ("set_tracking_uri", "get_experiment_by_name", "create_experiment", "start_run",
                "end_run", "log_param", "log_params", "log_metric", "log_metrics", "set_tag",
                "set_tags", "log_dict", "log_text", "log_artifact", "log_artifacts",
                "log_figure", "log_image")


def instrument(ledger: Ledger) -> None:
    """Time MLflow calls and segkit's tracking helpers ("mlflow"), segkit.plots' figures
    ("plots"), and for context data preparation, fit and scoring."""
    import mlflow
    import mlflow.keras

    from segkit import app, plots, report, tracking

    for name in MLFLOW_CALLS:
        ledger.patch(mlflow, name, "mlflow")
    ledger.patch(mlflow.keras, "log_model", "mlflow", label="mlflow.keras.log_model")
    ledger.patch(mlflow.ActiveRun, "__exit__", "mlflow", label="mlflow.ActiveRun.__exit__")
    for name in ("setup_experiment", "log_run_context", "log_model"):
        ledger.patch(tracking, name, "mlflow", label=f"segkit.tracking.{name}")
    for name in dir(plots):
        if name.startswith("plot_"):
            ledger.patch(plots, name, "plots", label=f"segkit.plots.{name}")
    ledger.patch(app, "prepare", "data", exclusive=False, label="segkit.data.prepare")
    ledger.patch(app, "_fit", "fit", exclusive=False, label="segkit.app._fit")
    ledger.patch(report, "evaluate", "scoring", exclusive=False, label="segkit.evaluation.evaluate")


def make_small_dataset(src: Path, dst: Path, pairs: int) -> Path:
    """``pairs`` real pairs from ``src`` with official-style lists (2/3 train, 1/3 test)."""
    names = sorted(p.stem for p in (src / "images").iterdir() if p.suffix == ".jpg")[:pairs]
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy(src / sub / f"{n}.jpg", dst / sub / f"{n}.jpg")
    cut = 2 * len(names) // 3
    (dst / "splits").mkdir(exist_ok=True)
    (dst / "splits" / "train.txt").write_text("\n".join(names[:cut]) + "\n")
    (dst / "splits" / "val.txt").write_text("\n".join(names[cut:]) + "\n")
    return dst


def smoke_worker(data_dir: Path, workdir: Path, out: Path, overrides: Sequence[str] = ()
                 ) -> None:
    """One ``debug=smoke`` experiment in this process, instrumented; JSON to ``out``.

    ``root`` (the checkout whose git state is tagged) is ``workdir``, not a git repository:
    the benchmark never runs git in the shared checkout; segkit tags the commit "unknown".
    """
    from omegaconf import OmegaConf

    from segkit.app import run_experiment

    ledger = Ledger()
    instrument(ledger)
    cfg = compose(data_dir, workdir / "cache", "debug=smoke", "split.val_fraction=0.5",
                  f"tracking.uri=sqlite:///{workdir}/mlflow.db", *overrides)
    run_dir = workdir / f"out-{time.time_ns()}"
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")  # what Hydra writes and segkit logs
    t = time.perf_counter()
    run_experiment(cfg, root=workdir, run_dir=run_dir, hydra_dir=hydra_dir, run_name="bench")
    wall = time.perf_counter() - t
    top = sorted(ledger.by_name.items(), key=lambda kv: -kv[1])
    out.write_text(json.dumps({
        "wall_s": wall, "seconds": dict(ledger.seconds),
        "tracking_s": ledger.seconds["mlflow"] + ledger.seconds["plots"],
        "share": (ledger.seconds["mlflow"] + ledger.seconds["plots"]) / wall,
        "by_name": dict(top), "top": dict(ledger.top), "calls": dict(ledger.calls)},
        indent=2))


def tracking_overhead(data_dir: Path, workdir: Path, repeats: int, pairs: int,
                      log: Callable[[str], None]) -> dict:
    """Smoke runs in fresh processes (as the CLI runs them): the first creates the MLflow
    store, the others reuse it, as every later run of a project does; then the same with
    ``eval.plots=false`` (what sweeps and tests may set), interleaved."""
    small = make_small_dataset(data_dir, workdir / "kvasir-small", pairs)
    runs, bare = [], []
    for r, plots in [(0, True)] + [(i + 1, p) for i in range(repeats)
                                   for p in rotate([True, False], i)]:
        res, process_wall = run_worker("smoke", [f"--data-dir={small}", f"--_workdir={workdir}",
                                                 *([] if plots else ["--_no-plots"])])
        res["process_wall_s"] = process_wall
        res["fresh_store"] = r == 0
        res["share_of_process"] = res["tracking_s"] / process_wall
        (runs if plots else bare).append(res)
        sec = res["seconds"]
        log(f"  smoke {r + 1}/{repeats + 1}{' (new store)' if r == 0 else ''}"
            f"{'' if plots else ' eval.plots=false'}: "
            f"{res['wall_s']:.1f}s in run_experiment, mlflow {sec.get('mlflow', 0):.1f}s, "
            f"plots {sec.get('plots', 0):.1f}s -> {100 * res['share']:.1f}%")
    later = runs[1:]
    return {"pairs": pairs, "runs": runs, "no_plots_runs": bare,
            "no_plots_share_median": median([x["share"] for x in bare]),
            "no_plots_wall_s_median": median([x["wall_s"] for x in bare]),
            "share_median": median([x["share"] for x in later]),
            "share_of_process_median": median([x["share_of_process"] for x in later]),
            "wall_s_median": median([x["wall_s"] for x in later]),
            "mlflow_s_median": median([x["seconds"].get("mlflow", 0.0) for x in later]),
            "plots_s_median": median([x["seconds"].get("plots", 0.0) for x in later]),
            "first_run_share": runs[0]["share"]}


# ------------------------------------------------------------------ assessment and Markdown


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _status(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def assess(res: Mapping) -> list[dict]:
    """Table rows (measure, value, target, status, limit) from a results mapping."""
    d, tr, inf, fl, tk = (res.get(k) or {} for k in
                          ("data", "training", "inference", "flops", "tracking"))
    m = res.get("machine", {})
    native_bf16 = bool({"amx_bf16", "avx512_bf16"} & set(m.get("flags", [])))
    rows = []

    def row(measure, value, target="–", ok=None, limit=""):
        rows.append({"measure": measure, "value": value, "target": target,
                     "status": _status(ok), "limit": limit})

    if d:
        row(f"Data: cold preparation, {d['pairs']} pairs (decode + resize)",
            f"{_fmt(d['cold_s_median'])} s ({_fmt(d['cold_img_per_s'], 0)} img/s)",
            limit=f"JPEG decoding (Pillow draft mode) on {m.get('nproc', '?')} threads; "
                  f"includes the sha256 fingerprint ({_fmt(d['fingerprint_s_median'])} s). "
                  "Files were in the OS page cache (a truly cold disk adds read time).")
        row(f"Data: warm start from the cache, {d['pairs']} pairs",
            f"{_fmt(d['warm_s_median'])} s ({_fmt(d['warm_img_per_s'], 0)} img/s)",
            f"< {TARGETS['warm_start_s']:g} s", d["warm_s_median"] < TARGETS["warm_start_s"],
            f"sha256 of every file ({_fmt(d['fingerprint_s_median'])} s, the cache key) + "
            f"np.load of {_fmt(d['cache_mb'], 0)} MB.")
        uint8 = d["dtypes"] == ["uint8"]
        row("Data: held as uint8 until the batch is formed",
            f"{'yes' if uint8 else 'no'}: {_fmt(d['uint8_mb'], 0)} MB uint8 "
            f"(as float32: {_fmt(d['float32_mb'], 0)} MB)",
            "uint8 until batching", uint8 and res.get("pipeline_uint8_until_batch", False),
            "make_dataset slices uint8 arrays; the cast to float32 is mapped after batch().")
        row("Data: peak resident memory (prepare only, own process)",
            f"{_fmt(d['peak_rss_mb'], 0)} MB (after imports {_fmt(d['rss_after_imports_mb'], 0)}"
            " MB)",
            limit=f"prepare() holds the whole set ({_fmt(d['uint8_mb'], 0)} MB) and copies it "
                  "into per-part arrays (fancy indexing), so about twice the dataset at peak.")
    if tr:
        v = tr["variants"]
        speed, target = tr["speedup_auto_vs_naive"], TARGETS["speedup_auto_vs_naive"]
        bf16_note = ("this CPU has no native bf16 (no AMX/AVX512-BF16), so auto = float32 and "
                     "the expected 2x from bf16 is not available; segkit and naive then run the "
                     "same float32 convolutions, which take almost all the step time"
                     if not native_bf16 else "bf16 on AMX is the main lever")
        row(f"Training: {v['segkit_auto']['label']}",
            f"{_fmt(v['segkit_auto']['img_per_s_median'])} img/s "
            f"(x{_fmt(speed)} naive, paired median)", f">= {target:g}x naive", speed >= target,
            bf16_note + ".")
        row(f"Training: {v['segkit_float32']['label']}",
            f"{_fmt(v['segkit_float32']['img_per_s_median'])} img/s "
            f"(x{_fmt(tr['speedup_float32_vs_naive'])} naive)",
            limit="float32 convolutions (see model cost)" + (
                f"; auto/float32 = {_fmt(tr['noise_auto_vs_float32'])} (paired median, "
                + ", ".join(_fmt(x) for x in tr.get("noise_auto_vs_float32_paired", []))
                + " per repeat) for identical configurations: the run's noise level"
                if tr.get("noise_auto_vs_float32") else "") + ".")
        row(f"Training: {v['naive_float32']['label']}",
            f"{_fmt(v['naive_float32']['img_per_s_median'])} img/s",
            limit=f"holds all images as float32: {_fmt(tr['naive_arrays_mb_per_1000'], 0)} MB "
                  "per 1000 images (4x segkit's uint8); Keras' NumPy adapter feeds it: the "
                  "same model from in-memory tensors ran x"
                  + ", x".join(_fmt(x) for x in tr.get("in_memory_vs_naive_paired", []))
                  + " faster per repeat.")
        if "xla_float32" in v:
            row("Training: XLA (jit_compile=True), float32, in-memory tensors",
                f"{_fmt(v['xla_float32']['img_per_s_median'])} img/s "
                f"(x{_fmt(tr['xla_vs_no_xla'])} vs without XLA, paired median)",
                limit=f"compile {_fmt(v['xla_float32']['warmup_fit_s'], 0)} s at the first step; "
                      + xla_verdict(tr))
        p = tr["pipeline"]
        share, target = p["overhead_share"], TARGETS["pipeline_overhead"]
        row("Input pipeline overhead (flips) vs in-memory tensors, share of step time",
            f"{_fmt(100 * share, 1)}% ({_fmt(p['pipeline_step_s_median'], 3)} vs "
            f"{_fmt(p['in_memory_step_s_median'], 3)} s/step)",
            f"< {100 * target:g}%", share < target,
            f"the pipeline alone makes {_fmt(p['pipeline_alone_img_per_s'], 0)} img/s "
            f"(shuffle, flips, batch, cast), so its own cost is "
            f"{_fmt(100 * p['own_cost_share'], 2)}% of a step; it runs on the cores the model "
            "saturates, and a step-time difference larger than that is machine noise "
            "(compare auto vs float32 above).")
    if inf:
        ceiling = (fl["peak_flops"] / fl["forward_flops"]) if fl.get("peak_flops") else None
        row(f"Inference: model.predict at {SIZE}x{SIZE}, batch {inf['batch']}",
            f"{_fmt(inf['predict_img_per_s_median'])} img/s",
            f">= {TARGETS['predict_img_per_s']:g} img/s",
            inf["predict_img_per_s_median"] >= TARGETS["predict_img_per_s"],
            "compute-bound float32 convolutions" + (
                f"; even at 100% of this CPU's float32 peak the ceiling is {_fmt(ceiling, 1)} "
                "img/s" if ceiling else "") + ".")
        if "predict_xla_img_per_s_median" in inf:
            row(f"Inference: the same with XLA (jit_compile=True), batch {inf['batch']}",
                f"{_fmt(inf['predict_xla_img_per_s_median'])} img/s (x"
                f"{_fmt(median(inf['predict_xla_vs_predict_paired']))} paired median)",
                limit="per repeat x" + ", ".join(
                    f"{x:.2f}" for x in inf["predict_xla_vs_predict_paired"])
                + "; after the XLA compilation of the first batch.")
        row(f"Inference: end to end at original resolution ({inf['e2e_images']} images, "
            f"mean {_fmt(inf['e2e_mean_megapixels'])} MP)",
            f"{_fmt(inf['e2e_img_per_s_median'])} img/s",
            limit=f"the forward pass is {_fmt(100 * inf['e2e_predict_share_median'], 0)}% of "
                  "the time; the rest is reading/resizing, resizing back and PNG writing.")
    if fl:
        row(f"Model cost: forward FLOPs per image ({SIZE}x{SIZE})",
            f"{_fmt(fl['forward_flops'] / 1e9, 3)} GFLOP (training ~3x: "
            f"{_fmt(fl['train_flops'] / 1e9, 1)})",
            limit=f"counted from layer shapes (multiply-add = 2 FLOP; convolutions "
                  f"{_fmt(fl['forward_flops'] / 1e9, 3)}, of which transposed "
                  f"{_fmt(fl['transpose_flops'] / 1e9, 3)}; with bias and pooling "
                  f"{_fmt(fl['forward_flops_with_bias_pool'] / 1e9, 3)}); TensorFlow's FLOP "
                  f"registry on the frozen graph: {_fmt(fl['profiler_total'] / 1e9, 3)} GFLOP"
                  + (f" (uncounted: {', '.join(fl['profiler_uncounted'])})"
                     if fl["profiler_uncounted"] else "") + ".")
        peak = fl.get("peak_flops")
        for key, label in (("train", "training"), ("predict", "inference")):
            if f"achieved_{key}_flops" not in fl:
                continue
            got = fl[f"achieved_{key}_flops"]
            row(f"Model cost: achieved FLOP/s, {label} ({fl['policy']})",
                f"{_fmt(got / 1e9, 1)} GFLOP/s" + (
                    f" = {_fmt(100 * got / peak, 0)}% of peak {_fmt(peak / 1e9, 0)} GFLOP/s"
                    if peak else ""),
                limit=fl["peak_assumption"] + ".")
    if tk:
        share, target = tk["share_median"], TARGETS["tracking_share"]
        row("Tracking: MLflow + evaluation plots, share of a smoke run",
            f"{_fmt(100 * share, 1)}% (MLflow {_fmt(tk['mlflow_s_median'])} s, plots "
            f"{_fmt(tk['plots_s_median'])} s of {_fmt(tk['wall_s_median'])} s)",
            f"< {100 * target:g}%", share < target,
            f"{_fmt(100 * tk['share_of_process_median'], 1)}% of the whole process "
            "(imports included); " + tracking_note(tk))
        if tk.get("no_plots_runs"):
            bare = tk["no_plots_share_median"]
            row("Tracking: MLflow only (eval.plots=false), share of a smoke run",
                f"{_fmt(100 * bare, 1)}% of {_fmt(tk['no_plots_wall_s_median'])} s",
                f"< {100 * target:g}%", bare < target,
                "run parameters, tags, metrics, the config and report artifacts and the "
                "logged model: fixed seconds per run, against a smoke run's few seconds of "
                "training.")
    return rows


def xla_verdict(tr: Mapping) -> str:
    """Whether XLA's gain stands out of this run's noise (identical configurations' spread)."""
    if tr["variants"].get("in_memory_float32", {}).get("jit_compile"):
        return ("Keras' jit_compile=auto already compiled the other variants with XLA on this "
                "device (it does on GPUs), so this compares XLA with XLA.")
    ratios = tr.get("xla_vs_no_xla_paired") or [tr["xla_vs_no_xla"]]
    noise = tr.get("noise_auto_vs_float32_paired") or []
    spread = max((max(x, 1 / x) for x in noise), default=1.0)
    span = f"{min(ratios):.2f}-{max(ratios):.2f}x per repeat"
    if max(ratios) < 1.0:
        return f"slower in every repeat ({span}): keep it off on this machine."
    if min(ratios) > spread:
        return (f"faster in every repeat ({span}), beyond the noise of identical "
                f"configurations (up to {spread:.2f}x): worth offering as an option.")
    return (f"{span}; identical configurations differed by up to {spread:.2f}x in this run, "
            "so measure again on an idle machine before recommending it.")


def tracking_note(tk: Mapping) -> str:
    """The largest tracking costs of the median later smoke run, in words."""
    runs = tk["runs"][1:] or tk["runs"]
    mid = sorted(runs, key=lambda x: x["share"])[len(runs) // 2]
    times = mid.get("top") or {k: v for k, v in mid["by_name"].items() if k not in NESTED}
    cost = {k: v for k, v in times.items()
            if k.startswith(("mlflow", "segkit.tracking", "segkit.plots"))}
    top = sorted(cost.items(), key=lambda kv: -kv[1])[:3]
    return "largest: " + ", ".join(f"{k} {v:.1f} s" for k, v in top) + "."


def _loads(values) -> str:
    return " / ".join(f"{x:.1f}" for x in values) if values else "–"


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_markdown(res: Mapping, rows: Sequence[Mapping] | None = None) -> str:
    """BENCHMARKS.md: how it was run, on what, the table, and the raw repeats."""
    rows = assess(res) if rows is None else rows
    m, v = res.get("machine", {}), res.get("versions", {})
    lines = ["# Benchmarks", ""]
    if res.get("quick"):
        lines += ["**Quick mode** (`--quick`): few steps and images, for debugging only; "
                  "do not compare these numbers.", ""]
    lines += [f"`{res.get('command', 'python benchmarks/pipeline.py')}` measured everything "
              f"below in one run ({res.get('started', '?')}, {_fmt(res.get('wall_s'), 0)} s). "
              "Variants were interleaved (order rotated per repeat) and each figure is the "
              "median of the repeats; the machine is shared and noisy, so compare only within "
              "one run. The targets were written for an AMX machine.", ""]
    flags = ", ".join(m.get("flags", [])) or "none"
    lines += ["## Machine", "",
              f"- {m.get('cpu', '?')}, {m.get('nproc', '?')} cores usable "
              f"({m.get('lscpu', {}).get('Hypervisor vendor', 'no')} hypervisor), "
              f"{_fmt(m.get('mhz'), 0)} MHz, {m.get('memory_gb', '?')} GB memory; "
              f"flags that matter: {flags}.",
              f"- Native bf16: {'yes' if {'amx_bf16', 'avx512_bf16'} & set(m.get('flags', [])) else 'no (no AMX, no AVX512-BF16): bf16 is emulated and slow, `precision=auto` picks float32'}; "  # noqa: E501
              f"GPU: {m.get('gpu') or 'none'}.",
              f"- Load average (1, 5, 15 min) at start {_loads(m.get('load_average_start'))}, "
              f"at end {_loads(m.get('load_average_end'))}"
              + (f"; {res['notes']}" if res.get("notes") else "") + ".",
              "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", ""]
    lines += ["## Results", "",
              "| measure | value | target | status | what limits it |",
              "|:--|--:|:--|:--|:--|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[k]) for k in
                                        ("measure", "value", "target", "status", "limit"))
                     + " |")
    lines.append("")
    s = res.get("settings", {})
    if s:
        lines += ["## Settings", "",
                  "- " + ", ".join(f"{k}={val}" for k, val in s.items()) + ".", ""]
    tr = res.get("training")
    if tr:
        lines += ["## Training repeats (images/s, steady state)", "",
                  "| variant | policy | fed from | per repeat | median |", "|:--|:--|:--|:--|--:|"]
        for name, var in tr["variants"].items():
            runs = ", ".join(_fmt(x) for x in var["img_per_s"])
            lines.append(f"| {_cell(name)} | {var['policy']} | {_cell(var['feed'])} | {runs} | "
                         f"{_fmt(var['img_per_s_median'])} |")
        lines.append("")
        pairs = [(a, b) for a, b in RATIOS.values()
                 if a in tr["variants"] and b in tr["variants"]]
        lines += ["Paired ratios of throughput (same round, run next to each other), per "
                  "repeat and median; the table above uses these medians:", ""]
        for a, b in pairs:
            ratios = paired_ratios(tr["variants"][a]["img_per_s"], tr["variants"][b]["img_per_s"])
            lines.append(f"- {a} / {b}: {', '.join(f'{x:.2f}' for x in ratios)} "
                         f"(median {median(ratios):.2f})")
        lines.append("")
    if res.get("findings"):
        lines += ["## Findings", ""] + [f"- {f}" for f in res["findings"]] + [""]
    if acc := res.get("accelerator_md"):
        lines += ["## GPU", "", acc.strip(), ""]
    if det := res.get("determinism"):
        med = det["median_images_per_s"]
        lines += ["## Determinism (`trainer.deterministic=true`)", "",
                  f"`python benchmarks/determinism_cost.py` (separate processes, reference U-Net "
                  f"at {det['size']}x{det['size']}, batch {det['batch']}, float32): "
                  f"{med['default']:.2f} img/s by default, {med['deterministic']:.2f} img/s "
                  f"with op determinism, x{det['slowdown']:.2f} slower (medians, "
                  f"{len(det['images_per_s']['default'])} interleaved repeats).", ""]
    return "\n".join(lines)


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a[i] / b[i] for each repeat i: both ran in the same round, close in time."""
    return [x / y for x, y in zip(a, b, strict=True)]


RATIOS = {  # name: (numerator variant, denominator variant), throughputs
    "speedup_auto_vs_naive": ("segkit_auto", "naive_float32"),
    "speedup_float32_vs_naive": ("segkit_float32", "naive_float32"),
    "noise_auto_vs_float32": ("segkit_auto", "segkit_float32"),
    "in_memory_vs_naive": ("in_memory_float32", "naive_float32"),
    "xla_vs_no_xla": ("xla_float32", "in_memory_float32"),
}


def derive(res: dict) -> None:
    """The training ratios from the per-repeat throughputs: the median of the paired
    (same-round) ratios, and beside it the ratio of the medians."""
    tr = res.get("training")
    if not tr:
        return
    v = tr["variants"]
    for name, (a, b) in RATIOS.items():
        if a not in v or b not in v:
            continue
        if name == "noise_auto_vs_float32" and tr.get("auto_policy") != "float32":
            tr[name] = None  # not identical configurations: no noise estimate
            continue
        ratios = paired_ratios(v[a]["img_per_s"], v[b]["img_per_s"])
        tr[name] = median(ratios)
        tr[f"{name}_paired"] = ratios
        tr[f"{name}_of_medians"] = v[a]["img_per_s_median"] / v[b]["img_per_s_median"]


def findings(res: Mapping) -> list[str]:
    """What the numbers say beyond the table: distances to the hardware limit, fixes."""
    out = []
    fl, tr, inf = res.get("flops") or {}, res.get("training") or {}, res.get("inference") or {}
    peak = fl.get("peak_flops")
    if peak and fl.get("forward_flops"):
        train_ceiling = peak / fl["train_flops"]
        pred_ceiling = peak / fl["forward_flops"]
        out.append(f"Hardware ceiling for this model on this CPU at {fl['policy']}: "
                   f"{train_ceiling:.1f} training img/s and {pred_ceiling:.1f} inference img/s "
                   "at 100% of peak. The 60 img/s inference target needs about "
                   f"{60 * fl['forward_flops'] / 1e9:.0f} GFLOP/s, "
                   f"{60 * fl['forward_flops'] / peak:.1f}x this CPU's float32 peak: "
                   "out of reach without native low precision (AMX) or a GPU.")
    if tr:
        v = tr["variants"]
        native = bool({"amx_bf16", "avx512_bf16"} & set(res.get("machine", {}).get("flags", [])))
        fed = tr["in_memory_vs_naive"]
        out.append("segkit vs naive at the same precision (float32): "
                   f"x{tr['speedup_float32_vs_naive']:.2f}; fed from in-memory tensors, the "
                   f"same model runs at x{fed:.2f} naive (though naive computes fewer training "
                   "metrics), " + ("so the naive baseline loses that much to Keras' per-step "
                                   "slicing of NumPy arrays. " if fed >= 1.03 else
                                   "so how the batches are fed makes no measurable difference "
                                   "here. ") +
                   "The pipeline's gains are memory (uint8 in memory, 4x less than float32 "
                   "arrays) and augmentation at no measurable cost, not arithmetic speed"
                   + ("; the speed-up the target asks for comes from bf16, which this CPU "
                      "lacks." if not native else "."))
        if "xla_float32" in v:
            out.append(f"XLA: x{tr['xla_vs_no_xla']:.2f} against the same model without it, "
                       f"after a {v['xla_float32']['warmup_fit_s']:.0f} s first step.")
    if inf:
        out.append(f"End-to-end prediction spends {100 * inf['e2e_predict_share_median']:.0f}% "
                   "of its time in the forward pass; reading the next batch while the model "
                   "runs could hide at most the rest.")
    tk = res.get("tracking") or {}
    if tk and tr:
        fixed = tk["mlflow_s_median"] + tk["plots_s_median"]
        img_s = tr["variants"]["segkit_auto"]["img_per_s_median"]
        epoch = 792 / img_s
        out.append(f"Tracking is a fixed cost ({fixed:.1f} s of MLflow and plots per run here) "
                   f"on a smoke run whose training is a few seconds. On the default run (792 "
                   f"training images at {img_s:.1f} img/s: {epoch / 60:.1f} min per epoch, "
                   f"30 epochs) the same cost would be {100 * fixed / (30 * epoch + fixed):.2f}%"
                   f" of the wall time ({100 * fixed / (epoch + fixed):.1f}% of a one-epoch "
                   "run); per-epoch MLflow metric logging is in the fit time and is small.")
    out.extend(res.get("fixes", []))
    return out


def fixes(res: Mapping) -> list[str]:
    """What segkit could change for each missed target, from this run's profile."""
    out = []
    m, tr, inf, fl, tk, d = (res.get(k) or {} for k in
                             ("machine", "training", "inference", "flops", "tracking", "data"))
    native = bool({"amx_bf16", "avx512_bf16"} & set(m.get("flags", [])))
    if tr and tr["speedup_auto_vs_naive"] < TARGETS["speedup_auto_vs_naive"]:
        text = (f"Training x{tr['speedup_auto_vs_naive']:.2f} naive (target 2.5x): "
                f"at equal precision segkit's pipeline is x{tr['speedup_float32_vs_naive']:.2f} "
                "naive, because both spend the step in the same float32 convolutions. ")
        text += ("No code change reaches 2.5x on this CPU: the factor needs native bf16 "
                 "(AMX), where `auto` already picks mixed_bfloat16. "
                 if not native else "Check that `auto` resolved to mixed_bfloat16. ")
        if "xla_vs_no_xla" in tr and tr["xla_vs_no_xla"] >= 1.05:
            text += (f"XLA measured x{tr['xla_vs_no_xla']:.2f} here: `trainer.jit_compile=true`"
                     " turns it on (`experiment=cpu_best` does; Keras' `auto`, the default, "
                     "leaves it off on CPUs and on on GPUs).")
        out.append(text)
    if inf and inf["predict_img_per_s_median"] < TARGETS["predict_img_per_s"]:
        text = (f"Inference {inf['predict_img_per_s_median']:.1f} img/s (target 60): ")
        if fl.get("peak_flops"):
            text += (f"the float32 ceiling of this CPU is "
                     f"{fl['peak_flops'] / fl['forward_flops']:.1f} img/s for "
                     f"{fl['forward_flops'] / 1e9:.2f} GFLOP/image, so no code change reaches "
                     "60 here; ")
        text += ("what would: bf16 on AMX or a GPU (the policy is in the saved model), or "
                 "less arithmetic (128x128 input: 4x fewer FLOPs; `model.filters=8`: about "
                 "4x fewer).")
        out.append(text)
    pipe = (tr or {}).get("pipeline") or {}
    if pipe and pipe["overhead_share"] >= TARGETS["pipeline_overhead"]:
        out.append(f"Input pipeline: measured {100 * pipe['overhead_share']:.1f}% but its own "
                   f"cost is {100 * pipe['own_cost_share']:.2f}% of a step: the difference is "
                   "noise on this shared machine, not the pipeline; rerun on an idle machine.")
    if tk and tk["share_median"] >= TARGETS["tracking_share"]:
        runs = tk["runs"][1:] or tk["runs"]
        mid = sorted(runs, key=lambda x: x["share"])[len(runs) // 2]
        t = mid["by_name"]

        def sec(name):
            return t.get(name, 0.0)

        plots = sorted(((k.split(".")[-1], v) for k, v in t.items()
                        if k.startswith("segkit.plots.")), key=lambda kv: -kv[1])
        bare = tk.get("no_plots_share_median")
        out.append(
            f"Tracking {100 * tk['share_median']:.0f}% of a smoke run (target 10%): fixed costs "
            f"against a {mid['wall_s']:.0f} s run. Plots {mid['seconds'].get('plots', 0):.1f}"
            " s (" + ", ".join(f"{k} {v:.1f}" for k, v in plots[:3]) + "): `eval.plots=false` "
            "skips them (metrics, CSVs and report.md are still logged)"
            + (f", which leaves {100 * bare:.0f}% for MLflow" if bare is not None else "")
            + f"; of that, `segkit.tracking.log_model` takes {sec('segkit.tracking.log_model'):.1f}"
            " s (a clone, a predict for the signature, the Keras save, MLmodel files) and "
            f"`segkit.tracking.setup_experiment` {sec('segkit.tracking.setup_experiment'):.1f} s "
            "(opening the sqlite store). These are seconds per run, not per epoch: on a real run "
            "they are a fraction of a percent (see Findings). A smoke run cannot reach 10% "
            "while it logs a model and trains for a few seconds.")
    if d and d.get("peak_rss_mb") and d["peak_rss_mb"] > 1.6 * d["uint8_mb"] + 100:
        out.append(f"Data memory: peak {d['peak_rss_mb']:.0f} MB for a {d['uint8_mb']:.0f} MB "
                   "dataset on a cold preparation: `segkit.data.prepare` keeps the decoded set "
                   "and copies it into per-part arrays with fancy indexing (`images[rows]`). "
                   "Warm starts memory-map the cache entry and hold the set once; decoding "
                   "straight into the per-part arrays would do the same for the cold path.")
    return out


def to_jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("SEGKIT_DATA_DIR") or DEFAULT_DATA))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None,
                    help="measured training steps per repeat and variant (default 5; quick 2)")
    ap.add_argument("--warmup", type=int, default=None, help="steps skipped per repeat (1)")
    ap.add_argument("--train-images", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="tiny settings, for debugging")
    ap.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True variant")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks.json")
    ap.add_argument("--md", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--notes", default="", help="free text recorded with the machine")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render --md (and the table in --out) from --out, measure nothing")
    ap.add_argument("--_worker", choices=("data", "smoke"), help=argparse.SUPPRESS)
    ap.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_workdir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_no-plots", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker == "data":
        return data_worker(args.data_dir, args._workdir, args.repeats, args._out)
    if args._worker == "smoke":
        return smoke_worker(args.data_dir, args._workdir, args._out,
                            ["eval.plots=false"] if args._no_plots else [])

    if args.render_only:
        res = json.loads(args.out.read_text())
        return write_outputs(res, args.out, args.md)

    quick = args.quick
    repeats = 1 if quick and args.repeats == 3 else args.repeats
    steps = args.steps or (2 if quick else 5)
    warmup = args.warmup if args.warmup is not None else 1
    train_images = args.train_images or (32 if quick else 256)
    predict_images, e2e_images = (16, 8) if quick else (64, 50)
    data_dir = args.data_dir.resolve()
    if not (data_dir / "images").is_dir():
        raise SystemExit(f"error: no dataset at {data_dir} (give --data-dir)")

    t0 = time.perf_counter()
    started = dt.datetime.now().isoformat(timespec="seconds")

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    res: dict = {"started": started, "quick": quick, "machine": machine(),
                 "versions": _versions(), "notes": args.notes,
                 "command": shlex.join(["python", "benchmarks/pipeline.py",
                                        *(argv if argv is not None else sys.argv[1:])]),
                 "settings": {"repeats": repeats, "steps": steps, "warmup_steps": warmup,
                              "batch": BATCH, "image_size": SIZE, "train_images": train_images,
                              "predict_images": predict_images, "e2e_images": e2e_images,
                              "xla": not args.no_xla}}
    with tempfile.TemporaryDirectory(prefix="segkit-bench-") as tmp:
        tmp = Path(tmp)
        log("data: cold and warm prepare in a subprocess")
        res["data"], _ = run_worker("data", [f"--data-dir={data_dir}", f"--_workdir={tmp}",
                                             f"--repeats={repeats}"])
        log(f"  cold {res['data']['cold_s_median']:.2f}s, warm {res['data']['warm_s_median']:.2f}s,"
            f" peak RSS {res['data']['peak_rss_mb']:.0f} MB")

        import keras
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notes of the five models
        from segkit.data import prepare
        from segkit.data.pipeline import make_dataset
        from segkit.models import build_unet

        gpus = tf.config.list_physical_devices("GPU")
        res["machine"]["gpu"] = ", ".join(
            tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in gpus) or None
        cfg = compose(data_dir, Path(res["data"]["cache_entry"]).parent, "split=official")
        data = prepare(cfg.data, cfg.split)  # warm: the worker filled this cache
        spec = make_dataset(data.images["train"][:BATCH], data.masks["train"][:BATCH], BATCH,
                            training=True, augment="flips")
        # uint8 until the batch: the arrays are uint8 and the float cast follows batch().
        res["pipeline_uint8_until_batch"] = (
            data.images["train"].dtype == np.uint8 and
            spec.element_spec[0].dtype == tf.float32)
        images, masks = data.images["train"][:train_images], data.masks["train"][:train_images]

        log(f"training: {len(images)} images, {steps} steps (+{warmup} warm-up) x {repeats}")
        res["training"] = train_variants(cfg, images, masks, steps=steps, warmup=warmup,
                                         repeats=repeats, xla=not args.no_xla, log=log)
        models = res["training"].pop("_models")

        log("inference")
        paths = [data.samples[n].image for n in data.names("test")][:e2e_images]
        res["inference"] = inference(models["segkit_auto"], data.images["test"][:predict_images],
                                     paths, repeats, tmp, log, xla=not args.no_xla)
        del models, data

        log("FLOPs")
        policy = res["training"]["auto_policy"]
        ref = build_unet(image_size=SIZE, depth=cfg.model.depth, filters=cfg.model.filters)
        hand = count_flops(ref)
        prof = profiler_flops(ref, SIZE)
        m = res["machine"]
        peak, why = (peak_flops(m["nproc"], m["mhz"] / 1000, set(m["flags"]), policy)
                     if m["mhz"] and not gpus else (None, "GPU: peak not computed"))
        transpose = sum(f for name, f in hand["per_layer"].items()
                        if isinstance(ref.get_layer(name), keras.layers.Conv2DTranspose))
        fwd = hand["conv"]
        res["flops"] = {
            "policy": policy, "forward_flops": fwd, "forward_flops_with_bias_pool": hand["total"],
            "train_flops": 3 * fwd, "profiler_total": prof["total"],
            "profiler_by_op_type": prof["by_op_type"],
            "profiler_uncounted": prof["uncounted_compute_ops"], "transpose_flops": transpose,
            "peak_flops": peak, "peak_assumption": why,
            "achieved_train_flops":
                3 * fwd * res["training"]["variants"]["segkit_auto"]["img_per_s_median"],
            "achieved_predict_flops": fwd * res["inference"]["predict_img_per_s_median"],
            "per_layer": hand["per_layer"],
        }
        log(f"  forward {fwd / 1e9:.3f} GFLOP/img (profiler {prof['total'] / 1e9:.3f}); "
            f"peak {peak and peak / 1e9:.0f} GFLOP/s")
        del ref
        keras.backend.clear_session()

        log("tracking: smoke runs in fresh processes")
        res["tracking"] = tracking_overhead(data_dir, tmp, max(1, repeats - 1) if not quick
                                            else 1, 24, log)
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["wall_s"] = time.perf_counter() - t0
    write_outputs(res, args.out, args.md)
    log(f"written {args.out} and {args.md}")


def write_outputs(res: dict, out: Path, md: Path) -> None:
    """Ratios, findings and the table from the measurements; the JSON and Markdown written."""
    derive(res)
    res["fixes"] = fixes(res)
    res["findings"] = findings(res)
    rows = assess(res)
    res["table"] = rows
    det = out.parent / "determinism_cost.json"  # written by benchmarks/determinism_cost.py
    if det.is_file():
        res["determinism"] = json.loads(det.read_text())
    acc = out.parent / "accelerator.md"  # written by benchmarks/accelerator.py on a GPU machine
    if acc.is_file():
        res["accelerator_md"] = acc.read_text()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(res), indent=2) + "\n")
    md.write_text(render_markdown(res, rows) + "\n")
    for r in rows:
        print(f"{r['status']:>10}  {r['measure']}: {r['value']}")


if __name__ == "__main__":
    main()
