"""Does augmentation starve training? Input-pipeline throughput and U-Net step time per feed.

    python benchmarks/augment_speed.py [--n 200] [--steps 12] [--repeats 3] [--out FILE.json]

1. Batches/s of the training pipeline alone (``make_dataset``: shuffle, augment, batch, cast)
   over ``--n`` real Kvasir-SEG pairs at 256x256, batch 8, for augment=none, flips, light,
   strong.
2. Per-step time of the reference U-Net (``build_unet`` defaults, float32) fed from in-memory
   float tensors vs from the light and strong pipelines: the median interval between
   consecutive training batches (so start-up is excluded), with the pipeline's threads
   competing with the model for the same cores, as in a real run.

Both report wall time and this process's CPU time (all its threads). On a shared, noisy
machine the wall times swing with other people's load; the CPU times barely do, and on a
machine whose cores the model already saturates, extra CPU per step is extra step time.
Repeats are interleaved and medians reported; only differences well above the run-to-run
spread mean much.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from segkit.data.augmentations import AUGMENTATIONS  # noqa: E402
from segkit.data.dataset import decode_all, discover  # noqa: E402
from segkit.data.pipeline import make_dataset  # noqa: E402
from segkit.models import build_unet  # noqa: E402
from segkit.training_metrics import training_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class StepTimes(keras.callbacks.Callback):
    """Wall-clock and process CPU times at the end of each training batch."""

    def on_train_begin(self, logs=None):
        self.ends: list[tuple[float, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append((time.perf_counter(), time.process_time()))


def pipeline_rate(ds: tf.data.Dataset, epochs: int) -> tuple[float, float]:
    """Batches/s and CPU seconds per batch over ``epochs`` passes (fresh iterators, as in
    training)."""
    wall, cpu, count = time.perf_counter(), time.process_time(), 0
    for _ in range(epochs):
        for _ in ds:
            count += 1
    return count / (time.perf_counter() - wall), (time.process_time() - cpu) / count


def step_seconds(model: keras.Model, ds: tf.data.Dataset, steps: int) -> list[tuple]:
    """(wall, CPU) seconds between consecutive training steps fed from ``ds``."""
    timer = StepTimes()
    model.fit(ds.take(steps), epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    return [tuple(d) for d in np.diff(np.array(timer.ends), axis=0)]


def pipeline_rates(pipes: dict, epochs: int, repeats: int, batch: int) -> dict:
    """1. The pipeline alone: batches/s and CPU per batch of every augmentation, interleaved."""
    for ds in pipes.values():
        pipeline_rate(ds, 1)  # warm-up: tracing, thread pools, per-thread Composes
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in pipes}
    for _ in range(repeats):
        for name, ds in pipes.items():
            rates[name].append(pipeline_rate(ds, epochs))
    for name, r in rates.items():
        per_s, cpu = (statistics.median(v) for v in zip(*r, strict=True))
        runs = ", ".join(f"{v:.1f}" for v, _ in r)
        print(f"pipeline {name:>6}: {per_s:7.1f} batches/s ({per_s * batch:5.0f} img/s; "
              f"runs {runs}), {1000 * cpu:6.1f} ms CPU/batch")
    return rates


def feed_steps(model: keras.Model, feeds: dict, steps: int, repeats: int) -> dict:
    """2. (wall, CPU) seconds per training step of ``model`` from every feed, interleaved."""
    for ds in feeds.values():
        step_seconds(model, ds, 3)
    out: dict[str, list[tuple]] = {f: [] for f in feeds}
    for _ in range(repeats):  # interleaved, so drifts in machine load hit every feed
        for f, ds in feeds.items():
            out[f].extend(step_seconds(model, ds, steps))
    return out


def print_steps(steps: dict) -> None:
    """Median wall and CPU per step of each feed, relative to in-memory tensors."""
    med = {f: [statistics.median(v) for v in zip(*s, strict=True)] for f, s in steps.items()}
    for f, (wall, cpu) in med.items():
        rel = ""
        if "memory" in med:
            base_wall, base_cpu = med["memory"]
            rel = (f" ({100 * (wall / base_wall - 1):+5.1f}% wall, "
                   f"{100 * (cpu / base_cpu - 1):+5.1f}% CPU vs memory)")
        spread = ", ".join(f"{1000 * w:.0f}" for w, _ in steps[f])
        print(f"step from {f:>6}: {1000 * wall:6.0f} ms wall, {1000 * cpu:6.0f} ms CPU{rel}; "
              f"wall per step: {spread}")


def compiled_unet(size: int) -> keras.Model:
    model = build_unet(image_size=size)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(),
                  metrics=training_metrics())
    return model


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get(
        "SEGKIT_DATA_DIR", str(ROOT.parent / "shared" / "data" / "kvasir-seg")))
    ap.add_argument("--n", type=int, default=200, help="image/mask pairs")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4, help="pipeline passes per measurement")
    ap.add_argument("--steps", type=int, default=6, help="training steps per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--feeds", nargs="+", default=["memory", "light", "strong"])
    ap.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    images, masks = decode_all(discover(Path(args.data))[: args.n], size=args.size)
    print(f"decoded {len(images)} pairs at {args.size}x{args.size} "
          f"in {time.perf_counter() - start:.1f} s; {os.cpu_count()} cores")
    cfgs = {name: OmegaConf.load(ROOT / "conf" / "augment" / f"{name}.yaml")
            for name in AUGMENTATIONS}

    def pipeline(name: str) -> tf.data.Dataset:
        return make_dataset(images, masks, args.batch, training=True, seed=0, augment=cfgs[name])

    rates = pipeline_rates({name: pipeline(name) for name in AUGMENTATIONS}, args.epochs,
                           args.repeats, args.batch)
    model = compiled_unet(args.size)
    memory = (tf.data.Dataset.from_tensor_slices((images.astype(np.float32),
                                                  masks.astype(np.float32)))
              .batch(args.batch).repeat().prefetch(tf.data.AUTOTUNE))
    model.fit(memory.take(2), epochs=1, verbose=0, shuffle=False)  # warm-up: tracing
    feeds = {f: memory if f == "memory" else pipeline(f).repeat() for f in args.feeds}
    steps = feed_steps(model, feeds, args.steps, args.repeats)
    print_steps(steps)
    if args.out:
        result = {"n": len(images), "size": args.size, "batch": args.batch,
                  "cores": os.cpu_count(), "pipeline_batches_per_s": rates,
                  "step_seconds": steps}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
