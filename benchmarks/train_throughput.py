"""Training throughput of the reference U-Net (256x256, batch 8), steady state, per variant.

    python benchmarks/train_throughput.py [--data-dir ../shared/data/kvasir-seg] [--repeats 3]
        [--steps 5] [--warmup 1] [--train-images 256] [--no-xla] [--cache-dir DIR] [--quick]
        [--out results/benchmarks.json]

Variants, all from the same initial weights, interleaved (the order rotates per repeat):

- ``segkit_auto`` / ``segkit_float32``: segkit's pipeline (``make_dataset`` with flips) and
  the model compiled by ``segkit.experiment.build_compiled`` (loss, optimizer and schedule,
  training metrics), with ``trainer.precision=auto`` and with float32;
- ``naive_float32``: the naive baseline, float32 NumPy arrays / 255 held in memory and
  ``model.fit(x, y, batch_size=8)`` with plain Adam + BCE + accuracy;
- ``in_memory_float32``: segkit's model fed the same steps from in-memory float32 tensors
  (the input pipeline's overhead is the difference to ``segkit_float32``);
- ``xla_float32`` (unless ``--no-xla``): the same with ``trainer.jit_compile=true``.

Each repeat fits ``--warmup`` + ``--steps`` steps per variant and times the steps after the
warm-up; the first fit of each variant (tracing, XLA compilation) is timed apart.

Writes the ``training`` part of the results JSON (merged: other parts are kept): per variant
its seconds per step and images/s per repeat and their medians, plus the pipeline's overhead
(paired per repeat) and its throughput alone; and ``pipeline_uint8_until_batch`` (whether the
arrays stay uint8 until the batch is formed). The ratios between variants are derived when
the report is rendered (``benchmarks/pipeline.py --render-only``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: benchmarks and segkit beside it
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import BATCH, MB, cli, results  # noqa: E402
from benchmarks.common.config import check_dataset, prepared  # noqa: E402
from benchmarks.common.timing import logger, median, rotate, steady_step_s, step_timer  # noqa: E402

FEED = {"segkit_auto": "pipeline", "segkit_float32": "pipeline", "naive_float32": "naive",
        "in_memory_float32": "memory", "xla_float32": "memory"}


def variant_specs(auto: str, xla: bool) -> dict[str, dict]:
    """Each variant's policy, what feeds it, and its label in the report."""
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
    return variants


class Feeds:
    """The three ways the variants are fed the same training images."""

    def __init__(self, images: np.ndarray, masks: np.ndarray):
        import tensorflow as tf

        self.images, self.masks = images, masks
        x_raw = images.astype(np.float32)                 # 0-255: segkit's model input
        self.y = masks.astype(np.float32)
        self.x_naive = images.astype(np.float32) / 255.0  # the reference design's arrays
        nb = len(images) // BATCH
        self.in_memory = tf.data.Dataset.from_tensor_slices(
            (x_raw[: nb * BATCH].reshape(nb, BATCH, *x_raw.shape[1:]),
             self.y[: nb * BATCH].reshape(nb, BATCH, *self.y.shape[1:]))).repeat()

    def pipeline(self):
        from segkit.data.pipeline import make_dataset

        return make_dataset(self.images, self.masks, BATCH, training=True, seed=0,
                            augment="flips").repeat()

    def fit(self, kind: str, model, steps: int, callbacks=()) -> None:
        """``steps`` training steps of ``model`` fed the ``kind`` way."""
        if kind == "naive":
            model.fit(self.x_naive, self.y, batch_size=BATCH, epochs=1, steps_per_epoch=steps,
                      callbacks=list(callbacks), verbose=0)
            return
        data = self.pipeline() if kind == "pipeline" else self.in_memory
        model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=list(callbacks), verbose=0,
                  shuffle=False)  # make_dataset shuffles

    def first_fit(self, kind: str, model) -> None:
        """The first step (tracing, compilation, first allocation), not measured."""
        if kind == "naive":
            model.fit(self.x_naive[:BATCH], self.y[:BATCH], batch_size=BATCH, verbose=0)
        else:
            self.fit(kind, model, 1)


def build(cfg, policy: str, steps_per_epoch: int, *, xla: bool = False, naive: bool = False):
    """The model compiled as segkit compiles it (``trainer.jit_compile=true`` when ``xla``),
    or recompiled as the naive reference design (plain Adam + BCE + accuracy)."""
    import keras
    from omegaconf import OmegaConf

    from segkit.experiment import build_compiled

    if xla:
        cfg = OmegaConf.merge(cfg, {"trainer": {"jit_compile": True}})
    model = build_compiled(cfg, policy, steps_per_epoch)
    if naive:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                      metrics=["accuracy"])
    return model


def build_models(cfg, variants: dict, steps_per_epoch: int) -> dict:
    """One model per variant, all starting from the same weights."""
    import keras

    models, weights = {}, None
    for name, v in variants.items():
        keras.utils.set_random_seed(0)
        model = build(cfg, v["policy"], steps_per_epoch, xla=name.startswith("xla"),
                      naive=name.startswith("naive"))
        v["jit_compile"] = bool(model.jit_compile)
        if weights is None:
            weights = model.get_weights()
        else:
            model.set_weights(weights)  # same starting point for every variant
        models[name] = model
    return models


def warm_up(models: dict, feeds: Feeds, log: Callable[[str], None]) -> dict[str, float]:
    """Seconds of each variant's first fit (tracing / compilation), not measured after."""
    first_s = {}
    for name, model in models.items():
        t = time.perf_counter()
        feeds.first_fit(FEED[name], model)
        first_s[name] = time.perf_counter() - t
        log(f"  warm-up {name}: {first_s[name]:.1f}s")
    return first_s


def repeats_step_s(models: dict, feeds: Feeds, *, steps: int, warmup: int, repeats: int,
                   log: Callable[[str], None]) -> dict[str, list[float]]:
    """Steady-state seconds per step of every variant and repeat, the order rotated."""
    step_s: dict[str, list[float]] = {name: [] for name in models}
    for r in range(repeats):
        for name in rotate(list(models), r):
            timer = step_timer()
            feeds.fit(FEED[name], models[name], warmup + steps, [timer])
            step_s[name].append(steady_step_s(timer.ends, warmup))
            log(f"  repeat {r + 1}/{repeats} {name}: {BATCH / step_s[name][-1]:.2f} img/s")
    return step_s


def summarise(variants: dict, step_s: dict, first_s: dict) -> None:
    """Per-repeat and median throughput of each variant, in place."""
    for name, v in variants.items():
        v["step_s"] = step_s[name]
        v["img_per_s"] = [BATCH / s for s in step_s[name]]
        v["step_s_median"] = median(step_s[name])
        v["img_per_s_median"] = BATCH / v["step_s_median"]
        v["warmup_fit_s"] = first_s[name]


def pipeline_alone(feeds: Feeds, batches: int = 16) -> float:
    """Images/s the input pipeline (shuffle, flips, batch, cast) produces with no model."""
    it = iter(feeds.pipeline())
    next(it)  # shuffle buffer fill
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - t)


def pipeline_overhead(step_s: dict, feeds: Feeds) -> dict:
    """segkit float32 (pipeline + flips) vs in-memory tensors, same model and precision:
    paired per repeat (adjacent in time), then the median; and the pipeline's own cost,
    seconds per batch with the cores to itself as a share of a step."""
    pipe, mem = step_s["segkit_float32"], step_s["in_memory_float32"]
    paired = [(p - m) / p for p, m in zip(pipe, mem, strict=True)]
    alone = pipeline_alone(feeds)
    return {"pipeline_step_s_median": median(pipe), "in_memory_step_s_median": median(mem),
            "overhead_share_of_medians": (median(pipe) - median(mem)) / median(pipe),
            "overhead_share_paired": paired, "overhead_share": median(paired),
            "pipeline_alone_img_per_s": alone,
            "own_cost_share": (BATCH / alone) / median(mem)}


def train_variants(cfg, images: np.ndarray, masks: np.ndarray, *, steps: int, warmup: int,
                   repeats: int, xla: bool, log: Callable[[str], None]) -> dict:
    """Steady-state training throughput of every variant, interleaved, ``repeats`` times."""
    from segkit.precision import resolve_precision

    if len(images) // BATCH < warmup + steps:  # the naive variant's arrays end there
        raise SystemExit(f"error: {len(images)} training images make {len(images) // BATCH} "
                         f"batches of {BATCH}: --train-images must give at least "
                         f"--warmup + --steps = {warmup + steps}")
    auto = resolve_precision("auto")
    feeds = Feeds(images, masks)
    variants = variant_specs(auto, xla)
    models = build_models(cfg, variants, max(1, len(images) // BATCH))
    first_s = warm_up(models, feeds, log)
    step_s = repeats_step_s(models, feeds, steps=steps, warmup=warmup, repeats=repeats, log=log)
    summarise(variants, step_s, first_s)
    return {"auto_policy": auto, "steps": steps, "warmup_steps": warmup, "repeats": repeats,
            "train_images": len(images), "batch": BATCH, "variants": variants,
            "naive_arrays_mb_per_1000": 1000 * (feeds.x_naive[0].nbytes + feeds.y[0].nbytes) / MB,
            "pipeline": pipeline_overhead(step_s, feeds)}


def uint8_until_batch(data) -> bool:
    """Whether the training arrays are uint8 and make_dataset casts to float32 after batch()."""
    import tensorflow as tf

    from segkit.data.pipeline import make_dataset

    spec = make_dataset(data.images["train"][:BATCH], data.masks["train"][:BATCH], BATCH,
                        training=True, augment="flips")
    return bool(data.images["train"].dtype == np.uint8
                and spec.element_spec[0].dtype == tf.float32)


def measure(args, cache_dir: Path, log: Callable[[str], None]) -> dict:
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notes of the five models
    cfg, data = prepared(check_dataset(args.data_dir), cache_dir)
    n = cli.setting(args, "train_images")
    images, masks = data.images["train"][:n], data.masks["train"][:n]
    steps, warmup = cli.setting(args, "steps"), cli.setting(args, "warmup")
    repeats = cli.setting(args, "repeats")
    log(f"training: {len(images)} images, {steps} steps (+{warmup} warm-up) x {repeats}")
    return {"pipeline_uint8_until_batch": uint8_until_batch(data),
            "training": train_variants(cfg, images, masks, steps=steps, warmup=warmup,
                                       repeats=repeats, xla=not args.no_xla, log=log)}


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    cli.add_common(ap)
    cli.add_cache_dir(ap)
    ap.add_argument("--steps", type=int, default=None,
                    help="measured training steps per repeat and variant (default 5; quick 2)")
    ap.add_argument("--warmup", type=int, default=None, help="steps skipped per repeat (1)")
    ap.add_argument("--train-images", type=int, default=None,
                    help="training images the variants cycle through (default 256; quick 32)")
    ap.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True variant")
    args = ap.parse_args(argv)
    stamp = results.Provenance("train_throughput.py", sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="segkit-bench-train-") as tmp:
        parts = measure(args, args.cache_dir or Path(tmp), logger())
    parts["training"]["measured"] = stamp.stamp()
    results.update(args.out, parts)
    for name, v in parts["training"]["variants"].items():
        print(f"{name:>18}: {v['img_per_s_median']:.2f} img/s")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
